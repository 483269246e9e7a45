"""The original package's indexing and search functions, with the same names and arguments.

Indexes live at ``<index_root_path>/<index_experiment_name>/indexes/<index_name>.nbits=<nbits>``
as in the original.
"""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from flmr.index import Index
from flmr.model import FLMRModelForRetrieval
from flmr.search import PlaidSearcher, PlaidSettings, SearchSettings

from .retriever import Retriever


def index_path(
    index_root_path: str | os.PathLike, index_experiment_name: str, index_name: str, nbits: int
) -> Path:
    """Where the original puts an index: ``<root>/<experiment>/indexes/<name>.nbits=<n>``."""
    return Path(index_root_path) / index_experiment_name / "indexes" / f"{index_name}.nbits={nbits}"


def _device(use_gpu: bool) -> str:
    """``"cuda"`` when asked for, ``"cpu"`` otherwise; asking for CUDA where there is none is an error
    (not a silent fall-back to a CPU run that may take hours)."""
    if not use_gpu:
        return "cpu"
    if not torch.cuda.is_available():
        raise RuntimeError(
            "use_gpu=True, but CUDA is not available here (torch.cuda.is_available() is False): pass "
            "use_gpu=False to run on the CPU, or install a CUDA build of torch"
        )
    return "cuda"


def index_custom_collection(
    custom_collection: Any,
    model: FLMRModelForRetrieval | str | os.PathLike,
    index_root_path: str | os.PathLike,
    index_experiment_name: str,
    index_name: str,
    nbits: int = 8,
    doc_maxlen: int = 512,
    overwrite: bool = False,
    use_gpu: bool = False,
    indexing_batch_size: int = 64,
    model_temp_folder: str = "tmp",
    nranks: int = 1,
    image_processor: Any = None,
    image_root: str | os.PathLike | None = None,
    precision: str = "float32",
) -> Path:
    r"""Encode and index a collection, as in the original package.

    Args:
        custom_collection: a list of strings, of ``(text, image_features, image_path)`` tuples, of
            dicts, a ``datasets.Dataset`` or a JSONL path (see [`read_collection`]).
        model: an [`FLMRModelForRetrieval`] in memory (indexed as it is, nothing is saved) or a
            checkpoint folder / hub name.
        nbits: bits per residual dimension (1, 2, 4 or 8).
        doc_maxlen: token limit of a document.
        overwrite: replace an existing index; without it an existing index is an error.
        use_gpu: encode and compress on CUDA; ``RuntimeError`` when CUDA is not available.
        indexing_batch_size: documents per forward pass.
        precision: encoder precision (see [`Retriever`]); a model object is converted in place.
        model_temp_folder, nranks: accepted for compatibility; nothing is written there and one
            process encodes (scale-out runs through Ray).

    Returns:
        The index folder.

    Example:
        >>> index_custom_collection(["Paris is in France."], model, ".", "test_experiment", "test_index", nbits=2)
        PosixPath('test_experiment/indexes/test_index.nbits=2')
    """
    del model_temp_folder, nranks
    if not isinstance(model, FLMRModelForRetrieval):
        model = FLMRModelForRetrieval.from_pretrained(model)
    retriever = Retriever(
        model, image_processor, device=_device(use_gpu), batch_size=indexing_batch_size, precision=precision
    )
    path = index_path(index_root_path, index_experiment_name, index_name, nbits)
    retriever.index(
        custom_collection,
        path,
        nbits=nbits,
        overwrite=overwrite,
        image_root=image_root,
        doc_maxlen=doc_maxlen,
    )
    return path


def create_searcher(
    index_root_path: str | os.PathLike,
    index_experiment_name: str,
    index_name: str,
    nbits: int = 8,
    use_gpu: bool = False,
    settings: SearchSettings | PlaidSettings | None = None,
    **search_options: Any,
) -> PlaidSearcher:
    """Open an index made by [`index_custom_collection`] for PLAID search.

    ``settings`` (or, as keyword ``search_options``, [`PlaidSettings`]' fields: ``ncells``,
    ``centroid_score_threshold``, ``ndocs``, ``candidate_query_vectors``) steer the search. ``use_gpu=True`` searches on CUDA and raises ``RuntimeError`` when
    CUDA is not available, rather than falling back to the CPU unnoticed.
    """
    index = Index.load(index_path(index_root_path, index_experiment_name, index_name, nbits))
    return PlaidSearcher(index, settings, device=_device(use_gpu), **search_options)


class Ranking:
    """Search results keyed by query id, as the original returns them.

    Example:
        >>> ranking.todict()[0][:2]  # (document index, rank, score), rank starting at 1
        [(17, 1, 24.1), (3, 2, 23.7)]
    """

    def __init__(self, data: dict[Any, list[tuple[int, int, float]]]):
        self.data = data

    def todict(self) -> dict[Any, list[tuple[int, int, float]]]:
        return dict(self.data)

    def tolist(self) -> list[tuple[Any, int, int, float]]:
        """Flat ``(query_id, document_index, rank, score)`` rows."""
        return [(qid, pid, rank, score) for qid, rows in self.data.items() for pid, rank, score in rows]

    def __len__(self) -> int:
        return len(self.data)


def search_custom_collection(
    searcher: PlaidSearcher,
    queries: Mapping[Any, str],
    query_embeddings: torch.Tensor,
    num_document_to_retrieve: int = 100,
    remove_zero_tensors: bool = True,
    centroid_search_batch_size: int | None = None,
) -> Ranking:
    """Search a batch of encoded queries; ``queries`` maps query ids to texts, in the embeddings' order.

    ``remove_zero_tensors`` and ``centroid_search_batch_size`` are accepted for compatibility: zero
    (masked) query vectors are always ignored.
    """
    del remove_zero_tensors, centroid_search_batch_size
    if len(queries) != query_embeddings.shape[0]:
        raise ValueError(f"{len(queries)} queries but {query_embeddings.shape[0]} query embeddings")
    hits = searcher.search(query_embeddings, k=num_document_to_retrieve)
    return Ranking(
        {
            qid: [(h.pid, h.rank, h.score) for h in query_hits]
            for qid, query_hits in zip(queries, hits, strict=True)
        }
    )
