"""Imports run one way: no circle of modules or of packages, no arrow against docs/architecture.md.

Every `import` and `from ... import` in tbhcli is read with `ast`, at module level and inside
functions alike (a lazy import is still an arrow). The stage order and the modules around the
path are read from docs/architecture.md itself, so the picture and this test cannot drift apart.
Importing a submodule runs its parent package's `__init__` too; that implied arrow is not
counted, as in import-linter.
"""

import ast
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).parents[1]
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def module_imports(package: Path) -> dict[str, set[str]]:
    """module name -> the package's modules it imports (any depth of the tree, any scope)."""
    top = package.name
    files = {}
    for file in package.rglob("*.py"):
        parts = list(file.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = file
    arrows: dict[str, set[str]] = {}
    for name, file in files.items():
        here = name if file.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package `level - 1` steps above `here`
                    anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets.add(base)
                targets |= {f"{base}.{alias.name}" for alias in node.names}  # submodules
        arrows[name] = {t for t in targets if t in files and t != name and t.startswith(top)}
    return arrows


def circles(arrows: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in arrows.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(arrows):
        if node not in index:
            visit(node)
    return sorted(found)


def layer(module: str) -> str:
    """tbhcli.search.scan -> search; tbhcli.errors -> errors; tbhcli -> tbhcli."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def package_imports(arrows: dict[str, set[str]]) -> dict[str, set[str]]:
    packages = defaultdict(set)
    for source, targets in arrows.items():
        packages[layer(source)] |= {layer(t) for t in targets if layer(t) != layer(source)}
    return packages


def documented_order(text: str) -> tuple[list[str], set[str], dict[str, str]]:
    """(stages in import order, modules around the path, module -> the stage it belongs to)."""
    order = re.search(r"^Import order: `([^`]+)`", text, re.M)
    around = re.search(r"^Around the path \(([^)]*)\):", text, re.M)
    assert order and around, "docs/architecture.md states the import order and the modules around"
    stages = [s.strip() for s in order.group(1).split("->")]
    members = {}
    for name, stage in re.findall(r"`(\w+)\.py`\s+\(part of `(\w+)`", text):
        members[name] = stage
    return stages, set(re.findall(r"`(\w+)`", around.group(1))), members


def against_order(
    arrows: dict[str, set[str]], stages: list[str], around: set[str], members: dict[str, str]
) -> list[str]:
    """Arrows from a stage to a later one, or from a module around the path into a stage."""
    rank = {stage: i for i, stage in enumerate(stages)}
    wrong = []
    for source, targets in sorted(arrows.items()):
        for target in sorted(targets):
            a, b = layer(source), layer(target)
            a, b = members.get(a, a), members.get(b, b)
            if a == b or b in around:
                continue
            if a in around or b not in rank or a not in rank or rank[a] < rank[b]:
                wrong.append(f"{source} -> {target}")
    return wrong


def test_tbhcli_has_no_module_circle():
    assert circles(module_imports(ROOT / "tbhcli")) == []


def test_tbhcli_has_no_package_circle():
    assert circles(package_imports(module_imports(ROOT / "tbhcli"))) == []


def test_every_import_follows_the_documented_order():
    stages, around, members = documented_order(ARCHITECTURE.read_text())
    arrows = module_imports(ROOT / "tbhcli")
    layers = {layer(m) for m in arrows} - {"tbhcli"}
    placed = set(stages) | around | set(members)
    assert sorted(layers - placed) == [], "every package and top module has a place in the doc"
    assert against_order(arrows, stages, around, members) == []


def test_the_checks_catch_circles_and_upward_arrows(tmp_path):
    """The checker itself, on a made-up package: a lazy import that closes a circle, a relative
    import that points up the order, and a module around the path that imports a stage."""
    pkg = tmp_path / "pkg"
    for folder in ("low", "high"):
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("from pkg.high import b\n")
    (pkg / "low" / "a.py").write_text("def f():\n    from ..high.b import g\n")
    (pkg / "high" / "b.py").write_text("from pkg.low import a\n")
    arrows = module_imports(pkg)
    assert arrows["pkg.low.a"] == {"pkg.high.b"}  # found inside a function, relative
    assert arrows["pkg.high.b"] == {"pkg.low", "pkg.low.a"}  # the package and its submodule
    assert circles(arrows) == [["pkg.high.b", "pkg.low.a"]]
    assert circles(package_imports(arrows)) == [["high", "low"]]
    doc = "Import order: `low -> high`\nAround the path (`errors`):\n"
    wrong = against_order(arrows, *documented_order(doc))
    assert wrong == [
        "pkg.errors -> pkg.high",
        "pkg.errors -> pkg.high.b",
        "pkg.low.a -> pkg.high.b",
    ]
