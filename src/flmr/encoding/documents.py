"""Documents -> token embeddings: length-sorted batches, dynamic padding, images loaded off the
main thread, float16 storage, and resumable chunks on disk."""

import hashlib
import json
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .collection import Document
from .errors import CollectionError
from .images import load_pixel_values

CHUNK_MANIFEST = "encoding.json"
VOLATILE_CONFIG_KEYS = {"_name_or_path", "transformers_version", "dtype", "torch_dtype", "architectures"}


@dataclass
class EmbeddingChunk:
    """Embeddings of consecutive documents: ``embeddings`` (n_vectors, dim) and ``doclens`` (n_docs,)."""

    first_document: int
    embeddings: torch.Tensor
    doclens: torch.Tensor

    def split(self) -> list[torch.Tensor]:
        """One (n_i, dim) tensor per document."""
        return list(torch.split(self.embeddings, self.doclens.tolist()))


def model_fingerprint(model: Any) -> dict[str, Any]:
    """What identifies the encoder an index was built with.

    ``digest`` hashes the architecture (the config, without where it was loaded from or in which dtype);
    ``weight_signature`` holds the mean absolute value of every weight tensor, which a change of precision
    barely moves and any training changes. [`same_encoder`] compares two fingerprints.
    """
    config = _without_volatile_keys(model.config.to_dict())
    return {
        "checkpoint": str(getattr(model.config, "_name_or_path", "") or ""),
        "dim": int(model.config.dim),
        "digest": hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:32],
        "weight_signature": [
            float(tensor.detach().float().abs().mean()) for _, tensor in sorted(model.state_dict().items())
        ],
    }


def same_encoder(built_with: dict[str, Any], current: dict[str, Any], tolerance: float = 5e-3) -> bool:
    """Whether two fingerprints describe the same checkpoint (in any dtype, from any folder).

    bfloat16 moves a signature entry by at most ~0.1% (measured on the tiny fixtures and MiniLM), so
    entries must agree within ``tolerance`` (relative).
    """
    if built_with.get("digest") != current.get("digest"):
        return False
    stored, now = built_with.get("weight_signature") or [], current.get("weight_signature") or []
    return len(stored) == len(now) and all(
        abs(a - b) <= tolerance * max(abs(a), 1e-6) for a, b in zip(stored, now, strict=True)
    )


def _without_volatile_keys(values: dict[str, Any]) -> dict[str, Any]:
    return {
        k: _without_volatile_keys(v) if isinstance(v, dict) else v
        for k, v in values.items()
        if k not in VOLATILE_CONFIG_KEYS
    }


class DocumentEncoder:
    r"""Encode documents with an FLMR model into per-document vectors (only the unmasked ones).

    Args:
        model: an [`FLMRModelForRetrieval`] with its context tokenizer.
        batch_size: documents per forward pass.
        max_length: token limit of a document (the tokenizer's ``doc_maxlen`` also applies).
        image_processor: turns PIL images into ``pixel_values`` (needed for documents with image paths).
        storage_dtype: dtype of the returned vectors (float16 halves the index input).
        image_workers: threads that load and preprocess images while the model runs.
        show_progress: show a progress bar.

    Example:
        >>> encoder = DocumentEncoder(model, batch_size=64)
        >>> vectors = encoder.encode(read_collection(["Paris is in France.", "Rome is in Italy."]))
        >>> [v.shape for v in vectors]  # one (n_kept_tokens, dim) tensor per document
    """

    def __init__(
        self,
        model: Any,
        batch_size: int = 32,
        max_length: int = 512,
        image_processor: Any = None,
        storage_dtype: torch.dtype = torch.float16,
        image_workers: int = 2,
        show_progress: bool = True,
    ):
        self.model = model
        self.batch_size = batch_size
        self.max_length = max_length
        self.image_processor = image_processor
        self.storage_dtype = storage_dtype
        self.image_workers = image_workers
        self.show_progress = show_progress

    def encode(self, documents: list[Document]) -> list[torch.Tensor]:
        """Vectors of every document, in the collection's order."""
        vectors: list[torch.Tensor | None] = [None] * len(documents)
        with tqdm(
            total=len(documents), desc="encoding documents", unit="doc", disable=not self.show_progress
        ) as bar:
            for positions, batch_vectors in self._encoded_batches(documents):
                for position, vector in zip(positions, batch_vectors, strict=True):
                    vectors[position] = vector
                bar.update(len(positions))
        return vectors  # type: ignore[return-value]

    def encode_to_chunks(
        self, documents: list[Document], directory: str | os.PathLike, chunk_size: int = 10_000
    ) -> Iterator[EmbeddingChunk]:
        """Encode into ``chunk_00000.safetensors``... under ``directory``, yielding each chunk.

        Finished chunks are kept on disk: a run that dies resumes from the last finished chunk when
        called again with the same model, documents and settings.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._check_resumable(directory, documents, chunk_size)
        starts = range(0, len(documents), chunk_size)
        for number, start in enumerate(
            tqdm(starts, desc="encoding chunks", unit="chunk", disable=not self.show_progress)
        ):
            path = directory / f"chunk_{number:05d}.safetensors"
            if not path.exists():
                vectors = self.encode(documents[start : start + chunk_size])
                _write_atomically(path, vectors)
            tensors = load_file(path)
            yield EmbeddingChunk(start, tensors["embeddings"], tensors["doclens"])

    def _check_resumable(self, directory: Path, documents: list[Document], chunk_size: int) -> None:
        settings = {
            "encoder": model_fingerprint(self.model),
            "num_documents": len(documents),
            "ids_digest": hashlib.sha256("\n".join(d.id for d in documents).encode()).hexdigest()[:32],
            "chunk_size": chunk_size,
            "max_length": self.max_length,
            "storage_dtype": str(self.storage_dtype),
        }
        manifest = directory / CHUNK_MANIFEST
        if manifest.exists():
            previous = json.loads(manifest.read_text())
            if previous != settings:
                raise CollectionError(
                    f"{directory} holds chunks of another encoding run ({manifest}); remove it or choose another folder"
                )
            return
        manifest.write_text(json.dumps(settings, indent=1))

    def _encoded_batches(self, documents: list[Document]) -> Iterator[tuple[list[int], list[torch.Tensor]]]:
        batches = self._plan_batches(documents)
        with ThreadPoolExecutor(max_workers=self.image_workers) as pool:
            pending = self._prefetch(pool, documents, batches, 0)
            for index, positions in enumerate(batches):
                images = pending.result() if pending is not None else None
                pending = self._prefetch(pool, documents, batches, index + 1)
                yield positions, self._encode_batch([documents[p] for p in positions], images)

    def _plan_batches(self, documents: list[Document]) -> list[list[int]]:
        """Batches of one modality each, longest documents first so that padding stays small."""
        groups: dict[str, list[int]] = {}
        for position, document in enumerate(documents):
            groups.setdefault(document.modality, []).append(position)
        batches = []
        for positions in groups.values():
            ordered = sorted(positions, key=lambda p: len(documents[p].text), reverse=True)
            batches += [ordered[i : i + self.batch_size] for i in range(0, len(ordered), self.batch_size)]
        return batches

    def _prefetch(
        self, pool: ThreadPoolExecutor, documents: list[Document], batches: list[list[int]], index: int
    ) -> Future | None:
        if index >= len(batches) or documents[batches[index][0]].modality != "image_path":
            return None
        if self.image_processor is None:
            raise CollectionError("the collection has image paths: pass an image_processor to encode them")
        return pool.submit(load_pixel_values, [documents[p] for p in batches[index]], self.image_processor)

    @torch.inference_mode()
    def _encode_batch(self, batch: list[Document], pixel_values: torch.Tensor | None) -> list[torch.Tensor]:
        model = self.model
        encoding = model.context_tokenizer(
            [d.text for d in batch], padding="longest", truncation="longest_first", max_length=self.max_length
        )
        image_features = None
        if batch[0].modality == "image_features":
            image_features = torch.from_numpy(np.stack([d.image_features for d in batch]))
        has_image = pixel_values is not None or image_features is not None
        output = model.doc(
            encoding["input_ids"],
            encoding["attention_mask"],
            pixel_values=pixel_values,
            image_features=image_features,
            concat_output_from_vision_encoder=has_image,
            keep_dims=True,
        )
        vectors, mask = output.late_interaction_output, output.context_mask.squeeze(-1)
        return [v[m].to(device="cpu", dtype=self.storage_dtype) for v, m in zip(vectors, mask, strict=True)]


def _write_atomically(path: Path, vectors: list[torch.Tensor]) -> None:
    doclens = torch.tensor([v.shape[0] for v in vectors], dtype=torch.int32)
    temporary = path.with_suffix(".tmp")
    save_file({"embeddings": torch.cat(vectors).contiguous(), "doclens": doclens}, temporary)
    os.replace(temporary, path)
