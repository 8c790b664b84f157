"""List the public functions of fracturelib that lack a Google-style docstring (Args/Returns).

A public function is a module-level ``def`` (or a public method of a public class) whose name does not
start with ``_``. It needs a docstring; one that takes parameters besides self/cls needs an ``Args:``
section, and one that returns a value (a ``return x`` or a return annotation other than None) needs
``Returns:`` (or ``Yields:``). Run: ``python scripts/check_docstrings.py [--strict]``.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "fracturelib"


def _returns_value(fn: ast.FunctionDef) -> bool:
    if fn.returns is not None and not (isinstance(fn.returns, ast.Constant) and fn.returns.value is None):
        return True
    for node in ast.walk(fn):
        if isinstance(node, ast.Return) and node.value is not None:
            if not (isinstance(node.value, ast.Constant) and node.value.value is None):
                return True
    return False


def _params(fn: ast.FunctionDef) -> list[str]:
    a = fn.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
    names += [x.arg for x in (a.vararg, a.kwarg) if x is not None]
    return [n for n in names if n not in ("self", "cls")]


def problems(path: Path) -> list[str]:
    """What is missing in one module: ``"module:line name: missing ..."`` per function."""
    tree = ast.parse(path.read_text())
    out = []
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef) and not n.name.startswith("_")):
        funcs += [n for n in cls.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")
                  and not any(isinstance(d, ast.Name) and d.id == "property" for d in n.decorator_list)]
    rel = path.relative_to(PACKAGE.parent)
    for fn in funcs:
        if fn.name.startswith("_"):
            continue
        doc = ast.get_docstring(fn) or ""
        missing = []
        if not doc:
            missing.append("docstring")
        else:
            if _params(fn) and "Args:" not in doc:
                missing.append("Args")
            if _returns_value(fn) and "Returns:" not in doc and "Yields:" not in doc:
                missing.append("Returns")
        if missing:
            out.append(f"{rel}:{fn.lineno} {fn.name}: missing {', '.join(missing)}")
    return out


def main() -> int:
    found = [p for f in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in f.parts for p in problems(f)]
    print("\n".join(found))
    print(f"{len(found)} public functions without a complete docstring", file=sys.stderr)
    return 1 if found and "--strict" in sys.argv else 0


if __name__ == "__main__":
    sys.exit(main())
