"""The one base exception of bbx_net and the errors every layer shares."""

from __future__ import annotations

__all__ = ["BbxNetError", "ProducerThreadError"]


class BbxNetError(Exception):
    """Base class of every error bbx_net raises on purpose."""


class ProducerThreadError(BbxNetError, RuntimeError):
    """A NetBufferProducer was used from a second thread (the ring is single-producer)."""
