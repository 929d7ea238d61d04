"""Figures of the package layout, as JSON: imports that run up the layers, import cycles, the longest
functions, the command-line modules and the training orchestrators.

    python benchmarks/layout_metrics.py                  # this checkout
    python benchmarks/layout_metrics.py --root OTHER     # another checkout (e.g. an older commit's worktree)

A module's layer comes from its package (``unifashion/<package>/...``); top-level modules that
predate the current layout are placed by what they do (``captioning.py`` / ``generation.py``:
pipelines, ``quickstart.py``: recipes, ``cli*.py`` and any ``*/cli.py``: cli, ``doctor.py``: backbones).
"""

from __future__ import annotations

import argparse
import ast
import json
from collections import defaultdict
from pathlib import Path

LAYERS = ["utils", "config", "data", "backbones", "models", "pipelines", "training", "serve", "recipes", "cli"]
# Siblings share a rank.
RANK = {
    "utils": 0,
    "config": 1,
    "checkpoint": 1,
    "data": 2,
    "backbones": 3,
    "models": 4,
    "pipelines": 5,
    "training": 6,
    "evaluation": 6,
    "catalog": 6,
    "serve": 7,
    "recipes": 8,
    "cli": 9,
}
TOP_LEVEL = {
    "captioning": "pipelines",
    "generation": "pipelines",
    "quickstart": "recipes",
    "doctor": "backbones",
    "cli": "cli",
    "cli_generation": "cli",
    "__main__": "cli",
    "__init__": None,
}
ORCHESTRATORS = ("train_pipeline", "train_retrieval", "train_captioning", "train_generation")


def modules(root: Path) -> dict[str, Path]:
    pkg = root / "unifashion"
    out = {}
    for path in sorted(pkg.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        out[".".join(p for p in parts if p != "__init__") if parts[-1] == "__init__" else ".".join(parts)] = path
    return out


def layer_of(name: str) -> str | None:
    parts = name.split(".")
    if len(parts) == 1:
        return None
    if len(parts) == 2:
        return TOP_LEVEL.get(parts[1], parts[1] if parts[1] in RANK else None)
    if parts[-1] == "cli":  # the command modules that lived in their packages
        return "cli"
    if parts[1:] == ["evaluation", "ablation"]:
        return "recipes"
    return parts[1]


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules of the package that ``name`` imports (anywhere in the file, lazy imports included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("unifashion"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in known else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("unifashion")}
    return {m for m in found if m in known and m != name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def longest_functions(mods: dict[str, Path], n: int = 5) -> list[dict]:
    rows = []
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                rows.append({"function": f"{name}.{node.name}", "lines": node.end_lineno - node.lineno + 1})
    return sorted(rows, key=lambda r: -r["lines"])[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1]))
    root = Path(parser.parse_args().root)
    mods = modules(root)
    known = set(mods)
    graph = {m: imports(m, p, known) for m, p in mods.items()}
    upward = []
    for src, targets in graph.items():
        for dst in targets:
            a, b = layer_of(src), layer_of(dst)
            # Up a layer, or across to a sibling of the same layer.
            if a and b and (RANK[b] > RANK[a] or (RANK[b] == RANK[a] and a != b)):
                upward.append(f"{src} -> {dst}")
    cli = {m: p for m, p in mods.items() if layer_of(m) == "cli"}
    defined = defaultdict(list)
    for name, path in mods.items():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef) and node.name in ORCHESTRATORS:
                defined[node.name].append(name)
    print(
        json.dumps(
            {
                "root": str(root),
                "imports_against_layers": len(upward),
                "imports_against_layers_list": sorted(upward),
                "import_cycles": cycles(graph),
                "longest_functions": longest_functions(mods),
                "cli_modules": len(cli),
                "cli_lines": sum(len(p.read_text(encoding="utf-8").splitlines()) for p in cli.values()),
                "training_orchestrators": dict(defined),
                "fmt_skip_markers": sum(p.read_text(encoding="utf-8").count("# fmt: skip") for p in mods.values()),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
