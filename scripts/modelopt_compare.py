"""Our INT8 forms beside the other INT8 exports of the same model, on the same images, each drop with its interval.

Compared, all calibrated on the same images and scored on the same labelled images:

* ours: the build's TensorRT form and CPU form (``python -m exporters.build ... --int8``, run first);
* NVIDIA ModelOpt with Ultralytics 8.4's TensorRT 11 settings (``scripts/_modelopt_quantize.py``), FP16
  elsewhere (what Ultralytics does) unless ``--modelopt-float fp32``;
* NNCF's own graphs, MIXED and PERFORMANCE presets, on our FP32 ONNX (``--nncf``);
* Ultralytics' OpenVINO INT8 export (NNCF inside), against Ultralytics' OpenVINO FP32 export, both run
  through Ultralytics' own predictor (``--openvino``; its letterbox differs from ours, so it is held to
  its own FP32).

ModelOpt is not a dependency: it pulls torch, onnxruntime-gpu and cupy. Install it once in its own venv
(nothing from it is committed)::

    python3 -m venv /tmp/modelopt-venv && /tmp/modelopt-venv/bin/pip install "nvidia-modelopt[onnx]"
    python -m exporters.build --weights best.pt --imgsz 640 --int8 --data eval.yaml --calib train/images \\
        --calib-images 300 --max-map-drop 100 --engine none --no-end2end --out build/cmp
    python scripts/modelopt_compare.py --deploy build/cmp --stem best --calib train/images --calib-images 300 \\
        --eval-data eval.yaml --nncf --openvino --weights best.pt

ONNX files run on ONNX Runtime's CPU provider through our runtime, scored by our evaluator (COCO mAP50-95,
conf 0.001, IoU 0.7). Each drop comes with a 90 % paired-bootstrap interval over the images
(:mod:`exporters.map_bootstrap`). Prints a Markdown table and writes ``<out>/modelopt_compare.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _calibration(args, imgsz) -> tuple[np.ndarray, str, list[Path]]:
    """The calibration images as the build reads them (a folder, a list, a data.yaml's train split or a video):
    the letterboxed batch, its description and the image files for Ultralytics' own export (none for a video,
    whose items are frame numbers)."""
    from calibration import CalibrationConfig, CalibrationImages, open_source
    from calibration.readers import SourceKind

    source = open_source(CalibrationConfig(args.calib or args.data, max_images=args.calib_images))
    batch = np.concatenate(list(CalibrationImages(source, imgsz, 1, show_progress=False)))
    files = [Path(p).resolve() for p in source.items] if source.kind is SourceKind.IMAGES else []
    return batch, source.description, files


def _modelopt(args, fp32: Path, model, calib_npy: Path) -> Path:
    import onnx

    path = args.out / f"{args.stem}.modelopt-{args.modelopt_float}.onnx"
    subprocess.run([str(args.modelopt_python), str(ROOT / "scripts" / "_modelopt_quantize.py"), str(fp32),
                    str(calib_npy), str(path), args.modelopt_float], check=True)
    q = onnx.load(str(path))  # ModelOpt drops metadata_props: copy ours so the runtime knows the model
    del q.metadata_props[:]
    q.metadata_props.extend(model.metadata_props)
    onnx.save(q, str(path))
    return path


def _nncf_native(args, fp32: Path, model, calib: np.ndarray) -> dict[str, Path]:
    import nncf
    import onnx

    from calibration import nncf_dataset
    from exporters.quantize import decode_tail

    out = {}
    for preset in ("mixed", "performance"):
        q = nncf.quantize(model, nncf_dataset([x[None] for x in calib], model.graph.input[0].name),
                          preset=getattr(nncf.QuantizationPreset, preset.upper()), subset_size=len(calib),
                          ignored_scope=nncf.IgnoredScope(names=decode_tail(model)))
        path = args.out / f"{args.stem}.nncf-{preset}.onnx"
        del q.metadata_props[:]
        q.metadata_props.extend(model.metadata_props)
        onnx.save(q, str(path))
        out[f"NNCF's own graph, {preset.upper()} preset"] = path
    return out


def _openvino(args, imgsz, items, calib_files: list[Path]) -> dict[str, list]:
    """Ultralytics' OpenVINO FP32 and INT8 exports' detections on ``items`` (Ultralytics' predictor), the INT8
    export calibrated on ``calib_files`` (the files our forms calibrated on, whatever ``--calib`` was)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    from benchmarks.openvino_artifacts import ultralytics_openvino
    from engine.detections import Detections
    from engine.eval.datasets import read_image

    work = args.out / "openvino"
    shutil.rmtree(work, ignore_errors=True)  # exported afresh on every run: the calibration may have changed
    work.mkdir(parents=True)
    dets = {}
    for label, int8 in (("Ultralytics OpenVINO FP32", False), ("Ultralytics OpenVINO INT8 (NNCF)", True)):
        exported = ultralytics_openvino(args.weights, imgsz[0], work, int8, calib_files, print)
        model = YOLO(str(exported), task="detect")
        cls = tuple(str(model.names[i]) for i in sorted(model.names))
        out = []
        for item in items:
            r = model.predict(read_image(item.path), imgsz=imgsz[0], conf=0.001, iou=0.7, max_det=300,
                              device="cpu", verbose=False)[0].boxes
            out.append(Detections(r.xyxy.numpy(), r.conf.numpy(), r.cls.numpy(), cls) if len(r) else Detections.empty(cls))
        dets[label] = out
    return dets


def main(argv: list[str] | None = None) -> int:
    from engine.eval.datasets import load_split
    from engine.metadata import from_onnx_props
    from exporters.accuracy import detect_onnx, score_detections
    from exporters.map_bootstrap import bootstrap_maps, match_table, paired_drop

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--deploy", type=Path, default=ROOT / "deploy", help="folder of the build's artifacts")
    ap.add_argument("--stem", default="demo", help="artifact stem (<stem>.onnx, <stem>.int8.onnx, ...)")
    ap.add_argument("--data", type=Path, default=ROOT / "assets" / "demo" / "data.yaml",
                    help="data.yaml: train split calibrates, val split scores")
    ap.add_argument("--calib", type=Path, default=None, help="as the build's --calib (default: the train split of --data)")
    ap.add_argument("--calib-images", type=int, default=500, help="as the build's --calib-images")
    ap.add_argument("--eval-data", type=Path, default=None, help="score on this data.yaml instead of --data")
    ap.add_argument("--eval-split", default="val", help="split of the scoring data.yaml")
    ap.add_argument("--modelopt-python", type=Path, default=Path("/tmp/modelopt-venv/bin/python"),
                    help="python of a venv with nvidia-modelopt[onnx] ('none': skip ModelOpt)")
    ap.add_argument("--modelopt-float", default="fp16", choices=("fp16", "fp32"), help="ModelOpt's high_precision_dtype")
    ap.add_argument("--nncf", action="store_true", help="also NNCF's own MIXED and PERFORMANCE graphs")
    ap.add_argument("--openvino", action="store_true", help="also Ultralytics' OpenVINO INT8 export (needs --weights)")
    ap.add_argument("--weights", type=Path, default=ROOT / "assets" / "demo" / "demo.pt", help="the .pt, for --openvino")
    ap.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "modelopt", help="work and result folder")
    args = ap.parse_args(argv)

    import onnx

    fp32 = args.deploy / f"{args.stem}.onnx"
    model = onnx.load(str(fp32))
    meta = from_onnx_props({p.key: p.value for p in model.metadata_props})
    args.out.mkdir(parents=True, exist_ok=True)
    calib, described, calib_files = _calibration(args, meta.imgsz)
    if args.openvino and not calib_files:
        print(f"error: --openvino: Ultralytics' INT8 export calibrates on image files; --calib {args.calib} is a video\n"
              "  fix: pass --calib with a folder, list or data.yaml of images", file=sys.stderr)
        return 2
    print(f"calibration: {described} -> {calib.shape}", flush=True)
    models = {"FP32 ONNX": fp32}
    for suffix, label in ((".int8.onnx", "ours: INT8 TensorRT form"), (".int8-cpu.onnx", "ours: INT8 CPU form (U8S8)")):
        if (args.deploy / f"{args.stem}{suffix}").is_file():
            models[label] = args.deploy / f"{args.stem}{suffix}"
    if str(args.modelopt_python) != "none":
        np.save(args.out / "calib.npy", calib)
        t = time.perf_counter()
        models[f"ModelOpt INT8 (Ultralytics 8.4 settings, {args.modelopt_float} elsewhere)"] = _modelopt(
            args, fp32, model, args.out / "calib.npy")
        print(f"ModelOpt quantized in {time.perf_counter() - t:.0f}s", flush=True)
    if args.nncf:
        models.update(_nncf_native(args, fp32, model, calib))

    eval_data = args.eval_data or args.data
    items = load_split(eval_data, args.eval_split)
    dets = {label: detect_onnx(path, items) for label, path in models.items()}
    refs = {label: "FP32 ONNX" for label in dets}
    if args.openvino:
        ov = _openvino(args, meta.imgsz, items, calib_files)
        dets.update(ov)
        refs.update(dict.fromkeys(ov, "Ultralytics OpenVINO FP32"))
    tables = {label: match_table(items, d) for label, d in dets.items()}
    ref_maps = {r: bootstrap_maps(tables[r], args.resamples) for r in set(refs.values()) if r in tables}
    rows = []
    for label, d in dets.items():
        res = score_detections(items, d)
        row = {"model": label, "map50": round(res.map50, 4), "map50_95": round(res.map50_95, 4), "reference": refs[label]}
        if refs[label] != label:
            drop = paired_drop(tables[refs[label]], tables[label], args.resamples, reference_maps=ref_maps[refs[label]])
            row.update(drop_points=round(drop.drop, 2), low=round(drop.low, 2), high=round(drop.high, 2))
        rows.append(row)
    print(f"\n{args.eval_split}: {eval_data} ({len(items)} images); calibration: {described}; ONNX Runtime CPU; "
          "conf 0.001, IoU 0.7; 90 % paired-bootstrap intervals\n")
    print("| model | mAP50-95 | drop vs its FP32 (points) | 90 % interval |\n|---|---|---|---|")
    for r in rows:
        drop = f"{r['drop_points']:.2f}" if "drop_points" in r else "reference"
        span = f"{r['low']:.2f} to {r['high']:.2f}" if "low" in r else ""
        print(f"| {r['model']} | {r['map50_95']:.4f} | {drop} | {span} |")
    (args.out / "modelopt_compare.json").write_text(json.dumps(
        {"data": str(eval_data), "split": args.eval_split, "calibration": described, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
