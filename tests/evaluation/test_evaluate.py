"""End-to-end M2KR evaluation on a toy dataset with tiny checkpoints: metrics, rankings, resuming."""

import json

import datasets
import pytest
import torch
from PIL import Image

import helpers
from evaluation.m2kr_toy import build_toy_m2kr, one_torch_thread  # noqa: F401 - a fixture
from flmr import FLMRModelForRetrieval
from flmr.encoding import QueryEncoder
from flmr.evaluation import EvaluationSettings, EvaluationStateError, evaluate_m2kr
from flmr.evaluation import runner as evaluation_runner
from flmr.index import Index
from flmr.model.image_processing import load_image_processor
from flmr.retrieval import Retriever

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return build_toy_m2kr(tmp_path_factory.mktemp("m2kr"), "EVQA", num_queries=10, num_passages=30)


@pytest.fixture(scope="module")
def preflmr():
    return FLMRModelForRetrieval.from_pretrained(helpers.PREFLMR_TINY).eval()


def read_rankings(path):
    with open(path) as handle:
        return [json.loads(line) for line in handle]


def independent_rankings(model, root, index_path, k):
    """Rank the test passages for every test query from scratch: query text, image, MaxSim, top k."""
    queries = datasets.load_from_disk(str(root / "EVQA_data"))["test"].to_list()
    passages = datasets.load_from_disk(str(root / "EVQA_passages"))["test_passages"].to_list()
    texts, images = [], []
    for row in queries:
        instruction = row["instruction"].strip()
        instruction = instruction if instruction.endswith(":") else instruction + ":"
        texts.append(instruction + " " + row["question"])
        path = row["img_path"]
        images.append(
            Image.open(root / "images" / path).convert("RGB") if path else Image.new("RGB", (336, 336))
        )
    pixel_values = load_image_processor(model.config)(images, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        Q = model.query(**model.query_tokenizer(texts), pixel_values=pixel_values).late_interaction_output
    # document vectors as the index stores them (compression is the index's business, tested there)
    index = Index.load(index_path)
    vectors, owners = index.document_vectors(torch.arange(index.num_documents))
    stored_ids = [index.document(pid).id for pid in range(index.num_documents)]
    rankings = []
    for q in Q:
        per_vector = vectors.float() @ q.T  # (document vectors, query vectors)
        scores = torch.stack([per_vector[owners == d].max(0).values.sum() for d in range(len(stored_ids))])
        order = scores.argsort(descending=True)[:k]
        rankings.append([(stored_ids[i], float(scores[i])) for i in order])
    return queries, {p["passage_id"]: p["passage_content"] for p in passages}, rankings


def test_exact_evaluation_matches_an_independent_computation(tmp_path, toy, preflmr):
    ks = [1, 3, 10]
    settings = EvaluationSettings(ks=ks, nbits=8, exact=True, queries_per_part=4)
    (result,) = evaluate_m2kr(preflmr, toy, ["EVQA"], tmp_path, settings, toy / "images", show_progress=False)

    index_path = tmp_path / "EVQA_test" / "EVQA_test_passages.nbits=8"
    queries, text_of, expected = independent_rankings(preflmr, toy, index_path, max(ks))
    saved = read_rankings(result.rankings_path)
    assert [line["question_id"] for line in saved] == [q["question_id"] for q in queries]
    totals = {}
    for query, line, ranking in zip(queries, saved, expected, strict=True):
        assert [pid for pid, _ in line["retrieved"]] == [pid for pid, _ in ranking]
        assert [s for _, s in line["retrieved"]] == pytest.approx([s for _, s in ranking], abs=1e-3)
        for k in ks:
            top = [pid for pid, _ in ranking[:k]]
            recall = float(bool(set(top) & set(query["pos_item_ids"])))
            answers = [a.strip().lower() for a in query["answers"]]
            pseudo = float(any(a in text_of[pid].lower() for pid in top for a in answers))
            assert line[f"Recall@{k}"] == recall and line[f"Pseudo Recall@{k}"] == pseudo
            totals[f"Recall@{k}"] = totals.get(f"Recall@{k}", 0) + recall / len(queries)
            totals[f"Pseudo Recall@{k}"] = totals.get(f"Pseudo Recall@{k}", 0) + pseudo / len(queries)
    assert result.metrics == pytest.approx(totals)
    assert json.loads((tmp_path / "EVQA_test" / "metrics.json").read_text())["metrics"] == result.metrics


def test_plaid_run_writes_rankings_and_report(tmp_path, toy, preflmr):
    settings = EvaluationSettings(ks=[1, 5, 10], nbits=2)
    (result,) = evaluate_m2kr(preflmr, toy, "EVQA", tmp_path, settings, toy / "images", model_name="tiny")
    assert set(result.metrics) == {f"{kind}@{k}" for kind in ("Recall", "Pseudo Recall") for k in (1, 5, 10)}
    passage_ids = set(datasets.load_from_disk(str(toy / "EVQA_passages"))["test_passages"]["passage_id"])
    for line in read_rankings(result.rankings_path):
        assert len(line["retrieved"]) == 10 and {pid for pid, _ in line["retrieved"]} <= passage_ids
    report = (tmp_path / "report.md").read_text()
    assert "| Model | EVQA Recall@5 | EVQA Pseudo Recall@5 |" in report
    assert f"| tiny | {result.metrics['Recall@5']:.3f} | {result.metrics['Pseudo Recall@5']:.3f} |" in report
    assert json.loads((tmp_path / "report.json").read_text())[0]["metrics"] == result.metrics


def test_text_only_checkpoint_and_tasks_without_pseudo_recall(tmp_path, make_model):
    root = build_toy_m2kr(tmp_path / "data", "KVQA", num_queries=4, num_passages=12, images=False)
    model = make_model(helpers.tiny_config(use_vision_encoder=False))
    settings = EvaluationSettings(ks=[1, 5], nbits=2, exact=True)
    (result,) = evaluate_m2kr(model, root, ["KVQA"], tmp_path / "out", settings, show_progress=False)
    assert set(result.metrics) == {"Recall@1", "Recall@5"}  # Pseudo Recall is for EVQA, OKVQA, Infoseek


def test_interrupted_run_resumes_where_it_stopped(tmp_path, toy, preflmr, monkeypatch):
    settings = EvaluationSettings(ks=[1, 5], nbits=2, queries_per_part=3)
    write_part = evaluation_runner._write_part
    written = []

    def interrupted_after_two_parts(path, lines):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(path)
        write_part(path, lines)

    monkeypatch.setattr(evaluation_runner, "_write_part", interrupted_after_two_parts)
    with pytest.raises(KeyboardInterrupt):
        evaluate_m2kr(preflmr, toy, ["EVQA"], tmp_path / "run", settings, toy / "images", show_progress=False)
    assert len(list((tmp_path / "run" / "EVQA_test" / "parts").glob("part_*.jsonl"))) == 2

    monkeypatch.setattr(evaluation_runner, "_write_part", write_part)
    monkeypatch.setattr(Retriever, "index", lambda *args, **kwargs: pytest.fail("the index was rebuilt"))
    encoded = []
    encode = QueryEncoder.encode
    monkeypatch.setattr(
        QueryEncoder,
        "encode",
        lambda self, texts, **kw: encoded.append(len(texts)) or encode(self, texts, **kw),
    )
    (resumed,) = evaluate_m2kr(preflmr, toy, ["EVQA"], tmp_path / "run", settings, toy / "images")
    assert sum(encoded) == 10 - 6  # only the queries of the unfinished parts
    monkeypatch.undo()

    (uninterrupted,) = evaluate_m2kr(
        preflmr, toy, ["EVQA"], tmp_path / "fresh", settings, toy / "images", show_progress=False
    )
    assert read_rankings(resumed.rankings_path) == read_rankings(uninterrupted.rankings_path)
    assert resumed.metrics == uninterrupted.metrics


def test_finished_run_is_not_redone_and_other_settings_are_refused(tmp_path, toy, preflmr, monkeypatch):
    settings = EvaluationSettings(ks=[1, 5], nbits=2, exact=True)
    (first,) = evaluate_m2kr(preflmr, toy, ["EVQA"], tmp_path, settings, toy / "images", show_progress=False)
    monkeypatch.setattr(QueryEncoder, "encode", lambda *args, **kwargs: pytest.fail("queries encoded again"))
    (again,) = evaluate_m2kr(preflmr, toy, ["EVQA"], tmp_path, settings, toy / "images", show_progress=False)
    assert again == first
    with pytest.raises(EvaluationStateError, match="other settings"):
        evaluate_m2kr(preflmr, toy, ["EVQA"], tmp_path, EvaluationSettings(ks=[1, 10], nbits=2, exact=True))
    monkeypatch.undo()
    overwritten = EvaluationSettings(ks=[1, 10], nbits=2, exact=True, overwrite=True)
    (redone,) = evaluate_m2kr(
        preflmr, toy, ["EVQA"], tmp_path, overwritten, toy / "images", show_progress=False
    )
    assert set(redone.metrics) >= {"Recall@10"}


def test_index_of_another_checkpoint_is_refused(tmp_path, toy, preflmr, make_model):
    settings = EvaluationSettings(ks=[1], nbits=2, exact=True, index_root=tmp_path / "indexes")
    evaluate_m2kr(preflmr, toy, ["EVQA"], tmp_path / "a", settings, toy / "images", show_progress=False)
    other = make_model(helpers.tiny_preflmr_config(), seed=3)
    with pytest.raises(EvaluationStateError, match="another checkpoint"):
        evaluate_m2kr(other, toy, ["EVQA"], tmp_path / "b", settings, toy / "images", show_progress=False)
