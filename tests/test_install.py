"""What a core install (`pip install flmr`, no extras) gives: a fast `import flmr`, the main job, and
errors that name the extra for each optional feature. Extras are hidden from a fresh interpreter by an
import hook, as if they were not installed."""

import json

import pytest

from helpers import FLMR_TINY, run_python

# the packages each extra installs, as the code imports them
EXTRA_PACKAGES = {
    "hybrid": "bm25s",
    "serve": "fastapi",
    "evaluation": "datasets",
    "training": "pytorch_lightning",
    "ray": "ray",
}

BLOCK_EXTRAS = f"""
import importlib.abc, sys

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {sorted(set(EXTRA_PACKAGES.values()) | {"uvicorn"})!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)

sys.meta_path.insert(0, NotInstalled())
"""


def test_import_flmr_loads_neither_torch_nor_transformers() -> None:
    result = run_python(
        "import sys, json, flmr\n"
        "print(json.dumps([flmr.__version__, 'torch' in sys.modules, 'transformers' in sys.modules]))"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["0.1.0", False, False]


def test_the_public_names_load_on_first_use() -> None:
    import flmr
    import flmr.model

    assert set(flmr.model.__all__) <= set(flmr.__all__)
    assert flmr.FLMRModelForRetrieval is flmr.model.FLMRModelForRetrieval
    assert {"Retriever", "create_searcher", "FLMRConfig"} <= set(dir(flmr))
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        _ = flmr.Nothing


@pytest.mark.parametrize(
    "package", ["flmr", "flmr.search", "flmr.evaluation", "flmr.training", "flmr.serving", "flmr.distributed"]
)
def test_every_lazily_exported_name_resolves(package) -> None:
    """The lazy name tables repeat the submodules' names: each one must load (all extras installed)."""
    import importlib

    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []


def test_without_extras_the_core_indexes_and_searches_and_each_feature_names_its_extra(tmp_path) -> None:
    code = (
        BLOCK_EXTRAS
        + f"""
import json
import flmr
from flmr.extras import MissingExtraError

retriever = flmr.Retriever.from_pretrained({str(FLMR_TINY)!r})
index = retriever.index(["vim is a text editor", "chess engine", "a web server"], {str(tmp_path / "idx")!r},
                        show_progress=False)
hits = retriever.search("which editor?", index, k=2)[0]
errors = {{}}

def record(extra, call):
    try:
        call()
    except MissingExtraError as error:
        errors[extra] = str(error)

record("hybrid", lambda: retriever.search("editor", index, k=2, hybrid_weight=0.5))
record("serve", lambda: flmr.serving.create_app)
record("evaluation", lambda: flmr.evaluation.load_m2kr_config("no/such_dataset", "EVQA_data", "test"))
record("training", lambda: flmr.training.finetune)
record("ray", lambda: flmr.distributed.connect("local"))
print(json.dumps({{"hits": len(hits), "errors": errors}}))
"""
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.splitlines()[-1])
    assert outcome["hits"] == 2
    assert set(outcome["errors"]) == set(EXTRA_PACKAGES)
    for extra, message in outcome["errors"].items():
        assert f'pip install "flmr[{extra}]"' in message, message


def test_all_extra_installs_every_other_extra() -> None:
    import tomllib

    from helpers import REPO_ROOT

    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["all"] == [f"flmr[{','.join(sorted(EXTRA_PACKAGES))}]"]
    assert "flmr[all]" in extras["dev"]
