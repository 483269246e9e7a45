"""Reports across tasks: ``report.json`` and a Markdown table laid out like the seed README's."""

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from flmr.data.m2kr import M2KR_TASKS

# The columns of the seed README's table, per task.
HEADLINE_METRICS: dict[str, tuple[str, ...]] = {
    "WIT": ("Recall@10",),
    "IGLUE": ("Recall@1",),
    "KVQA": ("Recall@5",),
    "MSMARCO": ("Recall@5",),
    "OVEN": ("Recall@5",),
    "LLaVA": ("Recall@1",),
    "EVQA": ("Recall@5", "Pseudo Recall@5"),
    "OKVQA": ("Recall@5", "Pseudo Recall@5"),
    "Infoseek": ("Recall@5", "Pseudo Recall@5"),
}


def _as_dict(result: Any) -> dict[str, Any]:
    return result.to_dict() if hasattr(result, "to_dict") else dict(result)


def markdown_report(results: Iterable[Any]) -> str:
    """Two Markdown tables: the headline metrics (one row per model, like the seed's) and every metric.

    ``results`` are [`TaskResult`]s or their dicts (``metrics.json`` files).

    Example:
        >>> print(markdown_report([{"task": "KVQA", "split": "test", "model": "m", "num_queries": 2,
        ...     "metrics": {"Recall@1": 0.5, "Recall@5": 1.0}}]).splitlines()[2])
        | m | 1.000 |
    """
    rows = [_as_dict(result) for result in results]
    tasks = _ordered_tasks({row["task"] for row in rows})
    models = list(dict.fromkeys(row["model"] for row in rows))
    by_key = {(row["model"], row["task"]): row["metrics"] for row in rows}
    columns = [(task, name) for task in tasks for name in _headline(task, rows)]
    lines = [
        "| Model | " + " | ".join(f"{task} {name}" for task, name in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for model in models:
        cells = [_cell(by_key.get((model, task), {}).get(name)) for task, name in columns]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines += ["", *_full_table(rows, tasks)]
    return "\n".join(lines) + "\n"


def _headline(task: str, rows: list[dict[str, Any]]) -> tuple[str, ...]:
    if task in HEADLINE_METRICS:
        return HEADLINE_METRICS[task]
    names = [name for row in rows if row["task"] == task for name in row["metrics"]]
    return (names[0],) if names else ()


def _full_table(rows: list[dict[str, Any]], tasks: list[str]) -> list[str]:
    names = list(dict.fromkeys(name for row in rows for name in row["metrics"]))
    names.sort(key=lambda name: (name.startswith("Pseudo"), int(name.rsplit("@", 1)[1])))
    lines = [
        "| Model | Task | Split | Queries | " + " | ".join(names) + " |",
        "|---" * (len(names) + 4) + "|",
    ]
    for row in sorted(rows, key=lambda row: (tasks.index(row["task"]), row["model"])):
        cells = [_cell(row["metrics"].get(name)) for name in names]
        lines.append(
            f"| {row['model']} | {row['task']} | {row['split']} | {row['num_queries']} | "
            + " | ".join(cells)
            + " |"
        )
    return lines


def _ordered_tasks(tasks: set[str]) -> list[str]:
    known = [task for task in M2KR_TASKS if task in tasks]
    return known + sorted(tasks - set(known))


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def write_report(results: Sequence[Any], output_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``report.json`` (every result) and ``report.md`` (the tables) into ``output_dir``.

    Example:
        >>> rows = [{"task": "KVQA", "split": "test", "model": "m", "num_queries": 2,
        ...          "metrics": {"Recall@1": 0.5, "Recall@5": 1.0}}]
        >>> json_path, markdown_path = write_report(rows, "runs/m")
        >>> json_path.name, markdown_path.read_text() == markdown_report(rows)
        ('report.json', True)
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    rows = [_as_dict(result) for result in results]
    json_path, markdown_path = output_dir / "report.json", output_dir / "report.md"
    json_path.write_text(json.dumps(rows, indent=1))
    markdown_path.write_text(markdown_report(rows))
    return json_path, markdown_path


def collect_results(folders: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Every task result (``<TASK>_<split>/metrics.json``) found under ``folders``, e.g. one folder per model.

    Example:
        >>> from flmr.evaluation import EvaluationSettings, evaluate_m2kr
        >>> _ = evaluate_m2kr("my_checkpoint", "m2kr_local", "EVQA", "runs/tiny", EvaluationSettings(ks=[1]),
        ...                   show_progress=False)
        >>> rows = collect_results(["runs/tiny", "runs/another_model"])  # a folder per model
        >>> [(row["model"], row["task"]) for row in rows]
        [('my_checkpoint', 'EVQA')]
        >>> paths = write_report(rows, "runs")  # one table, a row per model
    """
    rows = []
    for folder in folders:
        for path in sorted(Path(folder).glob("*/metrics.json")):
            row = json.loads(path.read_text())
            row.pop("run", None)
            rows.append(row)
    return rows
