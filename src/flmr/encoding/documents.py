"""Documents -> token embeddings: length-sorted batches, dynamic padding, images loaded off the
main thread, float16 storage, and resumable chunks on disk."""

import hashlib
import json
import math
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

from flmr._deprecation import renamed_keywords, warn_renamed
from flmr.model.modeling_flmr import encoding_work
from flmr.model.tokenization_flmr import DEFAULT_DOC_MAXLEN
from flmr.runtime import cpu_threads

from .collection import Document
from .errors import CollectionError
from .identity import EncoderIdentity
from .images import load_pixel_values
from .layout import vector_layout

CHUNK_MANIFEST = "encoding.json"
# measured on 2 CPU cores with MiniLM and Debian texts: 2048 beat 4096, 16384 and 32 x longest
CPU_MAX_BATCH_TOKENS = 2048
_COUNTING_SLICE = 1024  # documents tokenised at a time to count tokens (bounds the padded tensor)
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


def encoder_identity(model: Any) -> EncoderIdentity:
    """The identity of ``model``'s checkpoint, recorded with the indexes it builds: its name, vector width,
    architecture digest and weight signature (see [`EncoderIdentity`])."""
    config = _without_volatile_keys(model.config.to_dict())
    return EncoderIdentity(
        checkpoint=str(getattr(model.config, "_name_or_path", "") or ""),
        dim=int(model.config.dim),
        digest=hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:32],
        weight_signature=tuple(
            float(tensor.detach().float().abs().mean())
            for _, value in sorted(model.state_dict().items())
            for tensor in _weight_tensors(value)
        ),
    )


def model_fingerprint(model: Any) -> EncoderIdentity:
    """[`encoder_identity`] under its earlier name."""
    return encoder_identity(model)


def _weight_tensors(value: Any) -> list[torch.Tensor]:
    """The float tensors of a state-dict entry (an int8 layer stores a tuple of quantised ones)."""
    if isinstance(value, (tuple, list)):
        return [tensor for item in value for tensor in _weight_tensors(item)]
    if not isinstance(value, torch.Tensor):
        return []
    return [value.dequantize() if value.is_quantized else value]


def _without_volatile_keys(values: dict[str, Any]) -> dict[str, Any]:
    return {
        k: _without_volatile_keys(v) if isinstance(v, dict) else v
        for k, v in values.items()
        if k not in VOLATILE_CONFIG_KEYS
    }


@renamed_keywords(max_length="doc_maxlen")
class DocumentEncoder:
    r"""Encode documents with an FLMR model into per-document vectors (only the unmasked ones).

    Args:
        model: an [`FLMRModelForRetrieval`] with its context tokenizer.
        batch_size: most documents per forward pass.
        doc_maxlen: token limit of a document (the tokenizer's own ``doc_maxlen`` also applies);
            ``max_length``, its earlier name, still works, with a ``DeprecationWarning``.
        max_batch_tokens: most padded text tokens per forward pass, so that batches of long documents
            are smaller: on a CPU, a 32 x 512 batch runs far slower per token than 4 x 512 (its
            attention scores overflow the caches). Default: 2048 when the model is on a CPU, no limit
            beyond ``batch_size`` on an accelerator, where big batches pay.
        image_processor: turns PIL images into ``pixel_values`` (needed for documents with image paths).
        storage_dtype: dtype of the returned vectors (float16 halves the index input).
        image_workers: threads that load and preprocess images while the model runs.
        show_progress: show a progress bar.

    Example:
        >>> from flmr.encoding import read_collection
        >>> encoder = DocumentEncoder(model, batch_size=64, show_progress=False)
        >>> vectors = encoder.encode(read_collection(["Paris is in France.", "Rome, the capital of Italy."]))
        >>> [v.shape for v in vectors]  # one (n_kept_tokens, dim) tensor per document: punctuation is masked
        [torch.Size([7, 16]), torch.Size([8, 16])]
    """

    def __init__(
        self,
        model: Any,
        batch_size: int = 32,
        doc_maxlen: int = DEFAULT_DOC_MAXLEN,
        image_processor: Any = None,
        storage_dtype: torch.dtype = torch.float16,
        image_workers: int = 2,
        show_progress: bool = True,
        max_batch_tokens: int | None = None,
    ):
        self.model = model
        self.batch_size = batch_size
        on_cpu = next(model.parameters()).device.type == "cpu"
        self.max_batch_tokens = max_batch_tokens or (CPU_MAX_BATCH_TOKENS if on_cpu else None)
        self.doc_maxlen = doc_maxlen
        self.image_processor = image_processor
        self.storage_dtype = storage_dtype
        self.image_workers = image_workers
        self.show_progress = show_progress

    @property
    def max_length(self) -> int:
        """``doc_maxlen`` under its earlier name (deprecated)."""
        warn_renamed("DocumentEncoder", "max_length", "doc_maxlen")
        return self.doc_maxlen

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

        Finished chunks are kept on disk with a digest of their documents' contents (ids, texts,
        images, image features): a run that dies resumes from the finished chunks when called again
        with the same model and settings, and any chunk whose documents changed is encoded again.
        Raises [`CollectionError`] if ``directory`` holds chunks of other settings (model, lengths).
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        record = self._resume_record(directory, chunk_size)
        starts = range(0, len(documents), chunk_size)
        for number, start in enumerate(
            tqdm(starts, desc="encoding chunks", unit="chunk", disable=not self.show_progress)
        ):
            path = directory / f"chunk_{number:05d}.safetensors"
            digest = content_digest(documents[start : start + chunk_size])
            if not path.exists() or record["chunks"].get(path.name) != digest:
                vectors = self.encode(documents[start : start + chunk_size])
                _write_atomically(path, vectors)
                record["chunks"][path.name] = digest  # recorded after the chunk: a crash re-encodes it
                _write_json_atomically(directory / CHUNK_MANIFEST, record)
            tensors = load_file(path)
            yield EmbeddingChunk(start, tensors["embeddings"], tensors["doclens"])

    def _resume_record(self, directory: Path, chunk_size: int) -> dict[str, Any]:
        """The folder's record of settings and chunk digests; a new one if the folder has none."""
        settings = {
            "encoder": encoder_identity(self.model).to_json(),
            "chunk_size": chunk_size,
            "max_length": self.doc_maxlen,  # the key chunk folders have always recorded
            "storage_dtype": str(self.storage_dtype),
        }
        manifest = directory / CHUNK_MANIFEST
        if manifest.exists():
            previous = json.loads(manifest.read_text())
            if previous.get("settings") != settings:
                raise CollectionError(
                    f"{directory} holds chunks of another encoding run ({manifest}); remove it or choose another folder"
                )
            return previous
        record = {"settings": settings, "chunks": {}}
        _write_json_atomically(manifest, record)
        return record

    def _encoded_batches(self, documents: list[Document]) -> Iterator[tuple[list[int], list[torch.Tensor]]]:
        batches = self._plan_batches(documents)
        with ThreadPoolExecutor(max_workers=self.image_workers) as pool:
            pending = self._prefetch(pool, documents, batches, 0)
            for index, positions in enumerate(batches):
                images = pending.result() if pending is not None else None
                pending = self._prefetch(pool, documents, batches, index + 1)
                yield positions, self._encode_batch([documents[p] for p in positions], images)

    def _plan_batches(self, documents: list[Document]) -> list[list[int]]:
        """Batches of one modality each, of documents of similar token counts, longest first.

        A batch closes at ``batch_size`` documents or when one more would pad it past ``max_batch_tokens``.
        """
        groups: dict[str, list[int]] = {}
        for position, document in enumerate(documents):
            groups.setdefault(document.modality, []).append(position)
        lengths = self._token_counts(documents)
        budget = self.max_batch_tokens or math.inf
        batches: list[list[int]] = []
        for positions in groups.values():
            batch: list[int] = []
            for position in sorted(positions, key=lambda p: lengths[p], reverse=True):
                # sorted longest first: the batch pads to the length of its first document
                if batch and (len(batch) == self.batch_size or (len(batch) + 1) * lengths[batch[0]] > budget):
                    batches.append(batch)
                    batch = []
                batch.append(position)
            batches.append(batch)
        return batches

    def _token_counts(self, documents: list[Document]) -> list[int]:
        """Tokens of each document's text as the model will see it (truncated to ``doc_maxlen``)."""
        counts: list[int] = []
        for start in range(0, len(documents), _COUNTING_SLICE):
            texts = [d.text for d in documents[start : start + _COUNTING_SLICE]]
            encoding = self.model.context_tokenizer(
                texts, padding="longest", truncation="longest_first", max_length=self.doc_maxlen
            )
            counts += encoding["attention_mask"].sum(dim=1).tolist()
        return counts

    def _prefetch(
        self, pool: ThreadPoolExecutor, documents: list[Document], batches: list[list[int]], index: int
    ) -> Future | None:
        if index >= len(batches):
            return None
        batch = [documents[p] for p in batches[index]]
        if not any(d.modality == "image_path" for d in batch):
            return None
        if self.image_processor is None:
            raise CollectionError("the collection has image paths: pass an image_processor to encode them")
        return pool.submit(load_pixel_values, batch, self.image_processor)

    @property
    def image_block(self) -> int:
        """Vectors per image of a document (the model's ``mapping_network_prefix_length``)."""
        return int(self.model.config.mapping_network_prefix_length)

    def layout(self, document: Document, num_vectors: int) -> list[dict]:
        """Where each of ``document``'s ``num_vectors`` encoded vectors comes from (see [`vector_layout`])."""
        return vector_layout(document, num_vectors, self.image_block, self.doc_maxlen)

    @torch.inference_mode()
    def _encode_batch(self, batch: list[Document], pixel_values: torch.Tensor | None) -> list[torch.Tensor]:
        """Each document's image blocks, in the order of its images, then its kept text vectors.

        That is the order ``doc()`` gives a document with one image; with several, every image is
        encoded on its own through the same vision path, so each block is what ``doc()`` would give it.
        """
        encoding = self.model.context_tokenizer(
            [d.text for d in batch], padding="longest", truncation="longest_first", max_length=self.doc_maxlen
        )
        # The whole batch, its glue included, runs with the threads its forward passes are sized to.
        with cpu_threads(encoding_work(self.model, encoding["input_ids"], pixel_values)):
            texts = self._text_vectors(encoding)
            blocks = iter(self._image_blocks(batch, pixel_values))
            return [
                torch.cat([*(next(blocks) for _ in range(d.num_images)), text]).to(
                    device="cpu", dtype=self.storage_dtype
                )
                for d, text in zip(batch, texts, strict=True)
            ]

    def _text_vectors(self, encoding: Any) -> list[torch.Tensor]:
        if not self.model.config.context_concat_output_from_text_encoder:
            empty = torch.empty(0, self.model.config.dim, device=self.model.device)
            return [empty] * encoding["input_ids"].shape[0]
        return self.model.doc(
            encoding["input_ids"],
            encoding["attention_mask"],
            concat_output_from_vision_encoder=False,
            keep_dims=False,
        ).late_interaction_output

    def _image_blocks(self, batch: list[Document], pixel_values: torch.Tensor | None) -> list[torch.Tensor]:
        """One (image_block, dim) tensor per image of the batch, document by document."""
        from_pixels = (
            iter(self._encode_images(pixel_values=pixel_values)) if pixel_values is not None else None
        )
        rows = [d.feature_rows for d in batch if d.modality == "image_features"]
        from_features = (
            iter(self._encode_images(image_features=torch.from_numpy(np.concatenate(rows)))) if rows else None
        )
        blocks = []
        for document in batch:
            source = from_features if document.modality == "image_features" else from_pixels
            blocks += [next(source) for _ in range(document.num_images)]  # type: ignore[arg-type]
        return blocks

    def _encode_images(self, **images: torch.Tensor) -> torch.Tensor:
        count = next(iter(images.values())).shape[0]
        # With its text part off, doc() reads only the batch size from input_ids.
        placeholder = torch.zeros(count, 1, dtype=torch.long)
        return self.model.doc(
            placeholder,
            placeholder,
            **images,
            concat_output_from_vision_encoder=True,
            concat_output_from_text_encoder=False,
        ).late_interaction_output


def content_digest(documents: list[Document]) -> str:
    """Digest of what determines the documents' vectors: ids, texts, image paths and image features."""
    digest = hashlib.sha256()
    for document in documents:
        features = document.image_features
        item = [
            document.id,
            document.text,
            document.image_paths,
            None
            if features is None
            else [
                str(features.dtype),
                features.shape,
                hashlib.sha256(np.ascontiguousarray(features)).hexdigest(),
            ],
        ]
        digest.update(hashlib.sha256(json.dumps(item, default=str).encode()).digest())
    return digest.hexdigest()[:32]


def _write_json_atomically(path: Path, value: Any) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(value, indent=1))
    os.replace(temporary, path)


def _write_atomically(path: Path, vectors: list[torch.Tensor]) -> None:
    doclens = torch.tensor([v.shape[0] for v in vectors], dtype=torch.int32)
    temporary = path.with_suffix(".tmp")
    save_file({"embeddings": torch.cat(vectors).contiguous(), "doclens": doclens}, temporary)
    os.replace(temporary, path)
