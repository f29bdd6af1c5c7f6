"""The import structure is one-way: no import circles, and the library never imports `data_modules`.

Layers, bottom to top: `src/videobert` (the library) <- `data_modules` (LightningDataModules) <- `videobert.cli`
(the command line, the only library module allowed to import `data_modules`). The graph is read from the source
with `ast`, function-local imports included: a lazy import still ties two modules together.
"""
from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"videobert": ROOT / "src" / "videobert", "data_modules": ROOT / "data_modules"}
ENTRY_POINT = "videobert.cli"  # the command line sits above data_modules (setup.py's console script)


def module_files(packages: dict[str, Path]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under each package folder (a package is its `__init__`)."""
    modules = {}
    for name, folder in packages.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [name, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imported_names(module: str, path: Path) -> list[str]:
    """Every module name `module` imports, anywhere in the file (top level, functions, `if TYPE_CHECKING`)."""
    is_package = path.name == "__init__.py"
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: climb from this module's package
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            names += [base] + [f"{base}.{alias.name}" for alias in node.names]  # `from pkg import submodule`
    return names


def import_graph(packages: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of `packages` it imports (imports of anything else are left out)."""
    modules = module_files(packages)
    graph = {}
    for module, path in modules.items():
        targets = set()
        for name in imported_names(module, path):
            if name in modules:
                targets.add(name)
        # `from pkg import submodule` names both pkg and pkg.submodule: keep the most specific
        graph[module] = {t for t in targets if not any(o.startswith(t + ".") for o in targets)} - {module}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of `graph`: its strongly connected components with more than one module, or a
    module that imports itself (Tarjan's algorithm, iterative so deep graphs do not hit the recursion limit)."""
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start), on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child), on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    cycles.append(sorted(component))
    return cycles


def test_cycle_finder_on_synthetic_graphs():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"a"}}) == [["a"]]
    two = find_cycles({"a": {"b"}, "b": {"a", "c"}, "c": {"d"}, "d": {"c"}, "e": {"a", "c"}})
    assert sorted(two) == [["a", "b"], ["c", "d"]]
    chain = {str(i): {str(i + 1)} for i in range(5000)} | {"5000": {"0"}}  # deep: no recursion limit
    assert len(find_cycles(chain)[0]) == 5001


def test_graph_sees_a_planted_function_local_circle(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .b import g\n")
    (pkg / "a.py").write_text("def f():\n    from .sub import b\n    return b.g()\n")
    (pkg / "sub" / "b.py").write_text("import os\n\ndef g():\n    from ..a import f\n    return f\n")
    graph = import_graph({"pkg": pkg})
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.a"}
    assert find_cycles(graph) == [["pkg.a", "pkg.sub.b"]]


def test_no_import_circles():
    graph = import_graph(PACKAGES)
    assert len(graph) > 40 and "videobert.cli" in graph  # (the graph really covers the code)
    cycles = find_cycles(graph)
    assert not cycles, "import circles (move the shared piece to the lower module): " + "; ".join(map(" <-> ".join, cycles))


def test_library_does_not_import_data_modules():
    graph = import_graph(PACKAGES)
    offenders = {module: sorted(t for t in targets if t.split(".")[0] == "data_modules")
                 for module, targets in graph.items() if module.startswith("videobert") and module != ENTRY_POINT}
    offenders = {m: t for m, t in offenders.items() if t}
    assert not offenders, f"library modules that import data_modules (it sits above the library): {offenders}"


def documented_layers(text: str) -> list[list[str]]:
    """The layers docs/architecture.md draws under "## Layers", top first: each a list of module patterns
    (`videobert.api`, `videobert.tasks.*`, `data_modules.*`). Parenthesised remarks are left out."""
    block = text[text.index("## Layers"):]
    block = block[block.index("```\n") + 4:]
    layers = []
    for line in block[:block.index("```")].splitlines():
        line = re.sub(r"\([^)]*\)?", "", line)  # (a remark, possibly running onto the next line)
        head, names = line[:31].strip("│▼ "), [n.strip() for n in re.split(r"[,;]", line[31:]) if n.strip()]
        if head.startswith(("videobert.cli", "data_modules")):  # (the command line; the DataModules)
            layers.append([head.split()[0].rstrip("/") + ("*" if head.startswith("data_modules") else "")])
        elif head:  # a layer of src/videobert, then lines that continue its list
            layers.append([])
        if not head.startswith(("videobert.cli", "data_modules")):
            layers[-1] += [f"videobert.{n.replace('/', '.')}" for n in names if re.fullmatch(r"[\w/*]+", n)]
    return layers


def test_architecture_doc_draws_the_layers_as_they_are():
    graph = import_graph(PACKAGES)
    layers = documented_layers((ROOT / "docs" / "architecture.md").read_text())

    def layer(module: str) -> int:
        found = [i for i, names in enumerate(layers) for n in names
                 if fnmatch.fnmatch(module, n) or fnmatch.fnmatch(module + ".", n)]  # (`tasks.*`: also the package)
        assert found, f"{module} is in no layer of docs/architecture.md"
        return found[0]

    upward = [f"{m} -> {t}" for m, targets in graph.items() if m != "videobert" for t in targets
              if t != "videobert" and layer(t) < layer(m)]
    assert not upward, f"imports against docs/architecture.md's layers: {upward}"
