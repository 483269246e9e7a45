"""The encoder identity: which checkpoint produced a set of embeddings, recorded with every index.

The index stores it (``manifest.json``'s ``"encoder"``, Ray parts' ``encoder.json``) and searchers
compare it with the checkpoint that encodes the queries. This module imports nothing beyond the
standard library, so the index layer reads the record without loading the encoders; computing one
from a model is [`flmr.encoding.documents.encoder_identity`].
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

# bfloat16 moves a weight-signature entry by at most ~0.1% (measured on the tiny fixtures and MiniLM)
SIGNATURE_TOLERANCE = 5e-3
_KNOWN_KEYS = ("checkpoint", "dim", "digest", "weight_signature")


@dataclass(frozen=True, eq=False)  # equal to any mapping with the same JSON record (Mapping.__eq__)
class EncoderIdentity(Mapping[str, Any]):
    """What identifies the encoder (checkpoint) that produced embeddings.

    Attributes:
        checkpoint: the checkpoint's folder (absolute) or hub name, so that search and serve find it
            again; ``None`` when not recorded.
        dim: the width of the late-interaction vectors.
        digest: a hash of the architecture (the config, without where it was loaded from or in which
            dtype).
        weight_signature: the mean absolute value of every weight tensor, in state-dict order: a change
            of precision barely moves it, any training does.
        extra: other keys given at build time (kept as they were, e.g. ``{"sha": "abc"}``).

    It also reads as the read-only mapping it is stored as (``identity["checkpoint"]``,
    ``identity.get("digest")``, ``dict(identity)``), as indexes' ``encoder`` record always did.

    Example:
        >>> built = EncoderIdentity.from_json({"checkpoint": "tiny", "dim": 16, "digest": "ab12"})
        >>> built.checkpoint, built.to_json() == {"checkpoint": "tiny", "dim": 16, "digest": "ab12"}
        ('tiny', True)
        >>> built.same_as(built.with_checkpoint("/elsewhere/tiny"))
        True
    """

    checkpoint: str | None = None
    dim: int | None = None
    digest: str | None = None
    weight_signature: tuple[float, ...] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, record: Mapping[str, Any] | None) -> EncoderIdentity:
        """The identity stored as ``record`` (a manifest's ``"encoder"`` object; ``None`` or ``{}`` for
        indexes built before it was recorded).

        Raises:
            TypeError: ``record`` is not a mapping.
        """
        if isinstance(record, EncoderIdentity):
            return record
        if record is None:
            return cls()
        if not isinstance(record, Mapping):
            raise TypeError(f"an encoder record must be a JSON object, got {type(record).__name__}")
        signature = record.get("weight_signature")
        return cls(
            checkpoint=None if record.get("checkpoint") is None else str(record["checkpoint"]),
            dim=None if record.get("dim") is None else int(record["dim"]),
            digest=None if record.get("digest") is None else str(record["digest"]),
            weight_signature=None if signature is None else tuple(float(value) for value in signature),
            extra={key: value for key, value in record.items() if key not in _KNOWN_KEYS},
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored on disk: the recorded keys only, as indexes have always stored them."""
        record: dict[str, Any] = {
            "checkpoint": self.checkpoint,
            "dim": self.dim,
            "digest": self.digest,
            "weight_signature": None if self.weight_signature is None else list(self.weight_signature),
        }
        return {**{key: value for key, value in record.items() if value is not None}, **self.extra}

    def same_as(
        self, other: EncoderIdentity | Mapping[str, Any], tolerance: float = SIGNATURE_TOLERANCE
    ) -> bool:
        """Whether ``other`` describes the same checkpoint (in any dtype, from any folder): the same
        digest and weight signatures that agree within ``tolerance`` (relative)."""
        other = EncoderIdentity.from_json(other)
        if self.digest != other.digest:
            return False
        stored, now = self.weight_signature or (), other.weight_signature or ()
        return len(stored) == len(now) and all(
            abs(a - b) <= tolerance * max(abs(a), 1e-6) for a, b in zip(stored, now, strict=True)
        )

    def compatible_with(self, current: EncoderIdentity | Mapping[str, Any]) -> bool:
        """Whether embeddings recorded with this identity can be searched with ``current``'s queries: the
        same checkpoint, or an unrecorded one (an index built before identities were recorded)."""
        return not self.digest or self.same_as(current)

    def with_checkpoint(self, checkpoint: str) -> EncoderIdentity:
        """The same identity naming ``checkpoint`` (e.g. the absolute folder it was loaded from)."""
        return replace(self, checkpoint=checkpoint)

    def describe(self) -> str:
        """``"<checkpoint>, digest <digest>"`` for messages."""
        return f"{self.checkpoint or 'unnamed'}, digest {self.digest}"

    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_json())

    def __len__(self) -> int:
        return len(self.to_json())


def same_encoder(
    built_with: Mapping[str, Any], current: Mapping[str, Any], tolerance: float = SIGNATURE_TOLERANCE
) -> bool:
    """Whether two encoder records (identities or their JSON objects) describe the same checkpoint;
    see [`EncoderIdentity.same_as`]."""
    return EncoderIdentity.from_json(built_with).same_as(current, tolerance)
