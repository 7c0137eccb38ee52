"""ONNX export: shapes, dynamic batch, 16:9 input, onnxslim, parity, --onnx adoption, atomic writes."""
from __future__ import annotations

import numpy as np
import pytest

from engine.errors import ConfigError, ParityError
from exporters.config import ExportConfig, check_imgsz, parse_imgsz
from exporters.io import atomic_path

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("ultralytics")

from engine.metadata import anchor_count  # noqa: E402
from exporters.onnx_export import export_onnx  # noqa: E402


def _dims(vi):
    return [d.dim_value or d.dim_param for d in vi.type.tensor_type.shape.dim]


@pytest.mark.parametrize("text,expected", [("640", (640, 640)), ("384,640", (384, 640)), ("384x640", (384, 640)),
                                           (320, (320, 320)), (None, None)])
def test_parse_imgsz(text, expected):
    assert parse_imgsz(text) == expected


@pytest.mark.parametrize("text", ["abc", "0", "-32", "1,2,3", "640,"  "x"])
def test_parse_imgsz_rejects(text):
    with pytest.raises(ConfigError, match="--imgsz"):
        parse_imgsz(text)


def test_imgsz_must_be_stride_multiple_and_fix_is_named():
    with pytest.raises(ConfigError, match="try --imgsz 384,640"):
        check_imgsz((380, 640), 32)


def test_static_export_shapes_and_slim(demo_onnx, demo_pt, export_dir):
    m = onnx.load(str(demo_onnx))
    assert _dims(m.graph.input[0]) == [1, 3, 320, 320]
    assert _dims(m.graph.output[0]) == [1, 7, anchor_count((320, 320), (8, 16, 32))]
    raw = export_onnx(ExportConfig(weights=demo_pt, out=export_dir / "noslim", simplify=False), log=lambda s: None)
    assert len(m.graph.node) < len(onnx.load(str(raw.path)).graph.node)  # onnxslim removed nodes


def test_rectangular_dynamic_export_runs_any_batch(demo_pt, export_dir):
    logs = []
    art = export_onnx(ExportConfig(weights=demo_pt, imgsz=(384, 640), dynamic=True, out=export_dir / "dyn"),
                      log=logs.append)
    m = onnx.load(str(art.path))
    assert _dims(m.graph.input[0]) == ["batch", 3, 384, 640]
    assert art.metadata.batch is None and art.metadata.imgsz == (384, 640)
    sess = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    for b in (1, 3):
        out = sess.run(None, {"images": np.zeros((b, 3, 384, 640), np.float32)})[0]
        assert out.shape == (b, 7, anchor_count((384, 640), (8, 16, 32)))
    assert any("parity" in line and "OK" in line for line in logs)
    assert art.parity.ok and art.parity.n_images == 4 and art.parity.max_abs < 1e-2


def test_static_batch_export(demo_pt, export_dir):
    art = export_onnx(ExportConfig(weights=demo_pt, batch=2, out=export_dir / "b2"), log=lambda s: None)
    assert _dims(onnx.load(str(art.path)).graph.input[0])[0] == 2 and art.metadata.batch == 2


def test_adopt_ultralytics_onnx(demo_pt, tmp_path):
    """--onnx takes Ultralytics' own export (no metadata of ours) and adds ours; parity vs the source."""
    import shutil

    from ultralytics import YOLO

    shutil.copy(demo_pt, tmp_path / "u.pt")
    src = YOLO(str(tmp_path / "u.pt")).export(format="onnx", imgsz=320, verbose=False)
    art = export_onnx(ExportConfig(onnx=tmp_path / "u.onnx", out=tmp_path / "out"), log=lambda s: None)
    assert str(src).endswith("u.onnx")
    # the DFL rewrite changes only float rounding: about 1e-4 px on boxes of up to 320 px
    assert art.metadata.names == ("disc", "box", "triangle") and art.parity.max_abs < 1e-3


def test_parity_failure_writes_nothing(demo_pt, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ParityError, match="FAIL"):
        export_onnx(ExportConfig(weights=demo_pt, out=out, parity_tol=1e-12), log=lambda s: None)
    assert list(out.iterdir()) == []  # no artifact, no temp file, no temp folder


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    final = tmp_path / "a.onnx"
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(final) as tmp:
        tmp.write_bytes(b"whole")
    assert final.read_bytes() == b"whole" and list(tmp_path.iterdir()) == [final]


@pytest.mark.parametrize("arch,levels", [("yolov8n-p2", (4, 8, 16, 32)), ("yolov8n-p6", (8, 16, 32, 64))])
def test_a_p2_or_p6_head_keeps_its_own_anchor_count_everywhere(arch, levels, tmp_path):
    """Strides 8, 16, 32 were assumed: --no-simplify declared a P6 output of 2100 rows that makes 2125, the NMS
    tail failed ('incompatible shapes'), --onnx refused Ultralytics' own P2/P6 export as 'not a raw head' and
    the Triton repository of a P2 model was withheld."""
    from pathlib import Path

    import torch
    import ultralytics

    from engine.metadata import anchor_count
    from exporters.end2end import End2EndConfig, TailKind, export_end2end
    from exporters.triton import tensor_specs

    pt = tmp_path / f"{arch}.pt"
    torch.save({"model": ultralytics.YOLO(f"{arch}.yaml").model}, pt)
    imgsz = (128, 192)
    want = anchor_count(imgsz, levels)
    for simplify in (True, False):
        art = export_onnx(ExportConfig(weights=pt, imgsz=imgsz, simplify=simplify, out=tmp_path / f"s{simplify}"),
                          log=lambda s: None)
        assert _dims(onnx.load(str(art.path)).graph.output[0])[2] == want == art.metadata.anchors
        sess = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
        assert sess.run(None, {"images": np.zeros((1, 3, *imgsz), np.float32)})[0].shape[2] == want
        assert tensor_specs(art.metadata)[1][0].dims[2] == want
    e2e, _ = export_end2end(art.path, End2EndConfig(kind=TailKind.NMS, max_det=50), tmp_path / "e2e",
                            log=lambda s: None)
    num = ort.InferenceSession(str(e2e), providers=["CPUExecutionProvider"]).run(
        None, {"images": np.random.default_rng(0).random((1, 3, *imgsz), np.float32)})[0]
    assert num.shape == (1, 1)
    src = Path(ultralytics.YOLO(str(pt)).export(format="onnx", imgsz=list(imgsz), opset=17, verbose=False))
    adopted = export_onnx(ExportConfig(onnx=src, out=tmp_path / "adopted"), log=lambda s: None)
    assert adopted.metadata.anchors == want and adopted.metadata.stride == levels[-1]
