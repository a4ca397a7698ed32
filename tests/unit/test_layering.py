"""The layering DESIGN.md states: the core package never imports the workers package."""

from __future__ import annotations

import ast
from pathlib import Path

import newsletter

CORE = Path(newsletter.__file__).parent


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """Every module an `import` or `from ... import` names, with its line (lazy ones too)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.append((node.lineno, str(node.args[0].value)))
    return found


def test_no_core_module_imports_workers():
    offenders = [
        f"{path.relative_to(CORE.parent)}:{line} imports {name}"
        for path in sorted(CORE.rglob("*.py"))
        for line, name in imported_modules(ast.parse(path.read_text(encoding="utf-8")))
        if name == "workers" or name.startswith("workers.")
    ]
    assert offenders == []


def test_the_check_sees_lazy_imports():
    """An import inside a function counts: that is where the core once reached workers."""
    tree = ast.parse("def f():\n    from workers.status import queue_lengths\n")
    assert imported_modules(tree) == [(2, "workers.status")]
