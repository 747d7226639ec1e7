"""Which of the project's own files a module runs: its imports, followed transitively.

DVC does not follow imports, so every stage must list the files its code comes from in
`dvc.yaml` (`deps`). This reads them off the source (function-level imports included) so a
test can hold dvc.yaml to it, and the train stage can fingerprint exactly the code it runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pix2pix", "pipeline")


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The project file of dotted module `name`, or None for a package or a module from outside."""
    if name.split(".")[0] not in PACKAGES:
        return None
    path = root.joinpath(*name.split(".")).with_suffix(".py")
    return path if path.is_file() else None


def _imported_names(path: Path, module: str) -> set[str]:
    """Dotted names of the modules (or module attributes) that `path` imports."""
    package = module.rsplit(".", 1)[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return names


def project_files(module: str, root: Path = ROOT) -> set[Path]:
    """`module`'s own file and every project file it imports, directly or not.

    Package `__init__.py` files are left out: both are docstrings only (a test checks)."""
    start = module_file(module, root)
    if start is None:
        raise ValueError(f"{module}: not a module of this project")
    seen: dict[Path, str] = {start: module}
    todo = [start]
    while todo:
        path = todo.pop()
        for name in _imported_names(path, seen[path]):
            found = module_file(name, root)
            if found is not None and found not in seen:
                seen[found] = name
                todo.append(found)
    return set(seen)


def relative(paths: set[Path], root: Path = ROOT) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in paths)
