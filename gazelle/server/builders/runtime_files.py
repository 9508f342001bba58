"""The files of gazelle that a model image needs to serve a bundle: the runtime, and nothing of client or server.

``runtime_files()`` starts from ``gazelle/runtime/`` (every file in it, templates included) and adds
the gazelle modules those import, transitively (``gazelle/__init__.py``, ``cli.py``, ``errors.py``,
``bundle.py`` ...), read from the source with ``ast``: no import runs, and an import inside a function
counts as well. Imports under ``if TYPE_CHECKING:`` are skipped: they exist for mypy only
(``gazelle/__init__.py`` names the client's functions there and loads them lazily). An image builder
copies the result to ``<root>/gazelle/...`` and puts ``<root>`` on ``PYTHONPATH``.

Limits: an import spelled as a string (``importlib.import_module("gazelle.x")``) is not followed; the
runtime uses that only for the CLI's handlers of other commands, which an image never runs.
"""
from __future__ import annotations

import ast
from pathlib import Path

import gazelle

_SKIPPED_DIRS = {"__pycache__"}
_SKIPPED_SUFFIXES = {".pyc", ".pyo"}


def package_root() -> Path:
    """The directory of the ``gazelle`` package this server runs."""
    return Path(gazelle.__file__).resolve().parent


def runtime_files(root: Path | None = None) -> dict[str, Path]:
    """``{"gazelle/runtime/app.py": <path>, ...}``: what the runtime needs, keyed by its path in an image."""
    root = root or package_root()
    files: dict[str, Path] = {}
    for path in sorted((root / "runtime").rglob("*")):
        if path.is_file() and not _skipped(path, root):
            files[_key(path, root)] = path
    todo = [p for p in files.values() if p.suffix == ".py"]
    while todo:
        for module in _gazelle_imports(todo.pop()):
            for path in _module_files(root, module):
                if _key(path, root) not in files:
                    files[_key(path, root)] = path
                    todo.append(path)
    return dict(sorted(files.items()))


def _key(path: Path, root: Path) -> str:
    return "gazelle/" + path.relative_to(root).as_posix()


def _skipped(path: Path, root: Path) -> bool:
    parts = path.relative_to(root).parts
    return bool(_SKIPPED_DIRS & set(parts)) or path.suffix in _SKIPPED_SUFFIXES


def _gazelle_imports(path: Path) -> set[str]:
    """Dotted names under ``gazelle`` that ``path`` imports (``from gazelle import x`` gives ``gazelle.x``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in _walk_runtime(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "gazelle")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "gazelle":
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _walk_runtime(tree: ast.AST) -> list[ast.AST]:
    """Every node, except the bodies of ``if TYPE_CHECKING:`` blocks."""
    nodes: list[ast.AST] = []
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        nodes.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                todo.extend(child.orelse)
                continue
            todo.append(child)
    return nodes


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_files(root: Path, dotted: str) -> list[Path]:
    """The files that make ``dotted`` importable: each package ``__init__.py`` on the way, and the module.

    A name that is not a module (``gazelle.errors.BuildError``) resolves to nothing beyond its parents.
    """
    parts = dotted.split(".")[1:]
    found = [root / "__init__.py"]
    here = root
    for part in parts:
        if (here / part / "__init__.py").is_file():
            here = here / part
            found.append(here / "__init__.py")
        elif (here / f"{part}.py").is_file():
            found.append(here / f"{part}.py")
            break
        else:
            break
    return found
