"""Errors of the Ray scale-out stage, under [`FLMRError`]."""

from flmr.errors import FLMRError


class DistributedError(FLMRError, ValueError):
    """A scale-out setting or input that cannot be used (shard counts, replicas, embedding parts, the
    checkpoint a sharded index should be served with); the message names it."""


__all__ = ["DistributedError"]
