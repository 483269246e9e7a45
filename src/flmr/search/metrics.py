"""Ranking metrics, as the original M2KR evaluation defines them: Recall@K (a hit rate) and Pseudo
Recall@K (answer string matching); training's validation and `flmr.evaluation` share them.

Both are per-query hits averaged over queries. A query scores 1 at K when its first hit is ranked
within the top K, so every K comes from one scan of the ranking.
"""

from collections.abc import Iterable, Mapping, Sequence

# the K of Recall@K that evaluations report by default
DEFAULT_KS = (1, 5, 10, 20, 50, 100, 500)


def first_relevant_rank(retrieved_ids: Sequence[str], positive_ids: Iterable[str]) -> int | None:
    """0-based rank of the first retrieved id among ``positive_ids``, or None.

    Example:
        >>> first_relevant_rank(["p7", "p3", "p1"], ["p1", "p9"])
        2
    """
    positives = {str(p) for p in positive_ids}
    return next((rank for rank, pid in enumerate(retrieved_ids) if str(pid) in positives), None)


def first_answer_rank(retrieved_texts: Sequence[str], answers: Iterable[str]) -> int | None:
    """0-based rank of the first retrieved text containing an answer, or None.

    As in the original: the answer is stripped and lower-cased, the passage lower-cased, and a plain
    substring test decides (no tokenisation, no word boundaries, no punctuation normalisation).

    Example:
        >>> first_answer_rank(["The tower is in Paris.", "Built in 1889 by Eiffel"], [" EIFFEL "])
        1
    """
    needles = [str(answer).strip().lower() for answer in answers]
    for rank, text in enumerate(retrieved_texts):
        haystack = text.lower()
        if any(needle in haystack for needle in needles):
            return rank
    return None


def hits_at_ks(first_rank: int | None, ks: Sequence[int]) -> dict[int, float]:
    """1.0 at each K that the first hit falls within, else 0.0.

    Example:
        >>> hits_at_ks(2, [1, 5])
        {1: 0.0, 5: 1.0}
    """
    return {k: float(first_rank is not None and first_rank < k) for k in ks}


def recall_at_ks(
    retrieved_ids: Sequence[str], positive_ids: Iterable[str], ks: Sequence[int]
) -> dict[int, float]:
    """Recall@K of one query for every K: 1 when any of the top K ids is a positive."""
    return hits_at_ks(first_relevant_rank(retrieved_ids, positive_ids), ks)


def pseudo_recall_at_ks(
    retrieved_texts: Sequence[str], answers: Iterable[str], ks: Sequence[int]
) -> dict[int, float]:
    """Pseudo Recall@K of one query for every K: 1 when any of the top K texts contains an answer."""
    return hits_at_ks(first_answer_rank(retrieved_texts, answers), ks)


def metric_name(kind: str, k: int) -> str:
    """The seed's column names: ``"Recall@5"``, ``"Pseudo Recall@5"``."""
    return f"{kind}@{k}"


def mean_metrics(per_query: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """The average of every metric over queries (each query carries the same metric names).

    Example:
        >>> mean_metrics([{"Recall@1": 1.0}, {"Recall@1": 0.0}])
        {'Recall@1': 0.5}
    """
    totals: dict[str, float] = {}
    count = 0
    for metrics in per_query:
        count += 1
        for name, value in metrics.items():
            totals[name] = totals.get(name, 0.0) + value
    return {name: total / count for name, total in totals.items()} if count else {}
