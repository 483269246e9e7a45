"""Validation Recall@K during finetuning: rank a corpus for held-out queries by exact MaxSim."""

import random
from collections.abc import Sequence
from typing import Any

import torch

from flmr.encoding import Document, DocumentEncoder, QueryEncoder
from flmr.search import ExactSearcher
from flmr.search.metrics import mean_metrics, metric_name, recall_at_ks

from .batches import ContrastiveCollator
from .data import TrainingData


class RetrievalValidator:
    r"""Recall@K of a model on validation queries against a passage corpus.

    The corpus is encoded in full at every call and searched exactly (no index), so keep it to the
    size of a validation split. Queries are built as in training (same instruction mode, with each
    query's sampled instruction fixed by its key).

    Args:
        data: validation examples and the corpus to rank (e.g. M2KR ``valid_passages``).
        collator: the training collator (for query text and images).
        ks: the K of Recall@K.
        batch_size: queries / passages per forward pass.
        max_queries: use only the first N examples.

    Example:
        >>> from flmr.training import ContrastiveExample, Passage
        >>> pool = [Passage(d.id, d.text) for d in docs]  # 8 sample documents
        >>> examples = [ContrastiveExample(f"what is {p.id}?", positives=[p]) for p in pool]
        >>> collator = ContrastiveCollator(model, processor, pool, instruction_mode="none", deterministic=True)
        >>> validator = RetrievalValidator(TrainingData(examples, pool), collator, ks=(1, 8))
        >>> validator(model)  # all 8 passages ranked: each query's positive is in its top 8
        {'Recall@1': ..., 'Recall@8': 1.0}
    """

    def __init__(
        self,
        data: TrainingData,
        collator: ContrastiveCollator,
        ks: Sequence[int] = (1, 5, 10),
        batch_size: int = 16,
        max_queries: int | None = None,
    ):
        self.examples = data.examples[:max_queries] if max_queries else data.examples
        self.corpus = data.passages
        self.collator = collator
        self.ks = sorted(set(ks))
        self.batch_size = batch_size

    def __call__(self, model: Any) -> dict[str, float]:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return self._recall(model)
        finally:
            model.train(was_training)

    def _recall(self, model: Any) -> dict[str, float]:
        documents = [Document(id=str(position), text=p.text) for position, p in enumerate(self.corpus)]
        vectors = DocumentEncoder(
            model, self.batch_size, self.collator.doc_maxlen, show_progress=False
        ).encode(documents)
        texts = [self.collator.query_text(e, random.Random(e.key)) for e in self.examples]
        images = None
        if self.collator.image_processor is not None:
            images = [self.collator.query_image(e) for e in self.examples]
        encoder = QueryEncoder(model, self.collator.image_processor, self.batch_size)
        hits = ExactSearcher(vectors).search(encoder.encode(texts, images=images), k=max(self.ks))
        per_query = []
        for example, query_hits in zip(self.examples, hits, strict=True):
            retrieved = [self.corpus[hit.pid].id for hit in query_hits]
            recall = recall_at_ks(retrieved, [p.id for p in example.positives], self.ks)
            per_query.append({metric_name("Recall", k): value for k, value in recall.items()})
        return mean_metrics(per_query)
