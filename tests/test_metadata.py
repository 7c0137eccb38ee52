"""The one metadata schema: round trips, versioning, Ultralytics' keys, and presence in exports."""
from __future__ import annotations

import json

import pytest

from engine.errors import MetadataError
from engine.metadata import (
    METADATA_KEY,
    SCHEMA_VERSION,
    HeadLayout,
    ModelMetadata,
    Precision,
    Thresholds,
    file_sha256,
    from_onnx_props,
)


def _meta(**kw) -> ModelMetadata:
    base = dict(names=("a", "b"), imgsz=(384, 640), stride=32, batch=None, precision=Precision.INT8,
                head=HeadLayout.END2END, thresholds=Thresholds(0.25, 0.45, 100), source_sha256="ab" * 32,
                source_name="best.pt")
    base.update(kw)
    return ModelMetadata(**base)


def test_round_trip_json():
    m = _meta()
    d = json.loads(m.to_json())
    assert d["batch"] == "dynamic" and d["precision"] == "int8" and d["head"] == "end2end"
    assert d["schema_version"] == SCHEMA_VERSION and d["tool_version"]
    assert ModelMetadata.from_json(m.to_json()) == m


def test_static_batch_and_defaults_round_trip():
    m = ModelMetadata(names=("x",), imgsz=(640, 640), batch=4)
    assert ModelMetadata.from_dict(m.to_dict()) == m
    assert not m.dynamic_batch and m.num_classes == 1


@pytest.mark.parametrize("version", [0, SCHEMA_VERSION + 1])
def test_unknown_schema_version_is_refused(version):
    d = _meta().to_dict()
    d["schema_version"] = version
    with pytest.raises(MetadataError, match="schema version"):
        ModelMetadata.from_dict(d)


@pytest.mark.parametrize("field", ["names", "imgsz"])
def test_missing_field_is_a_metadata_error(field):
    d = _meta().to_dict()
    del d[field]
    with pytest.raises(MetadataError, match="malformed"):
        ModelMetadata.from_dict(d)


@pytest.mark.parametrize("kw", [dict(names=()), dict(imgsz=(0, 640)), dict(batch=0)])
def test_invalid_values_rejected(kw):
    with pytest.raises(MetadataError):
        _meta(**kw)


def test_ultralytics_props_are_read_when_ours_are_absent():
    props = {"names": "{0: 'person', 1: 'car'}", "imgsz": "[384, 640]", "stride": "32", "task": "detect",
             "batch": "1", "end2end": "False"}
    m = from_onnx_props(props)
    assert m.names == ("person", "car") and m.imgsz == (384, 640) and m.head is HeadLayout.RAW
    assert from_onnx_props({}) is None
    # Ultralytics' nms=True export writes end2end False, but its rows are finished detections
    assert from_onnx_props(dict(props, args="{'nms': True, 'dynamic': False}")).head is HeadLayout.END2END


def test_our_key_wins_over_ultralytics_keys():
    props = {"names": "{0: 'other'}", "imgsz": "640", METADATA_KEY: _meta().to_json()}
    assert from_onnx_props(props) == _meta()


def test_export_writes_metadata(demo_onnx, demo_pt):
    onnx = pytest.importorskip("onnx")
    props = {p.key: p.value for p in onnx.load(str(demo_onnx)).metadata_props}
    m = ModelMetadata.from_json(props[METADATA_KEY])
    assert m.names == ("disc", "box", "triangle")
    assert m.imgsz == (320, 320) and m.batch == 1 and m.precision is Precision.FP32 and m.head is HeadLayout.RAW
    assert m.source_sha256 == file_sha256(demo_pt) and m.source_name == "demo.pt"
    assert props["imgsz"] == "[320, 320]"  # Ultralytics' own key kept in sync for its loader
