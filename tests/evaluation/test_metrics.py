"""Recall@K and Pseudo Recall@K against hand-computed values and a direct re-implementation."""

import random

import pytest

from flmr.evaluation import (
    first_answer_rank,
    first_relevant_rank,
    mean_metrics,
    pseudo_recall_at_ks,
    recall_at_ks,
)

KS = [1, 2, 3, 5]


def test_recall_by_hand():
    retrieved = ["p4", "p2", "p9", "p1", "p7"]
    assert recall_at_ks(retrieved, ["p9"], KS) == {1: 0.0, 2: 0.0, 3: 1.0, 5: 1.0}
    assert recall_at_ks(retrieved, ["p7", "p2"], KS) == {1: 0.0, 2: 1.0, 3: 1.0, 5: 1.0}
    assert recall_at_ks(retrieved, ["p3"], KS) == {1: 0.0, 2: 0.0, 3: 0.0, 5: 0.0}
    assert recall_at_ks(retrieved, [], KS) == {1: 0.0, 2: 0.0, 3: 0.0, 5: 0.0}


def test_recall_compares_ids_as_strings():
    assert first_relevant_rank([10, 11], ["11"]) == 1


def test_pseudo_recall_by_hand():
    texts = ["The Eiffel Tower is in PARIS.", "It opened in 1889.", "Gustave Eiffel's company built it."]
    # the answer is stripped and lower-cased, the passage lower-cased; a plain substring test
    assert pseudo_recall_at_ks(texts, ["  paris "], KS) == {1: 1.0, 2: 1.0, 3: 1.0, 5: 1.0}
    assert pseudo_recall_at_ks(texts, ["1889", "nowhere"], KS) == {1: 0.0, 2: 1.0, 3: 1.0, 5: 1.0}
    # no word boundaries: "pan" is found inside "company"
    assert first_answer_rank(texts, ["PAN"]) == 2
    assert first_answer_rank(texts, ["London"]) is None


def test_mean_over_queries_by_hand():
    per_query = [
        {"Recall@1": 1.0, "Recall@5": 1.0},
        {"Recall@1": 0.0, "Recall@5": 1.0},
        {"Recall@1": 0.0, "Recall@5": 0.0},
        {"Recall@1": 0.0, "Recall@5": 1.0},
    ]
    assert mean_metrics(per_query) == {"Recall@1": 0.25, "Recall@5": 0.75}
    assert mean_metrics([]) == {}


def reference_recall(retrieved: list[str], positives: list[str], k: int) -> float:
    """The definition, read literally: any of the top K ids in pos_item_ids."""
    top = retrieved[:k]
    return 1.0 if any(pid in positives for pid in top) else 0.0


def reference_pseudo_recall(texts: list[str], answers: list[str], k: int) -> float:
    hit = False
    for text in texts[:k]:
        for answer in answers:
            if answer.strip().lower() in text.lower():
                hit = True
    return 1.0 if hit else 0.0


@pytest.mark.parametrize("seed", range(5))
def test_against_reference_on_random_rankings(seed):
    rng = random.Random(seed)
    ks = sorted(rng.sample(range(1, 40), 4))
    vocabulary = ["alpha", "beta", "gamma", "delta", "Epsilon", "zeta", "eta"]
    corpus = {f"p{i}": " ".join(rng.choices(vocabulary, k=3)) for i in range(60)}
    totals, reference_totals = [], []
    for _ in range(30):
        retrieved = rng.sample(sorted(corpus), 35)
        positives = rng.sample(sorted(corpus), rng.randint(0, 3))
        answers = [rng.choice(vocabulary).upper() + " " * rng.randint(0, 2) for _ in range(rng.randint(0, 2))]
        texts = [corpus[pid] for pid in retrieved]
        metrics = {f"Recall@{k}": v for k, v in recall_at_ks(retrieved, positives, ks).items()}
        metrics |= {f"Pseudo Recall@{k}": v for k, v in pseudo_recall_at_ks(texts, answers, ks).items()}
        totals.append(metrics)
        reference = {f"Recall@{k}": reference_recall(retrieved, positives, k) for k in ks}
        reference |= {f"Pseudo Recall@{k}": reference_pseudo_recall(texts, answers, k) for k in ks}
        reference_totals.append(reference)
        assert metrics == reference
    averaged = mean_metrics(totals)
    for name in averaged:
        assert averaged[name] == pytest.approx(sum(r[name] for r in reference_totals) / len(reference_totals))
