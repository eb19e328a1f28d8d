"""`python -m bbx_net serve` is `bbx-net serve`."""

import sys

from .cli import main

sys.exit(main())
