"""Distributed encoding on Ray Data: read a collection, encode it with model-holding actors, write parts.

The pipeline is ``read -> number the rows -> drop rows already encoded -> map_batches(actor) -> parts``:

- read: ``ray.data.read_text`` for JSONL (each line is parsed by ``flmr.encoding.read_collection``, so
  rows mean exactly what they mean to the single-machine path), ``read_parquet``, ``from_huggingface``
  for a ``datasets.Dataset``, ``from_items`` for an in-memory list;
- each row gets its position in the collection (the rows are read in order once and zipped with a
  range), which fixes its pid in the index whatever actor encodes it;
- each actor loads the checkpoint once (``FLMRModelForRetrieval.from_pretrained``) on its GPU or CPU
  slot and encodes a batch with ``DocumentEncoder``, then writes it as one part (see
  ``flmr.distributed.embeddings``), so the vectors never travel back to the driver.

Example (starts a Ray cluster and reads a checkpoint from the model hub, so the tests do not run it):
    >>> from flmr.distributed import connect, encode_collection
    >>> connect("local", num_cpus=2)  # doctest: +SKIP
    >>> parts = encode_collection("passages.jsonl", "embeddings", "LinWeizheDragon/PreFLMR_ViT-B", workers=2)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from flmr._deprecation import renamed_keywords
from flmr.encoding import CollectionError, DocumentEncoder, encoder_identity, read_collection
from flmr.index import stored_fields
from flmr.model.tokenization_flmr import DEFAULT_DOC_MAXLEN

from .cluster import connect, default_cpus_per_worker, require_ray
from .embeddings import EmbeddingParts, prepare_folder, write_part

POSITION = "__flmr_position"
LINE = "text"  # the column read_text puts each line in
ACTOR_START_TIMEOUT_S = 900  # loading a large checkpoint from shared storage can take minutes


@renamed_keywords(max_length="doc_maxlen")
def encode_collection(
    collection: Any,
    output: str | os.PathLike,
    checkpoint: str | os.PathLike,
    *,
    workers: int = 1,
    gpus_per_worker: float = 0,
    cpus_per_worker: float | None = None,
    batch_size: int = 32,
    rows_per_part: int = 1024,
    doc_maxlen: int = DEFAULT_DOC_MAXLEN,
    image_root: str | os.PathLike | None = None,
    ray_address: str | None = None,
    show_progress: bool = True,
) -> EmbeddingParts:
    """Encode ``collection`` on a Ray cluster into the embeddings folder ``output``; resumable.

    Args:
        collection: a JSONL file, a Parquet file or folder, a ``datasets.Dataset``, or a list in any
            form ``read_collection`` accepts (read on the driver).
        output: the embeddings folder. A second call with the same settings encodes only what no
            finished part holds; another run's folder is refused.
        checkpoint: checkpoint folder (reachable from every node) or hub name.
        workers: encoding actors, each holding one copy of the model.
        gpus_per_worker: GPUs per actor (1 on a GPU cluster; 0 encodes on CPU).
        cpus_per_worker: CPUs per actor; default leaves a whole CPU for the read tasks (Ray Data hangs
            when the actors hold every CPU).
        batch_size: documents per forward pass.
        rows_per_part: documents per part, the unit of work, of progress and of resuming.
        doc_maxlen, image_root: as in ``DocumentEncoder`` and ``read_collection``.
        ray_address: cluster to connect to when this process is not connected yet (None: in-process).
        show_progress: a progress bar of encoded documents.

    Returns the finished parts (``check_complete`` passes).

    Example (starts a Ray cluster, so the tests do not run it):
        >>> parts = encode_collection(["Paris is in France.", "Rome is in Italy."], "emb", "my_checkpoint")  # doctest: +SKIP
        >>> parts.num_documents  # doctest: +SKIP
        2
    """
    ray = connect(ray_address)
    context = ray.data.DataContext.get_current()
    previous = (
        context.execution_options.preserve_order,
        context.enable_progress_bars,
        context.wait_for_min_actors_s,
    )
    context.enable_progress_bars = False
    # Start every actor before handing out parts, rather than letting the first one up take the head of
    # the collection; a cluster that cannot host them all fails here instead of running short-handed.
    context.wait_for_min_actors_s = ACTOR_START_TIMEOUT_S
    try:
        # Positions come from the reading order, so reading (and zipping) must keep it.
        context.execution_options.preserve_order = True
        rows, json_lines = _read(ray, collection, image_root)
        rows = rows.materialize()
        num_documents = rows.count()
        if num_documents == 0:
            raise CollectionError("the collection is empty: give at least one document")
        numbered = rows.zip(ray.data.range(num_documents).rename_columns({"id": POSITION}))
        # Actors are handed whole blocks, and a file is read as few large blocks: about one block per
        # part lets every actor take work.
        numbered = numbered.repartition(max(1, -(-num_documents // rows_per_part)))
        settings = {
            # resolved, so that a folder reached through a symlink or a relative path resumes too
            "checkpoint": str(Path(checkpoint).resolve()) if Path(checkpoint).exists() else str(checkpoint),
            "num_documents": num_documents,
            "max_length": doc_maxlen,  # the key every record of the encoding length keeps
            "storage_dtype": "float16",
        }
        prepare_folder(output, settings)
        finished = EmbeddingParts(output).finished_positions()
        pending = num_documents - len(finished)
        if pending:
            if len(finished):
                numbered = numbered.map_batches(
                    _drop_positions, fn_kwargs={"done": finished}, batch_format="pyarrow"
                )
            cpus = cpus_per_worker or default_cpus_per_worker(workers, gpus_per_worker)
            encoded = numbered.map_batches(
                PartEncoder,
                fn_constructor_kwargs={
                    "checkpoint": str(checkpoint),
                    "output": str(Path(output).resolve()),
                    "batch_size": batch_size,
                    "doc_maxlen": doc_maxlen,
                    # actors run in other folders (and on other nodes): paths must be absolute
                    "image_root": None if image_root is None else str(Path(image_root).resolve()),
                    "json_lines": json_lines,
                    "threads": max(1, int(cpus)),
                },
                batch_size=rows_per_part,
                batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=workers),
                num_cpus=cpus,
                num_gpus=gpus_per_worker,
            )
            with tqdm(total=pending, desc="encoding documents", unit="doc", disable=not show_progress) as bar:
                for batch in encoded.iter_batches(batch_size=None, batch_format="numpy"):
                    bar.update(int(batch["documents"].sum()))
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = previous[:2]
        context.wait_for_min_actors_s = previous[2]
    parts = EmbeddingParts(output)
    parts.check_complete()
    return parts


class PartEncoder:
    """Ray Data actor: holds the model and turns each batch of numbered rows into one part on disk.

    Args:
        checkpoint: checkpoint folder or hub name, loaded once per actor.
        output: the embeddings folder (shared storage on a multi-node cluster).
        batch_size, doc_maxlen, image_root: as in ``DocumentEncoder`` and ``read_collection``.
        json_lines: rows are raw JSONL lines to parse.
        threads: torch CPU threads (the actor's CPU share: several actors on one node must not each
            use every core).
    """

    def __init__(
        self,
        checkpoint: str,
        output: str,
        batch_size: int,
        doc_maxlen: int,
        image_root: str | None,
        json_lines: bool,
        threads: int,
    ) -> None:
        from flmr.model import FLMRModelForRetrieval

        torch.set_num_threads(threads)
        device = "cuda" if require_ray().get_gpu_ids() else "cpu"
        self.model = FLMRModelForRetrieval.from_pretrained(checkpoint).to(device).eval()
        # with the checkpoint's name in it, search and serve find the checkpoint again
        self.encoder_identity = encoder_identity(self.model).with_checkpoint(checkpoint)
        self.output = output
        self.worker = f"{require_ray().util.get_node_ip_address()}:{os.getpid()}"
        self.image_root = image_root
        self.json_lines = json_lines
        self.encoder = DocumentEncoder(
            self.model,
            batch_size=batch_size,
            doc_maxlen=doc_maxlen,
            image_processor=self._process_images,
            show_progress=False,
        )

    @cached_property
    def _image_processor(self) -> Any:
        from flmr.model.image_processing import load_image_processor

        return load_image_processor(self.model.config)

    def _process_images(self, *args: Any, **kwargs: Any) -> Any:
        return self._image_processor(*args, **kwargs)

    def __call__(self, table: Any) -> dict[str, np.ndarray]:
        rows = table.to_pylist()
        positions = [int(row.pop(POSITION)) for row in rows]
        if self.json_lines:
            rows = [_parse_line(row[LINE], position) for row, position in zip(rows, positions, strict=True)]
        for row, position in zip(rows, positions, strict=True):
            if row.get("id") is None and row.get("passage_id") is None:
                row["id"] = str(position)  # the single-machine path numbers documents the same way
        started = time.time()
        documents = read_collection(rows, self.image_root)
        vectors = self.encoder.encode(documents)
        stats = {"worker": self.worker, "started": started, "finished": time.time()}
        fields = [stored_fields(d) for d in documents]
        write_part(self.output, positions, vectors, fields, self.encoder_identity, stats)
        return {
            "documents": np.array([len(documents)]),
            "vectors": np.array([sum(v.shape[0] for v in vectors)]),
        }


def _parse_line(line: str, position: int) -> dict[str, Any]:
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise CollectionError(f"collection row {position} is not JSON: {error}") from error


def _drop_positions(table: Any, done: Any) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    return table.filter(pc.invert(pc.is_in(table[POSITION], value_set=pa.array(done))))


def _read(ray: Any, collection: Any, image_root: str | os.PathLike | None) -> tuple[Any, bool]:
    """The collection as a Ray Dataset, and whether its rows are raw JSONL lines."""
    if isinstance(collection, (str, os.PathLike)):
        path = Path(collection).resolve()
        if not path.exists():
            raise CollectionError(f"collection {os.fspath(path)!r} does not exist")
        if path.suffix == ".parquet" or (path.is_dir() and any(path.glob("*.parquet"))):
            return ray.data.read_parquet(str(path)), False
        return ray.data.read_text(str(path)), True
    if type(collection).__module__.startswith("datasets"):
        return ray.data.from_huggingface(collection), False
    if isinstance(collection, Sequence):
        # as JSON lines, so that every row keeps exactly its own fields (Arrow would unify their schemas)
        lines = [{LINE: json.dumps(_item(document))} for document in read_collection(collection, image_root)]
        return ray.data.from_items(lines), True
    raise CollectionError(
        f"cannot encode a {type(collection).__name__} on Ray: give a JSONL or Parquet path, a "
        "datasets.Dataset or a list of documents"
    )


def _item(document: Any) -> dict[str, Any]:
    item = stored_fields(document)
    if document.image_features is not None:
        item["image_features"] = document.image_features.tolist()
    return item
