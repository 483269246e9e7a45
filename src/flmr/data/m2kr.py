"""Reading M2KR-style data: a task's queries (``<TASK>_data``) and passages (``<TASK>_passages``).

A dataset source is either the hub name
(``BByrneLab/multi_task_multi_modal_knowledge_retrieval_benchmark_M2KR``) or a local folder laid out
in one of two ways, per config folder:

* ``datasets`` ``save_to_disk`` output: ``<root>/<TASK>_data/`` holding a ``DatasetDict`` (splits
  ``train``/``valid``/``test``) and ``<root>/<TASK>_passages/`` holding one with splits
  ``<split>_passages``; a single split saved alone at ``<root>/<TASK>_data/<split>/`` also works;
* parquet files, as in a download of the hub repository: ``<root>/<TASK>_data/<split>-*.parquet`` (or
  ``<split>.parquet``) and ``<root>/<TASK>_passages/<split>_passages-*.parquet``.
"""

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flmr.errors import FLMRError
from flmr.extras import require_extra
from flmr.hub import hub_endpoint, hub_offline, hub_reachable

if TYPE_CHECKING:
    import datasets

M2KR_HUB_NAME = "BByrneLab/multi_task_multi_modal_knowledge_retrieval_benchmark_M2KR"
M2KR_TASKS = ("WIT", "IGLUE", "KVQA", "CC", "MSMARCO", "OVEN", "LLaVA", "OKVQA", "Infoseek", "EVQA")
PSEUDO_RECALL_TASKS = frozenset({"EVQA", "OKVQA", "Infoseek"})
# ``instruction`` and ``answers`` are optional: older M2KR revisions lack the first, some tasks the second.
QUERY_COLUMNS = ("question_id", "question", "img_path", "pos_item_ids")
PASSAGE_COLUMNS = ("passage_id", "passage_content")


class M2KRDataError(FLMRError, ValueError):
    """A task's data is missing or lacks the columns evaluation and training need (defined with the
    reader both stages use)."""


@dataclass
class M2KRSplit:
    """One task split: its queries and the passage corpus that split is evaluated against."""

    task: str
    split: str
    queries: "datasets.Dataset"
    passages: "datasets.Dataset"


def load_m2kr_split(
    source: str | os.PathLike, task: str, split: str = "test", revision: str | None = None
) -> M2KRSplit:
    """The queries of ``split`` and the ``<split>_passages`` corpus of ``task``.

    Args:
        source: a local folder (see the module docstring) or a hub dataset name.
        task: the task prefix of the configs, e.g. ``"EVQA"``.
        split: ``"train"``, ``"valid"`` or ``"test"``.
        revision: hub revision to pin (counts drift between revisions of M2KR).

    Example:
        >>> data = load_m2kr_split("m2kr_local", "EVQA", "test")  # a local folder, parquet layout
        >>> data.queries[0]["question"], len(data.passages)
        ('what is vim?', 20)
    """
    queries = load_m2kr_config(source, f"{task}_data", split, revision)
    passages = load_m2kr_config(source, f"{task}_passages", f"{split}_passages", revision)
    _require_columns(queries, QUERY_COLUMNS, f"{task}_data/{split}")
    _require_columns(passages, PASSAGE_COLUMNS, f"{task}_passages/{split}_passages")
    return M2KRSplit(task, split, queries, passages)


def load_m2kr_config(
    source: str | os.PathLike, config: str, split: str, revision: str | None = None
) -> "datasets.Dataset":
    """One split of one config (``"EVQA_data"``, ``"EVQA_passages"``...) from a local folder or the hub."""
    root = Path(source)
    if root.is_dir():
        return _load_local(root / config, split)
    datasets = _datasets()
    if not hub_offline() and not hub_reachable():
        raise M2KRDataError(
            f"{source} is no local folder, and the hub at {hub_endpoint()} cannot be reached: give a local "
            "copy (save_to_disk or parquet folders), or set HF_HUB_OFFLINE=1 to read the datasets cache"
        )
    try:
        return datasets.load_dataset(str(source), config, split=split, revision=revision)
    except (ValueError, OSError) as error:
        raise M2KRDataError(
            f"{source} is no local folder, and loading it from the hub (config {config!r}, split {split!r}) "
            f"failed: {error}"
        ) from error


def _datasets() -> Any:
    """The ``datasets`` package (the ``evaluation`` extra), imported when data is read: it takes seconds."""
    return require_extra("datasets", "evaluation", "reading M2KR data")


def _load_local(config_dir: Path, split: str) -> "datasets.Dataset":
    datasets = _datasets()

    if not config_dir.is_dir():
        raise M2KRDataError(f"{config_dir.parent} has no {config_dir.name}/ folder")
    if (config_dir / "dataset_dict.json").is_file():
        splits = datasets.load_from_disk(str(config_dir))
        if split not in splits:
            raise M2KRDataError(f"{config_dir} has no split {split!r} (it has {sorted(splits)})")
        return splits[split]
    if (config_dir / split / "state.json").is_file():
        return datasets.load_from_disk(str(config_dir / split))
    files = sorted(glob.glob(str(config_dir / f"{split}-*.parquet"))) or sorted(
        glob.glob(str(config_dir / f"{split}.parquet"))
    )
    if files:
        return datasets.load_dataset("parquet", data_files=files, split="train")
    raise M2KRDataError(
        f"no split {split!r} in {config_dir}: expected a save_to_disk DatasetDict, a saved split folder "
        f"{split}/, or parquet files {split}-*.parquet"
    )


def _require_columns(dataset: "datasets.Dataset", columns: tuple[str, ...], name: str) -> None:
    missing = [column for column in columns if column not in dataset.column_names]
    if missing:
        raise M2KRDataError(f"{name} lacks the column(s) {missing}; it has {dataset.column_names}")
