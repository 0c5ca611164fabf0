"""The package's architecture, read from its source with ``ast``: imports run downward between
subpackages (the order in ``neagari/__init__.py``), no module imports itself through a circle, and
no module reaches into another module's private names."""

from __future__ import annotations

import ast
from pathlib import Path


PACKAGE = Path(__file__).resolve().parents[1] / "neagari"

# Lowest first. A module may import its own layer's shared modules and any lower layer; the three
# middle subpackages are siblings and may not import one another.
LAYERS = [
    {"neagari", "neagari.files", "neagari.hashing", "neagari.tables", "neagari.stats"},
    {"neagari.workflow"},
    {"neagari.engine"},
    {"neagari.search", "neagari.embedded", "neagari.evaluation"},
    {"neagari.analysis"},
    {"neagari.report"},
    {"neagari.cli"},
    {"neagari.__main__"},  # `python -m neagari`: the command line
]
SHARED = LAYERS[0]
# attributes with a leading underscore that are public API (namedtuple methods, CPython frames)
PUBLIC_UNDERSCORE = {"_asdict", "_replace", "_fields", "_make", "_getframe"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit(module: str) -> str:
    """The layered unit a module belongs to: a shared module itself, else its top subpackage."""
    if module in SHARED:
        return module
    return ".".join(module.split(".")[:2])


def layer(module: str) -> int:
    u = unit(module)
    for i, names in enumerate(LAYERS):
        if u in names:
            return i
    raise AssertionError(f"{module}: not in any layer of tests/test_layout.py; add its subpackage")


def resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, module: str, known: set[str]) -> list[tuple[str, str, int]]:
    """(imported module, imported name or '', line) for every neagari import, lazy ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, "", node.lineno) for a in node.names if a.name.split(".")[0] == "neagari"]
        elif isinstance(node, ast.ImportFrom):
            target = resolve(module, path.name == "__init__.py", node)
            if target.split(".")[0] != "neagari":
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.append((sub, "", node.lineno) if sub in known else (target, a.name, node.lineno))
    return out


def graph(mods: dict[str, Path]) -> dict[str, list[tuple[str, str, int]]]:
    return {m: imports(p, m, set(mods)) for m, p in mods.items()}


def upward_imports(mods: dict[str, Path]) -> list[str]:
    bad = []
    for m, deps in graph(mods).items():
        for target, _, line in deps:
            if unit(target) == unit(m) or target == "neagari":
                continue
            if layer(target) >= layer(m):
                bad.append(f"{mods[m].name}:{line}: {m} imports {target}")
    return bad


def circles(mods: dict[str, Path]) -> list[str]:
    edges = {m: sorted({t for t, _, _ in deps if t in mods and t != m}) for m, deps in graph(mods).items()}
    found, state, stack = [], {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in edges[m]:
            if state.get(t) == "open":
                found.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m)
    return found


def private_uses(mods: dict[str, Path]) -> list[str]:
    bad = []
    for m, deps in graph(mods).items():
        for target, name, line in deps:
            if name.startswith("_") and not name.startswith("__") and target != m:
                bad.append(f"{mods[m].name}:{line}: imports {target}.{name}")
    for m, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and node.attr not in PUBLIC_UNDERSCORE and isinstance(node.value, ast.Name)
                    and node.value.id not in ("self", "cls")):
                bad.append(f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}")
    return bad


MODULES = modules()


def test_every_module_is_in_a_layer():
    for m in MODULES:
        layer(m)


def test_imports_run_downward():
    assert not (bad := upward_imports(MODULES)), "imports that do not run downward:\n" + "\n".join(bad)


def test_no_import_circle():
    assert not (bad := circles(MODULES)), "import circles:\n" + "\n".join(bad)


def test_no_private_names_across_modules():
    assert not (bad := private_uses(MODULES)), "private names used outside their module:\n" + "\n".join(bad)


def test_the_checks_find_planted_violations(tmp_path):
    """Each check on throwaway modules: an upward import, a circle, a private import and call."""
    files = {
        "neagari.engine.low": "from neagari.report.paper import render\nfrom neagari.engine.high import f\n",
        "neagari.engine.high": "from neagari.engine import low\nfrom neagari.search.probes import _probe\n"
                               "def f(engine):\n    return engine._left_pad([[1]])\n",
        "neagari.report.paper": "x = 1\n",
        "neagari.search.probes": "def _probe():\n    pass\n",
    }
    mods = {}
    for name, src in files.items():
        path = tmp_path / (name.replace(".", "_") + ".py")
        path.write_text(src)
        mods[name] = path
    assert upward_imports(mods) == ["neagari_engine_low.py:1: neagari.engine.low imports neagari.report.paper",
                                    "neagari_engine_high.py:2: neagari.engine.high imports neagari.search.probes"]
    assert circles(mods) == ["neagari.engine.high -> neagari.engine.low -> neagari.engine.high"]
    assert private_uses(mods) == ["neagari_engine_high.py:2: imports neagari.search.probes._probe",
                                  "neagari_engine_high.py:4: engine._left_pad"]


def test_readme_module_table_matches_the_tree():
    """README's package table names every module (or nested package) and nothing that is gone."""
    import re

    readme = (PACKAGE.parent / "README.md").read_text()
    section = readme.split("## The package (`neagari/`)", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| Layer")]
    named = set(re.findall(r"`([a-z0-9_]+(?:\.py|/))`", "\n".join(rows)))
    nested = {"toydata/", "subspace/", "terrain/"}
    want = {p.name for p in PACKAGE.rglob("*.py")
            if p.name != "__init__.py" and not ({f"{d.name}/" for d in p.parents} & nested)}
    want |= nested | {f"{d.name}/" for d in PACKAGE.iterdir() if (d / "__init__.py").exists()}
    assert want - named == set(), f"modules missing from README's table: {sorted(want - named)}"
    assert named - want == set(), f"README's table names modules that do not exist: {sorted(named - want)}"
