"""The stage order of docs/architecture.md, checked on the source: no subpackage imports
one above it, and each Loihi 2 limit is defined in one module."""

import ast
import pathlib

import snn_compile
from snn_compile.loihi import limits

ROOT = pathlib.Path(snn_compile.__file__).parent
# bottom to top: the stages, then the public API at the package root (which may use every
# stage), then the command line over the API
ORDER = ["errors", "loihi", "data", "models", "export", "compiler", "hw_sim", "benchmarks",
         "api", "cli", "__main__"]
RANK = {**{s: i for i, s in enumerate(ORDER)}, "__init__": ORDER.index("api")}
# the export stage is callable as the API function of the same name (see its docstring)
ALLOWED = {("export/__init__.py", "api")}


def _modules():
    for f in sorted(ROOT.rglob("*.py")):
        rel = f.relative_to(ROOT)
        stage = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        yield rel.as_posix(), stage, ast.parse(f.read_text())


def _imported_stages(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for n in names:
            parts = n.split(".")
            if parts[0] == "snn_compile":
                yield (parts[1] if len(parts) > 1 else "__init__"), node.lineno


def test_every_module_belongs_to_a_stage():
    stages = {stage for _, stage, _ in _modules()}
    assert stages <= set(RANK), stages - set(RANK)


def test_no_stage_imports_one_above_it():
    upward = []
    for rel, stage, tree in _modules():
        for target, line in _imported_stages(tree):
            if (rel, target) in ALLOWED:
                continue
            if RANK[target] > RANK[stage]:
                upward.append(f"{rel}:{line} ({stage}) imports {target}")
    assert not upward, "\n".join(upward)


def test_the_compiler_does_not_run_graphs_and_benchmarks_do_not_use_the_cli():
    for rel, stage, tree in _modules():
        targets = {t for t, _ in _imported_stages(tree)}
        if stage == "compiler":
            assert "hw_sim" not in targets, rel
        if stage == "benchmarks":
            assert "cli" not in targets, rel


def test_each_limit_is_defined_in_one_module():
    names = {n for n in vars(limits) if n.isupper()}
    assert {"STATE_MAX", "DECAY_UNITY", "VTH_SHIFT", "INPUT_LIMIT", "DELAY_MAX"} <= names
    twice = []
    for rel, _, tree in _modules():
        if rel == "loihi/limits.py":
            continue
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else (
                [node.target] if isinstance(node, ast.AnnAssign) else [])
            for t in targets:
                if isinstance(t, ast.Name) and t.id in names:
                    twice.append(f"{rel}:{node.lineno} defines {t.id} again")
    assert not twice, "\n".join(twice)
