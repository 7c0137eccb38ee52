"""scripts/check_tensorrt_api.py's table of TensorRT names stays in step with the builder and the backend,
holds on the installed TensorRT-RTX, and its string-table reader finds merged strings."""
from __future__ import annotations

import ast
import importlib.util
import re

import pytest

from tests.conftest import ROOT

SOURCES = [ROOT / "exporters" / "tensorrt.py",
           *(ROOT / "engine" / "backends" / f"{m}.py" for m in ("tensorrt", "trt_engine", "trt_context", "trt_flavor"))]


def _script():
    spec = importlib.util.spec_from_file_location("check_tensorrt_api", ROOT / "scripts" / "check_tensorrt_api.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _trt_chains(tree) -> set[str]:
    """``trt.X`` / ``trt.X.Y`` / ``self._trt.X`` attribute chains in a module."""
    out = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        chain, cur = [node.attr], node.value
        while isinstance(cur, ast.Attribute):
            chain.insert(0, cur.attr)
            cur = cur.value
        if isinstance(cur, ast.Name) and cur.id == "trt" or chain[0] == "_trt":
            chain = chain[1:] if chain[0] == "_trt" else chain
            if chain and chain[0] not in ("__name__", "__version__"):
                out.add(".".join(chain[:2]))
    return out


def test_every_module_level_name_the_sources_use_is_in_the_table():
    api = {n for n, _ in _script().API}
    owners = {n.split(".")[0] for n in api}
    for src in SOURCES:
        for chain in _trt_chains(ast.parse(src.read_text())):
            head = chain.split(".")[0]
            if chain in ("ILogger.__init__", "ComputeCapability.__members__"):
                continue  # Python protocol on a class the table names
            assert f"module.{head}" in api or head in owners, (src.name, chain)
            if "." in chain and head in owners and not chain.endswith("__members__"):
                assert chain in api, (src.name, chain)


def test_every_table_entry_is_used_by_the_sources():
    text = "\n".join(src.read_text() for src in SOURCES)
    for entry, _ in _script().API:
        name = entry.split(".", 1)[1]
        if entry.startswith("ComputeCapability."):  # looked up as getattr(ComputeCapability, tag.upper())
            continue
        assert re.search(rf"\b{name}\b", text), entry


def test_installed_tensorrt_rtx_has_every_name():
    rtx = pytest.importorskip("tensorrt_rtx")
    script = _script()
    assert script.missing_in_module(rtx, "rtx") == []
    assert script.missing_in_module(rtx, "10") != []  # and the check can fail: RTX has no FP16 builder flag


def test_string_table_reader_finds_merged_suffixes_and_python_helpers():
    script = _script()
    blob = b"\x00UINT8\x00Builder\x00create_network\x00TensorIOMode\x00INPUT\x00"
    ids = script.identifiers(blob)
    assert {"INT8", "UINT8", "Builder", "create_network"} <= ids and "create_net" not in ids
    missing = script.missing_in_strings(blob, "def nptype(x):\n", "10")
    assert "module.Builder" not in missing and "TensorIOMode.INPUT" not in missing and "module.nptype" not in missing
    assert "BuilderFlag.FP16" in missing and "Builder.build_serialized_network" in missing
