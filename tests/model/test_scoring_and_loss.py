"""MaxSim scoring and both training losses, against straightforward re-computations."""

import math

import torch

import flmr
from helpers import tiny_config


def naive_maxsim(q, d, d_mask):
    total = 0.0
    for qv in q:
        best = max(float(qv @ dv) if keep else -9999.0 for dv, keep in zip(d, d_mask, strict=True))
        total += best
    return total


def random_batch(n_docs=6, q_len=5, d_len=7, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q = torch.nn.functional.normalize(torch.randn(n_docs, q_len, dim, generator=g), dim=-1)
    D = torch.nn.functional.normalize(torch.randn(n_docs, d_len, dim, generator=g), dim=-1)
    mask = torch.rand(n_docs, d_len, generator=g) > 0.3
    mask[:, 0] = True
    return Q, D, mask


def test_score_is_maxsim_over_unmasked_document_vectors():
    Q, D, mask = random_batch()
    scores = flmr.FLMRModelForRetrieval.score(Q, D, mask.unsqueeze(-1))
    expected = [naive_maxsim(Q[i], D[i], mask[i].tolist()) for i in range(len(Q))]
    assert torch.allclose(scores, torch.tensor(expected), atol=1e-5)


def test_one_query_scores_every_document_by_broadcasting():
    Q, D, mask = random_batch()
    scores = flmr.FLMRModelForRetrieval.score(Q[:1], D, mask)
    expected = [naive_maxsim(Q[0], D[i], mask[i].tolist()) for i in range(len(D))]
    assert torch.allclose(scores, torch.tensor(expected), atol=1e-5)


def manual_cross_entropy(logits, targets):
    losses = []
    for row, target in zip(logits.tolist(), targets, strict=True):
        log_norm = math.log(sum(math.exp(x - max(row)) for x in row)) + max(row)
        losses.append(log_norm - row[target])
    return sum(losses) / len(losses)


def forward_inputs(model, n_neg):
    queries = ["question: what is the capital of france?", "question: who built this bridge?"]
    docs = [
        "paris is the capital.",
        "a bridge.",
        "rome.",
        "the golden gate bridge was built in 1937.",
        "a cat.",
        "a dog.",
    ]
    docs = docs[: len(queries) * (1 + n_neg)]
    q, d = model.query_tokenizer(queries), model.context_tokenizer(docs, max_length=24)
    return {
        "query_input_ids": q["input_ids"],
        "query_attention_mask": q["attention_mask"],
        "query_pixel_values": torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)),
        "context_input_ids": d["input_ids"],
        "context_attention_mask": d["attention_mask"],
        "num_negative_examples": n_neg,
    }


def test_forward_losses_match_cross_entropy_recomputed_by_hand(make_model):
    model = make_model(tiny_config())
    for n_neg in (1, 2):
        inputs = forward_inputs(model, n_neg)
        with torch.no_grad():
            in_batch = model(**inputs, use_in_batch_negatives=True)
            grouped = model(**inputs, use_in_batch_negatives=False)
        Q, D = in_batch.query_late_interaction_output, in_batch.context_late_interaction_output
        mask = model.doc(inputs["context_input_ids"], inputs["context_attention_mask"]).context_mask.squeeze(
            -1
        )
        all_scores = torch.tensor(
            [[naive_maxsim(Q[i], D[j], mask[j].tolist()) for j in range(len(D))] for i in range(len(Q))]
        )
        group = 1 + n_neg
        own = torch.stack([all_scores[i, i * group : (i + 1) * group] for i in range(len(Q))])
        assert torch.allclose(in_batch.scores, own, atol=1e-4)
        assert torch.allclose(grouped.scores, own, atol=1e-4)
        expected_in_batch = manual_cross_entropy(all_scores, [i * group for i in range(len(Q))])
        assert abs(in_batch.loss.item() - expected_in_batch) < 1e-4
        assert in_batch.in_batch_negative_loss.item() == in_batch.loss.item()
        assert abs(grouped.loss.item() - manual_cross_entropy(own, [0] * len(Q))) < 1e-4
        assert grouped.in_batch_negative_loss is None


def test_forward_rejects_a_context_count_that_does_not_match(make_model):
    model = make_model(tiny_config())
    inputs = forward_inputs(model, 1)
    inputs["num_negative_examples"] = 2
    try:
        model(**inputs)
    except ValueError as error:
        assert "need 6 contexts, got 4" in str(error)
    else:
        raise AssertionError("no error")


def test_forward_trains_every_module_it_uses(make_model):
    model = make_model(tiny_config()).train()
    model(**forward_inputs(model, 1)).loss.backward()
    assert model.context_text_encoder_linear.weight.grad.abs().sum() > 0
    assert model.context_vision_projection.model[0].weight.grad.abs().sum() > 0
