"""Shared test helpers: compiling C programs against the shipped header."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

import bbx_net

C_DIR = Path(__file__).parent / "c"
#: Multiplies every timeout in the suite (slow CI machines: BBX_TEST_TIMEOUT_SCALE=3).
TIMEOUT_SCALE = float(os.environ.get("BBX_TEST_TIMEOUT_SCALE", "1"))


def compile_c(source: str, out: Path, *extra: str) -> Path:
    """Builds tests/c/<source> against bbx_net.get_include() into `out`."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    assert cc, "a C compiler (cc or gcc) is needed for the native proofs"
    cmd = [
        cc,
        "-std=c11",
        "-O2",
        "-g",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-I",
        bbx_net.get_include(),
        str(C_DIR / source),
        "-o",
        str(out),
        *extra,
        "-lpthread",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stderr}"
    return out


@pytest.fixture
def build_c(tmp_path: Path) -> Callable[..., Path]:
    """Compiles a C program from tests/c into the test's temporary directory."""

    def build(source: str, *extra: str, name: str | None = None) -> Path:
        return compile_c(source, tmp_path / (name or Path(source).stem), *extra)

    return build


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """A seeded random source; the seed is printed so a failure can be replayed."""
    seed = int(os.environ.get("BBX_TEST_SEED", random.randrange(1 << 32)))
    print(f"{request.node.name}: BBX_TEST_SEED={seed}")
    return random.Random(seed)
