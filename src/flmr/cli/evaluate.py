"""``flmr evaluate``: the command-line front of [`evaluate_m2kr`]."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from flmr.data.m2kr import M2KR_HUB_NAME
from flmr.evaluation.report import collect_results, write_report
from flmr.search.metrics import DEFAULT_KS

from .exit_codes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from .search_options import add_search_options, search_settings_from_args

if TYPE_CHECKING:  # the runner imports torch and transformers: only when evaluating
    from flmr.evaluation.runner import EvaluationSettings

EXAMPLES = f"""\
examples:
  # PreFLMR ViT-B on E-VQA test, as the seed's evaluate_all.sh runs it (hub access needed)
  flmr evaluate --checkpoint LinWeizheDragon/PreFLMR_ViT-B --dataset {M2KR_HUB_NAME} \\
      --task EVQA --image-root /data/EVQA/eval_image --image-processor openai/clip-vit-base-patch32 \\
      --output-dir runs/PreFLMR_ViT-B

  # several tasks of a local copy (save_to_disk or parquet folders), one image folder per task
  flmr evaluate --checkpoint saved_models/model_step_2000 --dataset /data/m2kr \\
      --task OKVQA --task Infoseek --image-root OKVQA=/data/coco --image-root Infoseek=/data/infoseek \\
      --ks 1 5 10 --output-dir runs/finetuned

  # one table for several finished runs (one folder per checkpoint)
  flmr evaluate --report runs/PreFLMR_ViT-G runs/PreFLMR_ViT-L runs/PreFLMR_ViT-B --output-dir runs

An interrupted run resumes where it stopped when the same command is run again.
"""


def add_evaluate_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``evaluate`` to the ``flmr`` command's subparsers; its handler is ``args.handler``.

    Example:
        >>> parser = argparse.ArgumentParser(prog="flmr")
        >>> add_evaluate_command(parser.add_subparsers(dest="command"))  # doctest: +ELLIPSIS
        ArgumentParser(...)
        >>> args = parser.parse_args(["evaluate", "--report", "runs/a", "--output-dir", "runs"])
        >>> args.handler(args)  # doctest: +SKIP
    """
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a checkpoint on M2KR tasks (Recall@K, Pseudo Recall@K)",
        description=(
            "Index each task's <split>_passages, encode its queries as the original PreFLMR evaluation does "
            "(instruction ending in ':', the question, the query image or a black 336x336 one), search, and "
            "report Recall@K and, for EVQA/OKVQA/Infoseek, Pseudo Recall@K. Writes per-query rankings, "
            "metrics.json per task, and report.json / report.md."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", help="checkpoint folder or hub name")
    parser.add_argument(
        "--dataset",
        default=M2KR_HUB_NAME,
        help="local folder with <TASK>_data/ and <TASK>_passages/, or a hub dataset name (default: %(default)s)",
    )
    parser.add_argument(
        "--task", action="append", dest="tasks", help="task name, e.g. EVQA (repeat for several)"
    )
    parser.add_argument("--split", default="test", help="query split (default: %(default)s)")
    parser.add_argument("--output-dir", required=True, help="folder for run state, rankings and the report")
    parser.add_argument(
        "--image-root",
        action="append",
        default=[],
        metavar="[TASK=]DIR",
        help="folder the queries' img_path are relative to; TASK=DIR sets it for one task (repeatable)",
    )
    parser.add_argument("--image-processor", help="image processor name or folder (default: the config's)")
    parser.add_argument(
        "--ks", type=int, nargs="+", default=list(DEFAULT_KS), help="K values (default: %(default)s)"
    )
    parser.add_argument(
        "--pseudo-recall",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compute Pseudo Recall@K (default: for EVQA, OKVQA and Infoseek only)",
    )
    parser.add_argument("--nbits", type=int, default=8, choices=(1, 2, 4, 8), help="index bits (default: 8)")
    parser.add_argument("--doc-maxlen", type=int, default=512, help="passage token limit (default: 512)")
    parser.add_argument(
        "--query-batch-size", type=int, default=8, help="queries per forward pass (default: 8)"
    )
    parser.add_argument("--indexing-batch-size", type=int, default=64, help="passages per forward pass")
    parser.add_argument(
        "--queries-per-part", type=int, default=256, help="queries saved together; the unit of resuming"
    )
    parser.add_argument(
        "--index-root", help="folder for passage indexes, shared between runs (default: run folder)"
    )
    parser.add_argument("--reindex", action="store_true", help="rebuild the passage index even if one exists")
    parser.add_argument("--overwrite", action="store_true", help="discard previous runs instead of resuming")
    add_search_options(
        parser,
        "exact MaxSim over all passages instead of PLAID",
        "the original engine's for the largest K, e.g. --candidate-query-vectors text_first_32",
    )
    parser.add_argument("--max-queries", type=int, help="evaluate only the first N queries of each task")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda when available)")
    parser.add_argument("--revision", help="dataset revision to pin on the hub")
    parser.add_argument("--name", help="model name in the report (default: the checkpoint's folder name)")
    parser.add_argument(
        "--report",
        nargs="+",
        metavar="RUN_DIR",
        help="only gather the finished runs in these folders into one report in --output-dir",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(handler=run_evaluate_command)
    return parser


def run_evaluate_command(args: argparse.Namespace) -> int:
    """Run ``flmr evaluate``; returns the exit code (0 ok, 1 runtime error, 2 usage error)."""
    if args.report:
        return _report_only(args.report, args.output_dir)
    usage_error = _usage_error(args)
    if usage_error:
        print(f"flmr evaluate: error: {usage_error}", file=sys.stderr)
        return EXIT_USAGE
    from flmr.evaluation.runner import evaluate_m2kr  # torch and transformers: only when evaluating

    try:
        settings = _settings(args)
        results = evaluate_m2kr(
            args.checkpoint,
            args.dataset,
            args.tasks,
            args.output_dir,
            settings=settings,
            image_root=_image_roots(args.image_root),
            image_processor=args.image_processor,
            model_name=args.name,
            show_progress=not args.no_progress,
        )
    except (OSError, ValueError, RuntimeError) as error:
        print(f"flmr evaluate: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    for result in results:
        seconds = ", ".join(f"{stage} {value:.1f}s" for stage, value in result.seconds.items())
        print(
            f"{result.task} {result.split}: {result.num_queries} queries, {result.num_passages} passages ({seconds})"
        )
    print((Path(args.output_dir) / "report.md").read_text())
    return EXIT_OK


def _usage_error(args: argparse.Namespace) -> str | None:
    if not args.checkpoint:
        return "--checkpoint is required (unless --report)"
    if not args.tasks:
        return "give at least one --task"
    if min(args.ks) < 1:
        return f"--ks must be positive, got {args.ks}"
    if len(args.image_root) > 1 and not all(_is_task_folder_pair(root) for root in args.image_root):
        return "give one --image-root DIR for all tasks, or TASK=DIR per task"
    return None


def _settings(args: argparse.Namespace) -> EvaluationSettings:
    from flmr.evaluation.runner import EvaluationSettings, original_search_settings

    search = search_settings_from_args(args, original_search_settings(max(args.ks)))
    return EvaluationSettings(
        split=args.split,
        ks=args.ks,
        pseudo_recall=args.pseudo_recall,
        nbits=args.nbits,
        doc_maxlen=args.doc_maxlen,
        query_batch_size=args.query_batch_size,
        indexing_batch_size=args.indexing_batch_size,
        queries_per_part=args.queries_per_part,
        search=search,
        max_queries=args.max_queries,
        index_root=args.index_root,
        reindex=args.reindex,
        overwrite=args.overwrite,
        device=args.device or default_device(),
        revision=args.revision,
    )


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _image_roots(values: list[str]) -> str | dict[str, str] | None:
    if not values:
        return None
    if len(values) == 1 and not _is_task_folder_pair(values[0]):
        return values[0]
    return dict(value.split("=", 1) for value in values)


def _is_task_folder_pair(value: str) -> bool:
    """``TASK=DIR``, unless the whole value is an existing folder whose name holds a "="."""
    return "=" in value and not os.path.isdir(value)


def _report_only(folders: list[str], output_dir: str) -> int:
    missing = [folder for folder in folders if not os.path.isdir(folder)]
    if missing:
        print(f"flmr evaluate: error: no such run folder(s): {', '.join(missing)}", file=sys.stderr)
        return EXIT_FAILURE
    rows = collect_results(folders)
    if not rows:
        print(
            f"flmr evaluate: error: no finished task (*/metrics.json) in {', '.join(folders)}",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    _, markdown_path = write_report(rows, output_dir)
    print(markdown_path.read_text())
    return EXIT_OK
