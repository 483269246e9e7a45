"""Test fixtures and the test tiers; plain helpers live in helpers.py."""

import os
from pathlib import Path

import pytest
import torch

# Tests never reach the model hub: everything they load is local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import flmr  # noqa: E402
from helpers import minilm_folder  # noqa: E402

# The tiers (markers registered in pyproject.toml), set here by folder and fixture rather than on each
# test: `ray` (an in-process Ray cluster), `browser` (headless Chromium), `slow` (a test, or a module
# whose tests share a costly fixture, that took about a second or more on 2 busy cores: subprocess
# start-up and hub-timeout checks, concurrent writers, multi-process losses, the fidelity comparisons,
# trainings, MiniLM-encoded collections). Every other test, docstring examples included, is `fast`:
# `python -m pytest -m fast` runs them.
BROWSER_FIXTURES = {"page", "preflmr_page"}
SLOW_MODULES = {
    "test_cli_startup.py",
    "test_concurrency.py",
    "test_distributed_loss.py",
    "test_explain.py",
    "test_fidelity.py",
    "test_filters.py",
    "test_finetune.py",
    "test_hybrid.py",
    "test_kmeans.py",
    "test_precision.py",
}
SLOW_TESTS = {
    "tests/cli/test_flmr_command.py::test_the_flmr_command_serves_an_index",
    "tests/index/test_codec.py::test_more_bits_reconstruct_better",
    "tests/index/test_codec.py::test_packing_matches_per_dimension_bucket_lookup",
    "tests/index/test_writer.py::test_existing_index_is_not_overwritten_by_default",
    "tests/model/test_offline_loading.py::test_save_pretrained_writes_the_image_processor",
    "tests/model/test_scoring_and_loss.py::test_forward_trains_every_module_it_uses",
    "tests/retrieval/test_retrieval_api.py::test_checkpoint_path_indexes_like_the_model_object",
    "tests/search/test_exact.py::test_exact_over_an_index_skips_deleted_and_returns_documents",
    "tests/serving/test_dynamic_batching.py::test_concurrent_http_searches_share_forward_passes",
    "tests/serving/test_service_robustness.py::test_a_stalled_request_body_gets_408",
    "tests/model/test_offline_loading.py::test_an_image_query_on_a_local_checkpoint_makes_no_network_attempt",
    "tests/model/test_offline_loading.py::test_naming_a_hub_processor_with_the_hub_unreachable_fails_at_once",
    "tests/search/test_plaid.py::test_recall_against_exact_with_mask_expanded_queries",
    "tests/test_install.py::test_without_extras_the_core_indexes_and_searches_and_each_feature_names_its_extra",
}


def tier_markers(item: pytest.Item) -> set[str]:
    """The tier markers of one collected test (or docstring example); a test (or its parameter) may
    also carry ``slow``, ``ray`` or ``browser`` itself."""
    path = Path(item.path)
    names = set(getattr(item, "fixturenames", ()))
    markers = {name for name in ("slow", "ray", "browser") if item.get_closest_marker(name)}
    if "distributed" in path.parts or "ray_cluster" in names:
        markers.add("ray")
    if names & BROWSER_FIXTURES:
        markers.add("browser")
    if path.name in SLOW_MODULES or item.nodeid.split("[")[0] in SLOW_TESTS:
        markers.add("slow")
    return markers or {"fast"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for name in sorted(tier_markers(item)):
            item.add_marker(name)


@pytest.fixture(scope="session")
def query_tokenizer() -> flmr.FLMRQueryEncoderTokenizer:
    return flmr.FLMRQueryEncoderTokenizer.from_pretrained(minilm_folder())


@pytest.fixture(scope="session")
def context_tokenizer() -> flmr.FLMRContextEncoderTokenizer:
    return flmr.FLMRContextEncoderTokenizer.from_pretrained(minilm_folder())


@pytest.fixture
def make_model(query_tokenizer, context_tokenizer):
    """Build a tiny, randomly initialised model (seeded) in eval mode."""

    def build(config: flmr.FLMRConfig, seed: int = 0) -> flmr.FLMRModelForRetrieval:
        torch.manual_seed(seed)
        model = flmr.FLMRModelForRetrieval(
            config, query_tokenizer=query_tokenizer, context_tokenizer=context_tokenizer
        )
        return model.eval()

    return build
