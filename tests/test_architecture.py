"""The shape of the source tree (issue 11), read with ``ast`` without importing anything.

- no module under src/bayespref is longer than 500 lines;
- no module imports a private name (``_name``, not ``__dunder__``) of another bayespref module,
  nor a private module from outside the package that owns it, nor reads ``module._name``
  through an imported bayespref module;
- bayespref modules are imported at the top of a module, never inside a function (optional
  third-party dependencies such as peft or matplotlib may be imported late; a package's
  ``__getattr__`` (PEP 562) may import lazily what the package re-exports);
- only ``bayespref.cli`` prints; library code logs.

The layering itself (which layer may import which) is import-linter's job: ``lint-imports``,
configured in pyproject.toml.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PACKAGE = "bayespref"
MAX_LINES = 500


@dataclass(frozen=True)
class SourceModule:
    path: Path  # src/bayespref/.../name.py
    name: str  # dotted: bayespref.data.schema
    tree: ast.Module

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"

    def where(self, node: ast.AST) -> str:
        """``src/bayespref/x.py:LINE``, the way a failure names an offence."""
        return f"{self.path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def load_modules() -> list[SourceModule]:
    paths = sorted((SRC / PACKAGE).rglob("*.py"))
    return [
        SourceModule(path, module_name(path), ast.parse(path.read_text(), filename=str(path)))
        for path in paths
    ]


MODULES = load_modules()
MODULE_NAMES = {m.name for m in MODULES}


def walk_in_order(tree: ast.AST) -> list[ast.AST]:
    """The nodes of ``tree`` that have a position, in source order (ast.walk is breadth-first)."""
    nodes = [node for node in ast.walk(tree) if hasattr(node, "lineno")]
    return sorted(nodes, key=lambda node: (node.lineno, node.col_offset))


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def imported_module(module: SourceModule, node: ast.ImportFrom) -> str:
    """The absolute dotted name ``from X import ...`` reads from (relative imports resolved)."""
    if node.level == 0:
        return node.module or ""
    # `from . import x` in a package's __init__ is relative to the package itself.
    package = module.name.split(".")
    if not module.is_package:
        package.pop()
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def is_ours(dotted: str) -> bool:
    return dotted == PACKAGE or dotted.startswith(PACKAGE + ".")


def private_module_outsider(importer: str, dotted: str) -> str | None:
    """The private module in ``dotted`` that ``importer`` may not reach, if any.

    A private module (``bayespref.data._common``) belongs to its parent package: modules of
    that package (``bayespref.data.*``) may import it, others may not.
    """
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if is_private(part):
            owner = ".".join(parts[:i])
            if not (importer == owner or importer.startswith(owner + ".")):
                return ".".join(parts[: i + 1])
    return None


def imports_inside_functions(tree: ast.Module) -> list[tuple[ast.Import | ast.ImportFrom, str]]:
    """``(import statement, name of the innermost function holding it)``, in source order."""
    innermost: dict[int, tuple[ast.Import | ast.ImportFrom, str]] = {}
    for function in ast.walk(tree):  # outer functions come before the functions nested in them
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(function):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    innermost[id(node)] = (node, function.name)
    return sorted(innermost.values(), key=lambda pair: pair[0].lineno)


def report(offences: list[str], rule: str) -> str:
    return f"{len(offences)} {rule}:\n  " + "\n  ".join(offences)


def test_the_source_tree_is_found():
    assert f"{PACKAGE}.losses" in MODULE_NAMES and f"{PACKAGE}.data" in MODULE_NAMES


def test_no_module_is_longer_than_500_lines():
    offences = []
    for module in MODULES:
        lines = len(module.path.read_text().splitlines())
        if lines > MAX_LINES:
            # the first line over the limit
            offences.append(f"{module.path.relative_to(REPO)}:{MAX_LINES + 1} ({lines} lines)")
    assert not offences, report(offences, f"modules over {MAX_LINES} lines")


def private_name_offences(module: SourceModule) -> list[str]:
    """Where ``module`` reaches a private name or private module of another bayespref module."""
    offences = []
    module_aliases: dict[str, str] = {}  # local name -> bayespref module, for `alias._helper`
    for node in walk_in_order(module.tree):
        reached_modules: list[str] = []  # bayespref modules this statement imports or reads from
        if isinstance(node, ast.ImportFrom) and is_ours(imported_module(module, node)):
            source = imported_module(module, node)
            reached_modules.append(source)
            for alias in node.names:
                target = f"{source}.{alias.name}"
                if target in MODULE_NAMES:  # `from . import x`: a module, not a name
                    module_aliases[alias.asname or alias.name] = target
                    reached_modules.append(target)
                elif is_private(alias.name):
                    offences.append(f"{module.where(node)} imports {alias.name} from {source}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if is_ours(alias.name):
                    reached_modules.append(alias.name)
                    if alias.asname:  # a plain `import bayespref.x` binds only `bayespref`
                        module_aliases[alias.asname] = alias.name
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in module_aliases
            and is_private(node.attr)
        ):
            owner = module_aliases[node.value.id]
            offences.append(f"{module.where(node)} uses {owner}.{node.attr}")
        for dotted in reached_modules:
            hidden = private_module_outsider(module.name, dotted)
            if hidden:
                offences.append(f"{module.where(node)} imports private module {hidden}")
    return offences


def test_no_module_imports_a_private_name_of_another():
    offences = [offence for module in MODULES for offence in private_name_offences(module)]
    assert not offences, report(offences, "imports of private names of other modules")


def lazy_package_export(module: SourceModule, function: str) -> bool:
    """A package's module-level ``__getattr__`` (PEP 562): keeps ``import bayespref`` light."""
    return module.is_package and function == "__getattr__"


def imported_names(module: SourceModule, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Dotted names an import statement reads: ``from . import config`` -> bayespref.config."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    source = imported_module(module, node)
    names = [f"{source}.{alias.name}" for alias in node.names]
    return [name for name in names if name in MODULE_NAMES] or [source]


def test_bayespref_modules_are_imported_at_the_top_of_a_module():
    offences = []
    for module in MODULES:
        for node, function in imports_inside_functions(module.tree):
            if lazy_package_export(module, function):
                continue
            offences += [
                f"{module.where(node)} imports {name} inside {function}()"
                for name in imported_names(module, node)
                if is_ours(name)
            ]
    assert not offences, report(offences, "bayespref imports inside functions")


def is_cli(module: SourceModule) -> bool:
    return module.name == f"{PACKAGE}.cli" or module.name.startswith(f"{PACKAGE}.cli.")


def test_only_the_cli_prints():
    offences = []
    for module in MODULES:
        if is_cli(module):
            continue
        for node in walk_in_order(module.tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "print"
            ):
                offences.append(f"{module.where(node)} calls print()")
    assert not offences, report(offences, "print() calls outside bayespref.cli (log instead)")
