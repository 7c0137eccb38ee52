"""The OpenVINO models the OpenVINO comparisons run: ours and Ultralytics', at one size, from one ``.pt``.

Ours: the FP32 ONNX (``exporters.onnx_export``), its FP32 IR (``exporters.openvino.export_openvino``), its
INT8 IR (``quantize_openvino``, NNCF) and the ONNX Runtime INT8 CPU form for reference. Ultralytics':
``YOLO(pt).export(format="openvino")`` and the same with ``int8=True`` (NNCF too), calibrated on the same
images (Ultralytics reads them from a data.yaml's ``val`` split, so a yaml pointing there is written).
Everything goes to ``<out>/<size>/`` and is reused while it exists (delete the folder to rebuild).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

Log = Callable[[str], None]


@dataclass(frozen=True)
class OvModels:
    """The files of one size: ours (``onnx``, ``ov_fp32``, ``ov_int8``, ``int8_cpu``) and the peers'."""

    imgsz: int
    onnx: Path
    ov_fp32: Path
    ov_int8: Path
    int8_cpu: Path | None
    peer_fp32: Path | None
    peer_int8: Path | None


def build(weights: Path, imgsz: int, calib: Path, out: Path, calib_images: int = 300, peers: bool = True,
          cpu_form: bool = True, log: Log = print) -> OvModels:
    """Build (or reuse) every model of size ``imgsz`` in ``out/<imgsz>/``; ``calib``: an image folder or a data.yaml (train split)."""
    import onnxruntime as ort

    from calibration.config import CalibrationConfig
    from calibration.readers import CalibrationImages, open_source
    from engine.artifacts import FP32_IR, INT8_CPU, INT8_IR
    from engine.metadata import from_onnx_props
    from exporters.config import ExportConfig
    from exporters.onnx_export import export_onnx
    from exporters.openvino import export_openvino, quantize_openvino

    folder = Path(out) / str(imgsz)
    stem = Path(weights).stem
    onnx_path = folder / f"{stem}.onnx"
    if not onnx_path.is_file():
        export_onnx(ExportConfig(weights=Path(weights), imgsz=(imgsz, imgsz), out=folder), log=log)
    meta = from_onnx_props(ort.InferenceSession(str(onnx_path)).get_modelmeta().custom_metadata_map)
    fp32, int8 = FP32_IR.path(folder, stem), INT8_IR.path(folder, stem)
    if not fp32.is_dir():
        export_openvino(onnx_path, folder, meta)
        log(f"wrote {fp32}")
    source = open_source(CalibrationConfig(source=Path(calib), max_images=calib_images))
    if not int8.is_dir():
        quantize_openvino(onnx_path, CalibrationImages(source, meta.imgsz, 1, show_progress=False, log=log),
                          folder, meta)
        log(f"wrote {int8}")
    cpu = INT8_CPU.path(folder, stem) if cpu_form else None
    if cpu is not None and not cpu.is_file():
        make_cpu_form(onnx_path, meta, folder, calib, calib_images, log)
    pf32 = pint8 = None
    if peers:
        pf32, pint8 = (ultralytics_openvino(weights, imgsz, folder, q, [p for p in source.items], log) for q in (False, True))
    return OvModels(imgsz, onnx_path, fp32, int8, cpu, pf32, pint8)


def make_cpu_form(onnx_path: Path, meta, folder: Path, calib: Path, n: int, log: Log) -> Path:
    """Our ONNX Runtime INT8 CPU form as the build makes it (its calibration and rewrites, the decode tail and,
    where cheap, the class branch float), without the build's gate: ``folder/<stem>.int8-cpu.onnx``."""
    import onnx

    from calibration.config import CalibrationConfig
    from exporters.onnx_export import write_metadata
    from exporters.quantize import QuantTarget, default_float, int8_metadata, load_or_calibrate, quantize_model

    model = onnx.load(str(onnx_path))
    cfg = CalibrationConfig(source=Path(calib), max_images=n)
    ranges, _ = load_or_calibrate(onnx_path, model, meta, cfg, folder / "calib.json", log, False)
    final = folder / f"{onnx_path.stem}.int8-cpu.onnx"
    quantize_model(onnx_path, ranges, QuantTarget.CPU, default_float(model, (1, 3, *meta.imgsz))[0], final)
    q = onnx.load(str(final))
    write_metadata(q, int8_metadata(meta, q))
    onnx.save(q, str(final))
    return final


def ultralytics_openvino(weights: Path, imgsz: int, folder: Path, int8: bool, images: list[Path], log: Log) -> Path:
    """Ultralytics' own OpenVINO export (``int8``: NNCF on ``images``, our calibration files) as
    ``folder/ultralytics_[int8_]openvino_model`` (kept: a folder already there is returned as it is)."""
    final = folder / f"ultralytics_{'int8_' if int8 else ''}openvino_model"
    if final.is_dir():
        return final
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    work = folder / "ultralytics-work"
    work.mkdir(parents=True, exist_ok=True)
    pt = shutil.copy2(weights, work / Path(weights).name)
    kwargs = {}
    if int8:  # Ultralytics calibrates on a data.yaml's val split: point one at our calibration images
        listing = work / "calib.txt"
        listing.write_text("".join(f"{Path(p).resolve()}\n" for p in images), encoding="utf-8")  # read as UTF-8
        data = work / "calib.yaml"
        names = YOLO(str(pt)).names
        data.write_text(f"train: {listing}\nval: {listing}\nnames: {dict(names)}\n", encoding="utf-8")
        kwargs = dict(int8=True, data=str(data), fraction=1.0)
    log(f"Ultralytics export: YOLO({pt.name}).export(format='openvino', imgsz={imgsz}{', int8=True' if int8 else ''})")
    made = Path(YOLO(str(pt)).export(format="openvino", imgsz=imgsz, **kwargs))
    shutil.move(str(made), final)
    return final


def add_arguments(ap, calib_default: Path | None) -> None:
    """The flags both OpenVINO comparisons take: the model, its calibration, the sizes, the output folder."""
    from exporters.config import DEMO_WEIGHTS

    ap.add_argument("--weights", type=Path, default=DEMO_WEIGHTS, help="the .pt (default: the demo)")
    ap.add_argument("--calib", type=Path, default=calib_default,
                    help=f"calibration images or a data.yaml (its train split); default: {calib_default or 'the --data yaml'}")
    ap.add_argument("--calib-images", type=int, default=300, help="calibration images used (default: 300)")
    ap.add_argument("--imgsz", type=lambda s: [int(v) for v in s.split(",")], default=[320, 640],
                    help="square sizes, comma list (default: 320,640)")
    ap.add_argument("--out", type=Path, default=Path("runs/openvino"), help="models and results (default: runs/openvino)")
    ap.add_argument("--debug", action="store_true", help="full tracebacks")


def report_cli(args, measure: Callable, table: Callable, name: str) -> int:
    """Run ``measure(args)``, save its report as ``<out>/<name>`` and print ``table(report)``; errors as the CLIs print them."""
    import json

    from engine.cli import run_cli

    def run() -> None:
        report = measure(args)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / name).write_text(json.dumps(report, indent=1), encoding="utf-8")
        print(table(report))

    return run_cli(run, args.debug)
