"""Text files are read and written as UTF-8 everywhere: Windows' default is its ANSI code page (cp1252), which
garbles or refuses a non-ASCII path, class or camera name (engine, exporters, calibration, benchmarks)."""
from __future__ import annotations

import ast

from tests.conftest import ROOT

PACKAGES = ("engine", "exporters", "calibration", "benchmarks")


def _text_calls_without_encoding(tree: ast.AST):
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or any(k.arg == "encoding" for k in node.keywords):
            continue
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr in ("read_text", "write_text"):
            yield node.lineno, f.attr
        elif isinstance(f, ast.Name) and f.id == "open":  # the builtin: text unless the mode says "b"
            mode = node.args[1] if len(node.args) > 1 else \
                next((k.value for k in node.keywords if k.arg == "mode"), None)
            if mode is None or (isinstance(mode, ast.Constant) and "b" not in str(mode.value)):
                yield node.lineno, "open"
        elif isinstance(f, ast.Attribute) and f.attr == "open" and node.args:  # Path.open("w"): a text mode given
            mode = node.args[0]
            if isinstance(mode, ast.Constant) and isinstance(mode.value, str) and "b" not in mode.value:
                yield node.lineno, "Path.open"

def test_every_text_read_and_write_names_its_encoding():
    found = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if path.name == "env.py" and pkg == "benchmarks":  # /proc/cpuinfo: Linux only, ASCII
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            found += [f"{path.relative_to(ROOT)}:{line} {what}" for line, what in _text_calls_without_encoding(tree)]
    assert not found, "\n".join(found)
