"""The source files of itersg that a workflow command runs: its code dependencies, read from the import graph.

A command ``itersg VERB ...`` runs the module of ``itersg.cli`` that defines VERB and every module that
module imports, at module level or inside a function, transitively within the package, with the
``__init__`` of each package on the way (Python runs them). The other command modules only add their
options to the parser, so a change to them does not count; within the verb's own module every handler
counts (a module is the unit). A data file of the package (the params schema, the download manifest,
the report template, the reference results) counts for the modules whose source names it.

DVC lists these files as each stage's deps (``dvc_stages``); the Snakefile gives each rule their
fingerprint as its ``code`` param. So a change to one module reruns, under both, exactly the jobs whose
command imports it, and a change to the report's code never reruns a training.
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

PACKAGE = "itersg"
# `itersg VERB` at the start of a shell command or after a separator, `{params.x}` or `--`.
_VERB = re.compile(r"(?:^|[\s;|&(}])itersg\s+([a-z][\w-]*)")


def _module_name(package_dir: Path, path: Path) -> str:
    parts = path.relative_to(package_dir).with_suffix("").parts
    return ".".join([PACKAGE, *(parts[:-1] if parts[-1] == "__init__" else parts)])


def _registered_verbs(tree: ast.AST) -> list[str]:
    """The verbs a command module registers: ``subparsers.add_parser(VERB, ...)`` calls."""
    return [node.args[0].value for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_parser"
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "subparsers" and node.args
            and isinstance(node.args[0], ast.Constant)]


def _strings(tree: ast.AST) -> set[str]:
    """The string constants of a module other than docstrings (where it names a data file)."""
    docstrings = _docstrings(tree)
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings}


class ImportGraph:
    """The modules of the ``itersg`` package in ``package_dir`` and what each imports.

    Args:
        package_dir: the package folder (``src/itersg`` of a checkout).
    """

    def __init__(self, package_dir: Path):
        self.package_dir = Path(package_dir)
        self.files = {_module_name(self.package_dir, path): path for path in sorted(self.package_dir.rglob("*.py"))}
        self.data_files = sorted(path for path in self.package_dir.rglob("*")
                                 if path.is_file() and path.suffix not in (".py", ".pyc")
                                 and "__pycache__" not in path.parts)
        # what each module imports, registers and names, read once (the syntax trees are not kept: the
        # Snakefile builds a graph each time it is read, and some callers read it hundreds of times)
        self._imports: dict[str, set[str]] = {}
        self._data: dict[str, set[Path]] = {}
        self.verb_modules: dict[str, str] = {}
        for module, path in self.files.items():
            tree = ast.parse(path.read_text(), str(path))
            self._imports[module] = self._read_imports(module, tree)
            named = _strings(tree)
            self._data[module] = {data for data in self.data_files if any(data.name in text for text in named)}
            if module.startswith(f"{PACKAGE}.cli."):
                self.verb_modules.update(dict.fromkeys(_registered_verbs(tree), module))

    @classmethod
    def of_project(cls, root: Path | str) -> ImportGraph:
        """The graph of the checkout in ``root`` (``root/src/itersg``), else of the installed package."""
        package_dir = Path(root).resolve() / "src" / PACKAGE
        if not (package_dir / "__init__.py").is_file():
            package_dir = Path(__file__).resolve().parents[1]
        return cls(package_dir)

    def all_files(self) -> list[Path]:
        """Every source and data file of the package."""
        return sorted([*self.files.values(), *self.data_files])

    def imports(self, module: str) -> set[str]:
        """The itersg modules ``module`` imports anywhere in its code (the module itself, not a package
        attribute: ``from itersg.models import registry`` is ``itersg.models.registry``)."""
        return self._imports[module]

    def _read_imports(self, module: str, tree: ast.AST) -> set[str]:
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = self._absolute(module, node)
                found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in self.files else base
                          for alias in node.names}
        return {self._existing(name) for name in found if name.split(".")[0] == PACKAGE} - {None}

    def _absolute(self, module: str, node: ast.ImportFrom) -> str:
        if node.level == 0:
            return node.module or ""
        package = module if self.files[module].name == "__init__.py" else module.rpartition(".")[0]
        base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
        return f"{base}.{node.module}" if node.module else base

    def _existing(self, name: str) -> str | None:
        """``name``, or the nearest enclosing module of it that exists (an attribute of a package)."""
        while name and name not in self.files:
            name = name.rpartition(".")[0]
        return name or None

    def closure(self, modules: Iterable[str]) -> set[str]:
        """``modules``, everything they import transitively, and the packages above each of them."""
        todo, seen = list(modules), set()
        while todo:
            module = todo.pop()
            if module in seen:
                continue
            seen.add(module)
            parents = [module.rsplit(".", depth)[0] for depth in range(1, module.count(".") + 1)]
            todo += [*self.imports(module), *(p for p in parents if p in self.files)]
        return seen

    def command_modules(self, command: str) -> set[str]:
        """Every module the ``itersg`` verbs of a shell command run (empty for a command without one)."""
        verbs, known = _VERB.findall(command), self.verb_modules
        if unknown := sorted(set(verbs) - set(known)):
            raise ValueError(f"no itersg command module registers the verb(s) {unknown} of: {command}")
        return self.closure(known[verb] for verb in verbs)

    def command_files(self, command: str) -> list[Path]:
        """The source and data files the ``itersg`` verbs of ``command`` run, sorted."""
        modules = self.command_modules(command)
        sources = [self.files[module] for module in modules]
        data = {path for module in modules for path in self._data[module]}
        return sorted([*sources, *data])

    def fingerprint(self, command: str) -> str:
        """A digest of the names and contents of ``command_files(command)``; empty without a verb."""
        files = self.command_files(command)
        if not files:
            return ""
        digest = hashlib.sha256()
        for path in files:
            digest.update(str(path.relative_to(self.package_dir)).encode() + b"\0" + path.read_bytes() + b"\0")
        return digest.hexdigest()[:16]


def _docstrings(tree: ast.AST) -> set[int]:
    """``id`` of every docstring constant of a module and its classes and functions."""
    owners = [node for node in ast.walk(tree)
              if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    return {id(owner.body[0].value) for owner in owners if owner.body and isinstance(owner.body[0], ast.Expr)
            and isinstance(owner.body[0].value, ast.Constant)}
