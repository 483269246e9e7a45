"""M2KR evaluation: Recall@K and Pseudo Recall@K of a checkpoint on M2KR-style tasks.

Example (``m2kr_local`` is a folder in M2KR's layout, here a toy EVQA task; ``image_root`` is the
folder the queries' ``img_path`` are relative to):
    >>> from flmr.evaluation import EvaluationSettings, evaluate_m2kr
    >>> results = evaluate_m2kr(
    ...     "my_checkpoint", "m2kr_local", ["EVQA"], "runs/tiny",
    ...     settings=EvaluationSettings(ks=[1, 5, 10]), image_root="/data/EVQA/images", show_progress=False,
    ... )
    >>> [(r.task, r.split, r.num_queries) for r in results]
    [('EVQA', 'test', 8)]
"""

from flmr._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(
        (
            "M2KR_HUB_NAME",
            "M2KR_TASKS",
            "PSEUDO_RECALL_TASKS",
            "M2KRSplit",
            "load_m2kr_config",
            "load_m2kr_split",
        ),
        "flmr.data.m2kr",
    ),
    **dict.fromkeys(
        (
            "DEFAULT_KS",
            "first_answer_rank",
            "first_relevant_rank",
            "mean_metrics",
            "pseudo_recall_at_ks",
            "recall_at_ks",
        ),
        "flmr.search.metrics",
    ),
    **dict.fromkeys(
        (
            "query_image",
            "query_text",
        ),
        ".queries",
    ),
    **dict.fromkeys(
        (
            "HEADLINE_METRICS",
            "collect_results",
            "markdown_report",
            "write_report",
        ),
        ".report",
    ),
    **dict.fromkeys(
        (
            "EvaluationSettings",
            "TaskResult",
            "evaluate_m2kr",
            "evaluate_task",
            "original_plaid_settings",
            "original_search_settings",
        ),
        ".runner",
    ),
    **dict.fromkeys(
        ("EvaluationError", "EvaluationSettingsError", "EvaluationStateError", "M2KRDataError"), ".errors"
    ),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, extra="evaluation")

__all__ = [
    "DEFAULT_KS",
    "HEADLINE_METRICS",
    "M2KR_HUB_NAME",
    "M2KR_TASKS",
    "PSEUDO_RECALL_TASKS",
    "EvaluationError",
    "EvaluationSettings",
    "EvaluationSettingsError",
    "EvaluationStateError",
    "M2KRDataError",
    "M2KRSplit",
    "TaskResult",
    "collect_results",
    "evaluate_m2kr",
    "evaluate_task",
    "first_answer_rank",
    "first_relevant_rank",
    "load_m2kr_config",
    "load_m2kr_split",
    "markdown_report",
    "mean_metrics",
    "original_plaid_settings",
    "original_search_settings",
    "pseudo_recall_at_ks",
    "query_image",
    "query_text",
    "recall_at_ks",
    "write_report",
]
