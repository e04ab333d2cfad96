"""The package's shape: no import circle in the lean runtime, and tools that import like users.

An import circle held apart only by imports inside functions breaks as soon as someone moves
an import to the top, and it hides which module is meant to sit below which; so every
import counts here, top-level or inside a function. Imports under ``if TYPE_CHECKING:`` are
for the type checker only and never run.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _runtime_imports(tree: ast.AST, here: str, is_pkg: bool, modules: frozenset[str] = frozenset()) -> set[str]:
    """Every module named by an import that runs (TYPE_CHECKING blocks skipped). ``from pkg import
    mod`` depends on ``pkg.mod``, not on ``pkg``'s own ``__init__``, when ``mod`` is a module."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = here.split(".") if is_pkg else here.split(".")[:-1]
                pkg = pkg[:len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            subs = {f"{base}.{a.name}" for a in node.names} & modules
            found.update(subs if subs and len(subs) == len(node.names) else {base} | subs)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(package: str) -> dict[str, set[str]]:
    files = sorted((ROOT / package.replace(".", "/")).rglob("*.py"))
    modules = {_module_name(f): f for f in files}
    graph: dict[str, set[str]] = {}
    for name, f in modules.items():
        imported = _runtime_imports(ast.parse(f.read_text(encoding="utf-8")), name, f.name == "__init__.py", frozenset(modules))
        # importing a.b.c runs a/__init__ and a/b/__init__ too, but those are not edges of a circle we own
        graph[name] = {m for m in imported if m in modules and m != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return None


def test_the_runtime_has_no_import_circle():
    graph = import_graph("reidkit.runtime")
    assert len(graph) > 15  # the walk found the runtime's modules
    assert "reidkit.runtime.members" in graph["reidkit.runtime.embedder"]  # and their imports
    cycle = _cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_circle_check_sees_imports_inside_functions(tmp_path):
    a = ast.parse("def f():\n    from reidkit.runtime import b\n")
    b = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from reidkit.runtime import a\nimport reidkit.runtime.a\n")
    mods = frozenset({"reidkit.runtime.a", "reidkit.runtime.b"})
    graph = {"reidkit.runtime.a": _runtime_imports(a, "reidkit.runtime.a", False, mods) & mods,
             "reidkit.runtime.b": _runtime_imports(b, "reidkit.runtime.b", False, mods) & mods}
    assert _cycle(graph) is not None
    only_typing = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from reidkit.runtime import a\n")
    assert "reidkit.runtime.a" not in _runtime_imports(only_typing, "reidkit.runtime.b", False)


@pytest.mark.parametrize("package", ["reidkit.data", "reidkit.review", "reidkit.export", "reidkit.cli"])
def test_other_packages_have_no_import_circle(package):
    cycle = _cycle(import_graph(package))
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_runtime_imports_nothing_above_it():
    graph = import_graph("reidkit")
    above = ("reidkit.train", "reidkit.export", "reidkit.cli", "reidkit.bench", "reidkit.demo")
    bad = {(m, d) for m, deps in graph.items() if m.startswith("reidkit.runtime") for d in deps if d.startswith(above)}
    assert not bad, sorted(bad)


def test_benchmarks_import_reidkit_like_users():
    """Tools re-run by maintainers import the installed package, never a patched sys.path."""
    offenders = [p.name for p in (ROOT / "benchmarks").rglob("*.py") if "sys.path" in p.read_text(encoding="utf-8")]
    assert not offenders, offenders


def test_one_reid_command_lists_every_subcommand_and_each_alias_answers_help():
    import re
    import subprocess
    import sys

    from reidkit.cli import COMMANDS

    bin_dir = Path(sys.executable).parent
    top = subprocess.run([str(bin_dir / "reid"), "--help"], capture_output=True, text=True, check=True).stdout
    listed = re.findall(r"^  (\w+)\s", top.split("Commands:")[1], re.M)
    assert listed == list(COMMANDS) and {"train", "export", "infer", "eval", "review", "bench", "synth", "catalogue"} <= set(listed)
    for name in COMMANDS:
        sub = subprocess.run([str(bin_dir / "reid"), name, "--help"], capture_output=True, text=True)
        alias = subprocess.run([str(bin_dir / f"reid-{name}"), "--help"], capture_output=True, text=True)
        assert sub.returncode == 0 and alias.returncode == 0, (name, sub.stderr, alias.stderr)
        assert sub.stdout.split("\n", 1)[1] == alias.stdout.split("\n", 1)[1]  # the same command under two names
        # help explains; it does not carry work history
        assert not re.search(r"\bissue \d|\bsession\b", sub.stdout, re.I), name
