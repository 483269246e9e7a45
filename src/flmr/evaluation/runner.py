"""M2KR evaluation: index a task's passages, encode its queries as the original does, search, score.

A run keeps its state under ``<output_dir>/<TASK>_<split>/``:

* ``index.nbits=<n>/``: the passage index (or under ``index_root``, to share it between runs);
* ``run.json``: the settings the run was started with; a later call resumes only with the same ones;
* ``parts/part_00000.jsonl``...: the rankings of each finished block of queries, so an interrupted run
  restarts at the first unfinished block (index encoding resumes on its own, chunk by chunk);
* ``rankings.jsonl``: per query, every metric and the retrieved ``[passage_id, score]`` list;
* ``metrics.json``: the averages. A finished task is not run again.
"""

import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from flmr.data.m2kr import PSEUDO_RECALL_TASKS, M2KRDataError, M2KRSplit, load_m2kr_split
from flmr.encoding import QueryEncoder, encoder_identity
from flmr.index import Index
from flmr.model import FLMRModelForRetrieval
from flmr.model.image_processing import resolve_image_processor
from flmr.retrieval import Retriever
from flmr.search import Searcher, build_searcher
from flmr.search.metrics import DEFAULT_KS, mean_metrics, metric_name, pseudo_recall_at_ks, recall_at_ks
from flmr.search.settings import PlaidSettings, SearchSettings

from .errors import EvaluationSettingsError, EvaluationStateError
from .queries import query_image, row_query_text
from .report import write_report


@dataclass
class EvaluationSettings:
    """How a task is evaluated (defaults: the original's ``example_use_preflmr.py`` settings).

    Args:
        split: query split; its ``<split>_passages`` corpus is indexed.
        ks: the K of Recall@K; the largest is how many passages are retrieved (500 matches the paper).
        pseudo_recall: compute Pseudo Recall@K; None means for EVQA, OKVQA and Infoseek only.
        nbits: index compression (bits per residual dimension).
        doc_maxlen: token limit of a passage.
        query_batch_size / indexing_batch_size: queries / passages per forward pass.
        queries_per_part: queries searched and saved together; the unit an interrupted run resumes from.
        search: how passages are searched (default: PLAID with the original engine's settings for the
            largest K, ``original_search_settings``).
        exact, search_settings: the earlier form of ``search`` (exact MaxSim; flat PLAID options
            overriding the original engine's choice), folded into ``search`` when it is not given.
        max_queries: evaluate only the first N queries (quick checks).
        index_root: folder for the passage indexes (default: each task's run folder).
        reindex: rebuild the index even when one exists.
        overwrite: discard a previous run of a task (its run folder, with the index when it is kept
            there) instead of resuming it.
        device: where encoding and search run.
        revision: hub revision of the dataset to pin.

    Raises:
        EvaluationSettingsError: ``ks`` holds no positive K, or a batch size or ``queries_per_part``
            is not positive.
    """

    split: str = "test"
    ks: Sequence[int] = DEFAULT_KS
    pseudo_recall: bool | None = None
    nbits: int = 8
    doc_maxlen: int = 512
    query_batch_size: int = 8
    indexing_batch_size: int = 64
    queries_per_part: int = 256
    search: SearchSettings | None = None
    exact: bool = False
    search_settings: dict[str, Any] = field(default_factory=dict)
    max_queries: int | None = None
    index_root: str | os.PathLike | None = None
    reindex: bool = False
    overwrite: bool = False
    device: str = "cpu"
    revision: str | None = None

    def __post_init__(self) -> None:
        self.ks = sorted({int(k) for k in self.ks})
        if not self.ks or self.ks[0] < 1:
            raise EvaluationSettingsError(f"ks must be positive integers, got {self.ks}")
        if self.queries_per_part < 1 or self.query_batch_size < 1 or self.indexing_batch_size < 1:
            raise EvaluationSettingsError("batch sizes and queries_per_part must be positive")
        if self.search is None:
            original = original_search_settings(max(self.ks))
            plaid = replace(original.plaid, **self.search_settings)
            self.search = replace(original, exact=self.exact, plaid=plaid)

    def computes_pseudo_recall(self, task: str) -> bool:
        return task in PSEUDO_RECALL_TASKS if self.pseudo_recall is None else self.pseudo_recall


@dataclass
class TaskResult:
    """The outcome of one task: averaged metrics and where the per-query rankings are."""

    task: str
    split: str
    model: str
    metrics: dict[str, float]
    num_queries: int
    num_passages: int
    seconds: dict[str, float]
    rankings_path: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def original_plaid_settings(k: int) -> dict[str, Any]:
    """The search settings the original engine picks for ``k`` results (ColBERTv2's PLAID defaults).

    Example:
        >>> original_plaid_settings(500)["ndocs"]
        4096
    """
    if k <= 10:
        settings = {"ncells": 1, "centroid_score_threshold": 0.5, "ndocs": 256}
    elif k <= 100:
        settings = {"ncells": 2, "centroid_score_threshold": 0.45, "ndocs": 1024}
    else:
        settings = {"ncells": 4, "centroid_score_threshold": 0.4, "ndocs": max(k * 4, 4096)}
    # The original generates candidates from the text part of the query only.
    return {**settings, "candidate_query_vectors": "text_first_32", "grow_with_collection": False}


def original_search_settings(k: int) -> SearchSettings:
    """``original_plaid_settings(k)`` as ``SearchSettings``.

    Example:
        >>> original_search_settings(10).plaid.ncells
        1
    """
    return SearchSettings(plaid=PlaidSettings(**original_plaid_settings(k)))


def evaluate_m2kr(
    model: FLMRModelForRetrieval | str | os.PathLike,
    dataset: str | os.PathLike,
    tasks: str | Sequence[str],
    output_dir: str | os.PathLike,
    settings: EvaluationSettings | None = None,
    image_root: str | os.PathLike | Mapping[str, str | os.PathLike] | None = None,
    image_processor: Any = None,
    model_name: str | None = None,
    show_progress: bool = True,
) -> list[TaskResult]:
    """Evaluate a checkpoint on M2KR tasks; writes per-task results and ``report.json`` / ``report.md``.

    Args:
        model: an [`FLMRModelForRetrieval`] or a checkpoint folder / hub name.
        dataset: a local M2KR-layout folder or the hub name (see [`load_m2kr_split`]).
        tasks: task names (``"EVQA"``, ``["OKVQA", "Infoseek"]``...).
        output_dir: where run folders and the report go.
        settings: [`EvaluationSettings`].
        image_root: the folder query ``img_path``s are relative to, or one per task (``{"EVQA": ...}``).
        image_processor: a processor, or its name / folder (default: the checkpoint's vision model's).
        model_name: the report's row name (default: the checkpoint's name).

    Example (``m2kr_local`` holds a toy EVQA task: 8 queries, 20 passages):
        >>> results = evaluate_m2kr("my_checkpoint", "m2kr_local", ["EVQA"], "runs",
        ...                         EvaluationSettings(ks=[1, 5]), show_progress=False)
        >>> result = results[0]
        >>> result.task, result.num_queries, result.num_passages, sorted(result.metrics)
        ('EVQA', 8, 20, ['Pseudo Recall@1', 'Pseudo Recall@5', 'Recall@1', 'Recall@5'])
        >>> sorted(path.name for path in Path("runs").iterdir())
        ['EVQA_test', 'report.json', 'report.md']

    A published checkpoint on M2KR from the hub (not run by the tests):
        >>> results = evaluate_m2kr(
        ...     "LinWeizheDragon/PreFLMR_ViT-B", M2KR_HUB_NAME, ["EVQA"], "runs/PreFLMR_ViT-B",
        ...     image_root="/data/EVQA/images", image_processor="openai/clip-vit-base-patch32",
        ... )  # doctest: +SKIP
    """
    settings = settings or EvaluationSettings()
    if not isinstance(model, FLMRModelForRetrieval):
        model_name = model_name or Path(str(model)).name
        model = FLMRModelForRetrieval.from_pretrained(model)
    model_name = model_name or Path(str(getattr(model.config, "_name_or_path", "") or "model")).name
    processor = resolve_image_processor(model.config, image_processor)
    results = []
    for task in [tasks] if isinstance(tasks, str) else list(tasks):
        data = load_m2kr_split(dataset, task, settings.split, settings.revision)
        root = image_root.get(task) if isinstance(image_root, Mapping) else image_root
        results.append(
            evaluate_task(
                model, data, output_dir, settings, root, processor, model_name, show_progress=show_progress
            )
        )
        write_report(results, output_dir)
    return results


def evaluate_task(
    model: FLMRModelForRetrieval,
    data: M2KRSplit,
    output_dir: str | os.PathLike,
    settings: EvaluationSettings,
    image_root: str | os.PathLike | None = None,
    image_processor: Any = None,
    model_name: str = "model",
    show_progress: bool = True,
) -> TaskResult:
    """Evaluate one loaded task split (see [`evaluate_m2kr`]); resumes a run left in its folder.

    Example:
        >>> data = load_m2kr_split("m2kr_local", "EVQA", "test")
        >>> result = evaluate_task(model, data, "runs", EvaluationSettings(ks=[1, 5]), show_progress=False)
        >>> result.metrics["Recall@5"] >= result.metrics["Recall@1"], Path(result.rankings_path).parent.name
        (True, 'EVQA_test')
    """
    run_dir = Path(output_dir) / f"{data.task}_{data.split}"
    queries = data.queries
    if settings.max_queries is not None:
        queries = queries.select(range(min(settings.max_queries, len(queries))))
    pseudo_recall = settings.computes_pseudo_recall(data.task)
    if pseudo_recall and "answers" not in queries.column_names:
        raise M2KRDataError(f"{data.task}_data/{data.split} has no 'answers' column for Pseudo Recall")
    state = _run_state(model, data, len(queries), settings, image_root, model_name)
    if settings.overwrite:
        shutil.rmtree(run_dir, ignore_errors=True)
    finished = _finished_result(run_dir, state)
    if finished is not None:
        return finished
    _start_or_resume(run_dir, state)

    started = time.perf_counter()
    index = _passage_index(model, data, run_dir, settings, image_root, image_processor, show_progress)
    indexed = time.perf_counter()
    passage_positions = _passage_positions(index, data)
    _search_parts(model, index, queries, run_dir, settings, image_root, image_processor, show_progress)
    searched = time.perf_counter()

    rankings_path = run_dir / "rankings.jsonl"
    metrics = _score_rankings(
        run_dir, queries, data, passage_positions, settings.ks, pseudo_recall, rankings_path
    )
    result = TaskResult(
        task=data.task,
        split=data.split,
        model=model_name,
        metrics=metrics,
        num_queries=len(queries),
        num_passages=len(data.passages),
        seconds={"index": round(indexed - started, 3), "search": round(searched - indexed, 3)},
        rankings_path=str(rankings_path),
    )
    _write_json(run_dir / "metrics.json", {**result.to_dict(), "run": state})
    shutil.rmtree(run_dir / "parts", ignore_errors=True)
    return result


# -----------------------------------------------------------------------------------------------
# run state
# -----------------------------------------------------------------------------------------------
def _run_state(
    model: FLMRModelForRetrieval,
    data: M2KRSplit,
    num_queries: int,
    settings: EvaluationSettings,
    image_root: str | os.PathLike | None,
    model_name: str,
) -> dict[str, Any]:
    """Everything the saved rankings depend on; a resumed run must match it."""
    return {
        "task": data.task,
        "split": data.split,
        "model": model_name,
        "encoder_digest": encoder_identity(model).digest,
        "num_queries": num_queries,
        "num_passages": len(data.passages),
        "ks": list(settings.ks),
        "queries_per_part": settings.queries_per_part,
        "search": _search_description(settings),
        "nbits": settings.nbits,
        "doc_maxlen": settings.doc_maxlen,
        "image_root": None if image_root is None else os.fspath(image_root),
    }


def _search_description(settings: EvaluationSettings) -> dict[str, Any]:
    assert settings.search is not None  # set by EvaluationSettings.__post_init__
    return {"exact": True} if settings.search.exact else settings.search.to_options()


def _finished_result(run_dir: Path, state: dict[str, Any]) -> TaskResult | None:
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    if saved.pop("run") != state:
        raise EvaluationStateError(
            f"{run_dir} holds a finished run with other settings or another checkpoint; "
            "use another output folder or overwrite it"
        )
    return TaskResult(**saved)


def _start_or_resume(run_dir: Path, state: dict[str, Any]) -> None:
    manifest = run_dir / "run.json"
    if manifest.is_file():
        if json.loads(manifest.read_text()) != state:
            raise EvaluationStateError(
                f"{run_dir} holds an unfinished run with other settings or another checkpoint "
                f"({manifest}); use another output folder or overwrite it"
            )
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(manifest, state)


def _write_json(path: Path, value: Any) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(value, indent=1))
    os.replace(temporary, path)


# -----------------------------------------------------------------------------------------------
# indexing
# -----------------------------------------------------------------------------------------------
def _passage_index(
    model: FLMRModelForRetrieval,
    data: M2KRSplit,
    run_dir: Path,
    settings: EvaluationSettings,
    image_root: str | os.PathLike | None,
    image_processor: Any,
    show_progress: bool,
) -> Index:
    root = Path(settings.index_root) if settings.index_root is not None else run_dir
    path = root / f"{data.task}_{data.split}_passages.nbits={settings.nbits}"
    if path.is_dir() and not settings.reindex:
        index = Index.load(path)
        if not index.encoder.same_as(encoder_identity(model)):
            raise EvaluationStateError(
                f"the index at {path} was built with another checkpoint; rebuild it (reindex) or use another folder"
            )
        return index
    retriever = Retriever(
        model, image_processor, device=settings.device, batch_size=settings.indexing_batch_size
    )
    return retriever.index(
        _passage_collection(data, model),
        path,
        nbits=settings.nbits,
        overwrite=True,
        image_root=image_root,
        doc_maxlen=settings.doc_maxlen,
        show_progress=show_progress,
    )


def _passage_collection(data: M2KRSplit, model: FLMRModelForRetrieval) -> list[dict[str, Any]]:
    columns = ["passage_id", "passage_content"]
    # Passage images (image corpora such as CC) count only for models that encode document images.
    with_images = "img_path" in data.passages.column_names and bool(
        model.config.use_vision_encoder and model.config.context_concat_output_from_vision_encoder
    )
    rows = data.passages.select_columns(columns + (["img_path"] if with_images else [])).to_list()
    return [
        {"id": str(row["passage_id"]), "text": row["passage_content"], "image_path": row.get("img_path")}
        for row in rows
    ]


def _passage_positions(index: Index, data: M2KRSplit) -> list[int]:
    """The passages-table row of every index pid (checks the index holds exactly this corpus)."""
    row_of_id = {str(pid): row for row, pid in enumerate(column(data.passages, "passage_id"))}
    if index.num_documents != len(row_of_id):
        raise EvaluationStateError(
            f"the index at {index.path} holds {index.num_documents} passages, "
            f"{data.task}_passages/{data.split}_passages has {len(row_of_id)}: rebuild it (reindex)"
        )
    positions = []
    for pid in range(index.num_documents):
        stored_id = index.document(pid).id
        if stored_id not in row_of_id:
            raise EvaluationStateError(
                f"the index at {index.path} holds passage {stored_id!r}, which is not in "
                f"{data.task}_passages/{data.split}_passages: rebuild it (reindex)"
            )
        positions.append(row_of_id[stored_id])
    return positions


# -----------------------------------------------------------------------------------------------
# querying
# -----------------------------------------------------------------------------------------------


def _search_parts(
    model: FLMRModelForRetrieval,
    index: Index,
    queries: Any,
    run_dir: Path,
    settings: EvaluationSettings,
    image_root: str | os.PathLike | None,
    image_processor: Any,
    show_progress: bool,
) -> None:
    """Encode and search every block of queries whose part file is not written yet."""
    parts_dir = run_dir / "parts"
    parts_dir.mkdir(exist_ok=True)
    block = settings.queries_per_part
    starts = range(0, len(queries), block)
    pending = [start for start in starts if not _part_path(parts_dir, start // block).is_file()]
    if not pending:
        return
    model.to(settings.device).eval()
    encoder = QueryEncoder(model, image_processor, settings.query_batch_size)
    searcher = _searcher(index, settings)
    mask_token = model.config.mask_instruction_token
    with tqdm(
        total=len(queries),
        initial=len(queries) - sum(min(block, len(queries) - s) for s in pending),
        desc=f"searching {run_dir.name}",
        unit="query",
        disable=not show_progress,
    ) as bar:
        for start in pending:
            rows = queries.select(range(start, min(start + block, len(queries)))).to_list()
            texts = [row_query_text(row, mask_token) for row in rows]
            images = (
                [query_image(row.get("img_path"), image_root) for row in rows] if image_processor else None
            )
            hits = searcher.search(encoder.encode(texts, images=images), k=max(settings.ks))
            lines = [
                {
                    "question_id": row["question_id"],
                    "retrieved": [[h.pid, round(h.score, 4)] for h in query_hits],
                }
                for row, query_hits in zip(rows, hits, strict=True)
            ]
            _write_part(_part_path(parts_dir, start // block), lines)
            bar.update(len(rows))


def _searcher(index: Index, settings: EvaluationSettings) -> Searcher:
    return build_searcher(index, settings.search, device=settings.device)


def _part_path(parts_dir: Path, number: int) -> Path:
    return parts_dir / f"part_{number:05d}.jsonl"


def _write_part(path: Path, lines: list[dict[str, Any]]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(line) + "\n" for line in lines)
    os.replace(temporary, path)  # a part is either complete or absent


# -----------------------------------------------------------------------------------------------
# scoring
# -----------------------------------------------------------------------------------------------
def _score_rankings(
    run_dir: Path,
    queries: Any,
    data: M2KRSplit,
    passage_positions: list[int],
    ks: Sequence[int],
    pseudo_recall: bool,
    rankings_path: Path,
) -> dict[str, float]:
    """Per-query metrics into ``rankings.jsonl`` (pids replaced by passage ids); returns the averages."""
    passage_ids = column(data.passages, "passage_id")
    passage_texts = column(data.passages, "passage_content") if pseudo_recall else None
    columns = ["question_id", "pos_item_ids"] + (["answers"] if pseudo_recall else [])
    judgements = queries.select_columns(columns).to_list()
    per_query = []
    temporary = rankings_path.with_name(f".{rankings_path.name}.tmp")
    with open(temporary, "w", encoding="utf-8") as out:
        for position, line in enumerate(_read_parts(run_dir / "parts")):
            if line["question_id"] != judgements[position]["question_id"]:
                raise EvaluationStateError(
                    f"{run_dir}/parts does not follow the query order: remove the run folder"
                )
            rows = [passage_positions[pid] for pid, _ in line["retrieved"]]
            retrieved_ids = [str(passage_ids[row]) for row in rows]
            metrics = _query_metrics(retrieved_ids, rows, judgements[position], passage_texts, ks)
            per_query.append(metrics)
            retrieved = [
                [pid, score] for pid, (_, score) in zip(retrieved_ids, line["retrieved"], strict=True)
            ]
            out.write(
                json.dumps({"question_id": line["question_id"], **metrics, "retrieved": retrieved}) + "\n"
            )
    os.replace(temporary, rankings_path)
    return mean_metrics(per_query)


def column(dataset: Any, name: str) -> list[Any]:
    """A column of a ``datasets.Dataset`` as a Python list (indexing a lazy column per row is slow)."""
    return dataset.select_columns([name]).to_dict()[name]


def _query_metrics(
    retrieved_ids: list[str],
    rows: list[int],
    judgement: dict[str, Any],
    passage_texts: list[str] | None,
    ks: Sequence[int],
) -> dict[str, float]:
    metrics = {
        metric_name("Recall", k): hit
        for k, hit in recall_at_ks(retrieved_ids, judgement["pos_item_ids"] or [], ks).items()
    }
    if passage_texts is not None:
        answers = judgement.get("answers") or []
        answers = [answers] if isinstance(answers, str) else answers
        texts = [passage_texts[row] for row in rows]
        metrics.update(
            {
                metric_name("Pseudo Recall", k): hit
                for k, hit in pseudo_recall_at_ks(texts, answers, ks).items()
            }
        )
    return metrics


def _read_parts(parts_dir: Path) -> Iterator[dict[str, Any]]:
    for path in sorted(parts_dir.glob("part_*.jsonl")):
        with open(path, encoding="utf-8") as handle:
            yield from (json.loads(line) for line in handle)


__all__ = [
    "DEFAULT_KS",
    "EvaluationSettings",
    "EvaluationStateError",
    "TaskResult",
    "evaluate_m2kr",
    "evaluate_task",
    "original_plaid_settings",
    "original_search_settings",
]
