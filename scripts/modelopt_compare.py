"""Our INT8 forms against NVIDIA ModelOpt with Ultralytics 8.4's TensorRT 11 settings, same model and images.

ModelOpt is not a dependency: it pulls torch, onnxruntime-gpu and cupy. Install it once in its own venv
(nothing from it is committed), then run this script with the project's Python:

    python3 -m venv /tmp/modelopt-venv
    /tmp/modelopt-venv/bin/pip install "nvidia-modelopt[onnx]"
    python -m exporters.build                      # deploy/demo.onnx, demo.int8.onnx, demo.int8-cpu.onnx
    python scripts/modelopt_compare.py --modelopt-python /tmp/modelopt-venv/bin/python

Steps: the calibration images are read and letterboxed by our reader (the same subset, seed and
preprocessing as the build's) and saved as one array; ModelOpt quantizes the FP32 ONNX from it in its
venv (``scripts/_modelopt_quantize.py``); then every model is scored by our evaluator on the val split,
on ONNX Runtime's CPU provider. Prints a Markdown table and writes ``<out>/modelopt_compare.json``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    from calibration import CalibrationConfig, CalibrationImages, open_source
    from engine.eval.datasets import load_split
    from engine.metadata import from_onnx_props
    from exporters.accuracy import drop_points, score_onnx

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--deploy", type=Path, default=ROOT / "deploy", help="folder of the build's artifacts")
    ap.add_argument("--stem", default="demo", help="artifact stem (<stem>.onnx, <stem>.int8.onnx, ...)")
    ap.add_argument("--data", type=Path, default=ROOT / "assets" / "demo" / "data.yaml",
                    help="data.yaml: train split calibrates, val split scores")
    ap.add_argument("--calib", type=Path, default=None, help="as the build's --calib (default: the train split of --data)")
    ap.add_argument("--calib-images", type=int, default=500, help="as the build's --calib-images")
    ap.add_argument("--modelopt-python", type=Path, default=Path("/tmp/modelopt-venv/bin/python"),
                    help="python of a venv with nvidia-modelopt[onnx]")
    ap.add_argument("--eval-data", type=Path, default=None,
                    help="score on this data.yaml instead of --data (e.g. a larger labelled set, for less noise)")
    ap.add_argument("--eval-split", default="val", help="split of the scoring data.yaml")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "modelopt", help="work and result folder")
    args = ap.parse_args(argv)

    import onnx

    fp32 = args.deploy / f"{args.stem}.onnx"
    model = onnx.load(str(fp32))
    meta = from_onnx_props({p.key: p.value for p in model.metadata_props})
    args.out.mkdir(parents=True, exist_ok=True)
    source = open_source(CalibrationConfig(args.calib or args.data, max_images=args.calib_images))
    calib = np.concatenate(list(CalibrationImages(source, meta.imgsz, 1, show_progress=False)))
    np.save(args.out / "calib.npy", calib)
    print(f"calibration: {source.description} -> {calib.shape}")

    models = {"FP32 ONNX": fp32}
    for high in ("fp16", "fp32"):
        path = args.out / f"{args.stem}.modelopt-{high}.onnx"
        t = time.perf_counter()
        subprocess.run([str(args.modelopt_python), str(ROOT / "scripts" / "_modelopt_quantize.py"), str(fp32),
                        str(args.out / "calib.npy"), str(path), high], check=True)
        q = onnx.load(str(path))  # ModelOpt drops metadata_props: copy ours so the runtime knows the model
        del q.metadata_props[:]
        q.metadata_props.extend(model.metadata_props)
        onnx.save(q, str(path))
        models[f"ModelOpt INT8 (Ultralytics 8.4 settings, {high} elsewhere)"] = path
        print(f"ModelOpt ({high}) quantized in {time.perf_counter() - t:.0f}s")
    for suffix, label in ((".int8.onnx", "ours: INT8 TensorRT form (S8S8)"), (".int8-cpu.onnx", "ours: INT8 CPU form (U8S8)")):
        if (args.deploy / f"{args.stem}{suffix}").is_file():
            models[label] = args.deploy / f"{args.stem}{suffix}"

    eval_data = args.eval_data or args.data
    items = load_split(eval_data, args.eval_split)
    results = {label: score_onnx(path, items) for label, path in models.items()}
    ref = results["FP32 ONNX"]
    rows = [{"model": label, "file": models[label].name, "map50": round(r.map50, 4), "map50_95": round(r.map50_95, 4),
             "drop_points": round(drop_points(ref, r), 2)} for label, r in results.items()]
    print(f"\n{args.eval_split}: {eval_data} ({ref.n_images} images, {ref.n_instances} objects); ONNX Runtime CPU; "
          "conf 0.001, IoU 0.7\n")
    print("| model | mAP50 | mAP50-95 | Δ mAP50-95 vs FP32 (points) |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['map50']:.4f} | {r['map50_95']:.4f} | {-r['drop_points']:+.2f} |")
    (args.out / "modelopt_compare.json").write_text(json.dumps({"data": str(eval_data), "split": args.eval_split, "calibration":
                                                               source.description, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
