"""Data flows one way: collection -> encoder -> embeddings -> index -> searcher -> results, with the
applications (serving, distributed, evaluation, training) on top and the command line above them all.

Every ``import flmr...`` in the package, at module level or inside a function, is checked against
the stage order below: a stage imports only its own stage and the ones before it.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "flmr"

# Shared helpers every stage may use (no stage of the data flow).
BASE = {"__init__", "__main__", "_lazy", "_deprecation", "errors", "extras", "hub", "runtime", "data"}
# Each stage may import the stages listed before it; stages on one line import neither one another.
STAGES = [
    {"model"},
    {"encoding"},
    {"index"},
    {"search"},
    {"retrieval"},
    {"serving"},
    {"distributed"},
    {"evaluation", "training"},
    {"cli"},
]
RANK = {stage: rank for rank, names in enumerate(STAGES) for stage in names}


def stage_of(module: str) -> str:
    """The top-level part of ``flmr.<part>...`` (a subpackage or a top-level module)."""
    return module.split(".")[1] if module.count(".") else "__init__"


def is_submodule(name: str) -> bool:
    return (PACKAGE / name / "__init__.py").is_file() or (PACKAGE / f"{name}.py").is_file()


def flmr_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of an flmr module in ``path``, relative ones resolved."""
    package = ".".join(("flmr", *path.relative_to(PACKAGE).with_suffix("").parts[:-1]))
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("flmr.")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            if module == "flmr":  # `from flmr import X`: a submodule, or a name of the top package
                found += [
                    (node.lineno, f"flmr.{alias.name}" if is_submodule(alias.name) else "flmr")
                    for alias in node.names
                ]
            elif module.startswith("flmr."):
                found.append((node.lineno, module))
    return found


def backward_imports() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = stage_of(".".join(("flmr", *path.relative_to(PACKAGE).with_suffix("").parts)))
        if importer in BASE:
            continue
        for line, module in flmr_imports(path):
            imported = stage_of(module)
            if imported in BASE or imported == importer:
                continue
            if imported not in RANK or RANK[imported] >= RANK[importer]:
                problems.append(f"{path.relative_to(PACKAGE)}:{line} ({importer}) imports {module}")
    return problems


def test_every_stage_imports_only_earlier_stages() -> None:
    assert backward_imports() == []


def test_every_package_has_a_stage() -> None:
    packages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    assert packages | modules <= set(RANK) | BASE


@pytest.mark.parametrize(
    ("importer", "module", "allowed"),
    [
        ("index", "flmr.retrieval.retriever", False),
        ("distributed", "flmr.cli.exit_codes", False),
        ("training", "flmr.evaluation.metrics", False),
        ("evaluation", "flmr.training.data", False),
        ("model", "flmr.encoding", False),
        ("index", "flmr.encoding.identity", True),
        ("cli", "flmr.distributed.cluster", True),
    ],
)
def test_the_rule_tells_backward_imports_apart(importer, module, allowed) -> None:
    imported = stage_of(module)
    assert (imported == importer or RANK[imported] < RANK[importer]) is allowed


def test_relative_and_function_level_imports_are_found() -> None:
    modules = {module for _, module in flmr_imports(PACKAGE / "cli" / "commands.py")}
    # `from .ray import index_on_ray` runs inside a command handler; `from .exit_codes` at the top
    assert {"flmr.cli.ray", "flmr.cli.exit_codes", "flmr.index"} <= modules
