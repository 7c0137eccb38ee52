"""Where the INT8 CPU form's time goes: its quantized SiLUs against everything else.

    python -m exporters.build                  # deploy/demo.onnx, deploy/demo.int8-cpu.onnx
    python -m benchmarks.int8_breakdown [--deploy deploy] [--stem demo] [--threads N]

ONNX Runtime has no quantized SiLU: in the U8S8 graph each ``x * sigmoid(x)`` runs as two passes over
the tensor (``QLinearSigmoid``, a lookup table, then ``QLinearMul``), where the FP32 graph runs one
fused ``QuickGelu``. To measure their share without a profiler (whose per-node overhead distorts a
graph of ~300 small operators), this times inference alone (``session.run``, batch 1, a letterboxed
demo frame) of three models in interleaved rounds: the FP32 graph, the INT8 CPU form, and a copy of
the INT8 CPU form with every quantized SiLU bypassed (its consumers read the SiLU's input). The copy
computes wrong detections and exists only for this timing; it is written to a temporary folder.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.env import cpu_model
from engine.cli import run_cli
from engine.errors import ModelLoadError
from exporters.config import DEMO_DIR, REPO_ROOT


def bypass_silu(model) -> int:
    """Rewire ``model`` (a QDQ ``ModelProto``, in place) so that each quantized SiLU is skipped.

    A quantized SiLU is ``DQ(x_q) -> Sigmoid -> Q -> DQ`` and ``Mul(DQ(x_q), that) -> Q(y)``; readers of
    ``y_q`` are given ``x_q`` instead, and nodes whose outputs nobody reads any more are dropped.

    Returns:
        the number of SiLUs bypassed.
    """
    from exporters.onnx_graph import drop_unused_initializers, graph_index

    g = model.graph
    index = graph_index(model)
    producer, readers = index.producer, index.consumers
    rename = {}
    for sig in (n for n in g.node if n.op_type == "Sigmoid"):
        dq = producer.get(sig.input[0])
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        muls = [r for r in readers.get(dq.output[0], []) if r.op_type == "Mul"]
        qs = readers.get(muls[0].output[0], []) if len(muls) == 1 else []
        if len(qs) == 1 and qs[0].op_type == "QuantizeLinear":
            rename[qs[0].output[0]] = dq.input[0]
    for n in g.node:
        for k, i in enumerate(n.input):
            if i in rename:
                n.input[k] = rename[i]
    wanted = {o.name for o in g.output}
    while True:  # drop what no longer feeds an output
        read = {i for n in g.node for i in n.input} | wanted
        keep = [n for n in g.node if any(o in read for o in n.output)]
        if len(keep) == len(g.node):
            break
        del g.node[:]
        g.node.extend(keep)
    drop_unused_initializers(model)
    return len(rename)


def _session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deploy", type=Path, default=REPO_ROOT / "deploy", help="folder of the build (default: deploy)")
    ap.add_argument("--stem", default="demo", help="artifact stem (default: demo)")
    ap.add_argument("--iters", type=int, default=30, help="timed runs per model per round (default: 30)")
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default: 15)")
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (default: 0 = all cores)")
    args = ap.parse_args(argv)
    return run_cli(lambda: _run(args), False)


def _run(args: argparse.Namespace) -> int:
    """Measure and print the breakdown."""

    import onnx
    import onnxruntime as ort

    from engine.eval.datasets import list_images, read_image
    from engine.preprocess import Letterbox, bgr_from_planes

    fp32, int8 = args.deploy / f"{args.stem}.onnx", args.deploy / f"{args.stem}.int8-cpu.onnx"
    for p in (fp32, int8):
        if not p.is_file():
            raise ModelLoadError(f"{p} not found", "run python -m exporters.build first, or pass --deploy / --stem")
    with tempfile.TemporaryDirectory(prefix="yolodeploy-breakdown-") as tmp:
        m = onnx.load(str(int8))
        n_silu = bypass_silu(m)
        bypassed = Path(tmp) / "no-silu.onnx"
        onnx.save(m, str(bypassed))
        models = {"fp32": fp32, "int8-cpu": int8, "int8-cpu, SiLUs bypassed (timing only)": bypassed}
        sessions = {k: _session(p, args.threads) for k, p in models.items()}
        first = sessions["fp32"].get_inputs()[0]
        frame = read_image(list_images(DEMO_DIR / "val" / "images")[0])
        x = Letterbox(tuple(first.shape[2:]))([frame])[0].copy()
        feeds = {}  # the same letterboxed frame in each model's pixel format (the CPU form takes uint8 BGR)
        for k, s in sessions.items():
            i = s.get_inputs()[0]
            feeds[k] = {i.name: bgr_from_planes(x) if i.type == "tensor(uint8)" else x}
            for _ in range(10):
                s.run(None, feeds[k])
        blocks: dict[str, list[float]] = {k: [] for k in sessions}
        for _ in range(args.rounds):
            for k, s in sessions.items():
                time.sleep(0.01)
                ts = []
                for _ in range(args.iters):
                    t = time.perf_counter()
                    s.run(None, feeds[k])
                    ts.append(time.perf_counter() - t)
                blocks[k].append(float(np.median(ts)))
        del sessions
    ms = {k: float(np.median(v)) * 1e3 for k, v in blocks.items()}
    q, nq = ms["int8-cpu"], ms["int8-cpu, SiLUs bypassed (timing only)"]
    print(f"{cpu_model()}, {os.cpu_count()} cores, ONNX Runtime {ort.__version__} CPU, input {list(x.shape)}, "
          f"threads {args.threads or 'all'}; inference only, median of {args.rounds} rounds x {args.iters} runs\n")
    print("| model | inference ms | vs FP32 |\n|---|---|---|")
    for k, v in ms.items():
        print(f"| {k} | {v:.2f} | {ms['fp32'] / v:.2f}x |")
    print(f"\n{n_silu} quantized SiLUs take {q - nq:.2f} ms of the INT8 CPU form's {q:.2f} ms ({(q - nq) / q:.0%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
