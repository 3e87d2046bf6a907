"""The package's layering, read from the source with `ast`: no import cycle between the top-level
parts of `sicog`, none between its modules, and no import going down-up the layers:
data (with runtime and config_files) < model < train / generate / curate / annotate < world /
evaluate < cycle (the whole cycle: plans, steps, report) < the command line."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sicog"
LAYER = {
    "runtime": 0, "config_files": 0, "data": 1, "model": 2,
    "train": 3, "generate": 3, "curate": 3, "annotate": 3,
    "world": 4, "evaluate": 4,
    "cycle": 5,   # `sicog reproduce`: the whole cycle on top; nothing below imports it
    "cli": 6, "__main__": 6, "__init__": 6,
}
# Imports up the layers that are allowed, each with its reason (none of them closes a cycle).
UPWARD_ALLOWED = {
    "annotate -> world": "`sicog annotate-cod --world-teacher` serves the mini world's teacher in process "
                         "(imported inside run(), only with that flag)",
    "cycle -> cli": "a step forked by `sicog reproduce` runs `sicog.cli.main` as `python -m sicog` would "
                    "(imported inside the step runner's functions; cli loads the cycle by name only)",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every `sicog` module a file imports, at the top or inside a function."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)
    return {m for m in found if m == "sicog" or m.startswith("sicog.")}


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in files.items():
        for target in imports_of(path):
            while target not in files and "." in target:  # `from pkg import name` names an attribute
                target = target.rpartition(".")[0]
            if target in files and target != name and target != "sicog":
                edges[name].add(target)
    return edges


def top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def package_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for src, targets in graph().items():
        for dst in targets:
            if top(src) != top(dst):
                edges[top(src)].add(top(dst))
    return edges


def test_no_cycle_between_top_level_parts():
    assert cycles(package_edges()) == []


def test_no_import_goes_up_the_layers():
    unknown = {p for e in package_edges().items() for p in (e[0], *e[1])} - set(LAYER)
    assert not unknown, f"place these parts in LAYER: {sorted(unknown)}"
    upward = sorted(f"{src} -> {dst}" for src, targets in package_edges().items() for dst in targets
                    if LAYER[dst] > LAYER[src])
    assert [u for u in upward if u not in UPWARD_ALLOWED] == []


def test_the_cycle_sits_on_top():
    """The cycle package exists, uses the parts below it, and nothing but the cycle imports it (the
    command line loads `sicog.cycle.reproduce` by name)."""
    edges = package_edges()
    assert {"evaluate", "data"} <= edges["cycle"]
    assert sorted(src for src, targets in edges.items() if "cycle" in targets) == []


def test_no_cycle_between_modules():
    assert cycles(graph()) == []


def test_the_checker_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
