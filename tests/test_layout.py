"""The house's structure: imports flow one way and no module outgrows the rest (docs/layout.md)."""

import ast
from graphlib import CycleError, TopologicalSorter

from conftest import ROOT

# the project's modules: top-level entry points, the levels package and the web app; install.py stands alone
FILES = sorted([*ROOT.glob("*.py"), *(ROOT / "levels").glob("*.py"), *(ROOT / "web").glob("*.py")])
MODULES = {
    p.relative_to(ROOT).with_suffix("").as_posix().replace("/", "."): p
    for p in FILES
    if p.name not in {"__init__.py", "install.py"}
}
BASE = {"maps", "audio", "levels.kits"}  # own map time/space, sound, drum kits: they import nothing of the project
MAX_SHARE = 0.20  # of all the project's lines


def project_imports(path) -> set[str]:
    """The project modules that one file imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module in MODULES:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in MODULES}
    return found


# the one allowed edge back: infer.py --serve hands over to the web app from inside its CLI dispatch (run)
DISPATCH = {"infer": {"web.app"}}
GRAPH = {name: project_imports(path) - {name} - DISPATCH.get(name, set()) for name, path in MODULES.items()}


def test_the_import_graph_has_no_circle():
    try:
        order = list(TopologicalSorter(GRAPH).static_order())
    except CycleError as e:
        raise AssertionError(f"import circle: {' -> '.join(e.args[1])}") from None
    assert set(order) == set(MODULES)


def test_the_base_modules_import_nothing_of_the_project():
    assert {name: GRAPH[name] for name in BASE} == {name: set() for name in BASE}


def test_levels_never_import_the_entry_points_above_them():
    entry = {"infer", "train", "utils", "scrape", "web.app"}
    for name, deps in GRAPH.items():
        if name.startswith("levels."):
            assert not deps & entry, f"{name} imports {deps & entry}"


def test_no_module_holds_over_a_fifth_of_the_code():
    lines = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    total = sum(lines.values())
    biggest = max(lines, key=lines.get)
    assert lines[biggest] <= MAX_SHARE * total, f"{biggest}: {lines[biggest]} of {total} lines"
