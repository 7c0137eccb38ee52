"""How stable the gate's sensitivity ranking is: two disjoint draws of images, ranked on their own.

    python -m exporters.build --weights W --imgsz S --int8 --data D.yaml --max-map-drop 100 --engine none --out A
    python -m benchmarks.rank_stability --deploy A --stem W_STEM --data FRESH.yaml [--images 256] [--sizes 32,128]

Both INT8 forms in ``--deploy`` (built with ``--max-map-drop 100``, so that no layer beyond the rules is
float) are run beside their FP32 ONNX on ``--images`` images of ``--data`` (its ``--split``, letterboxed as
calibration images are), once; then for each size N, ``--pairs`` random pairs of disjoint draws of N of them
are ranked on their own, by each statistic of a tensor's noise-to-signal ratio: ``typical`` (the build's,
:func:`exporters.sensitivity.typical_nsr`) and ``ratio-of-sums`` (the build's before commit b767ae4). It
prints, per form and statistic, the mean and the worst over the pairs of what one draw's top 8 layers carry
on the other draw (:class:`exporters.sensitivity.Stability`: 1.0, the same error bought) and how many of the
8 layers both name. The figures of benchmarks/RESULTS.md, "The sensitivity ranking's images", came from the
same computation.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from engine.cli import run_cli
from engine.errors import ConfigError


def ratio_of_sums(err: np.ndarray, sig: np.ndarray) -> np.ndarray:
    """A tensor's noise-to-signal ratio as its squared error summed over the images over its squared value
    summed over them: the build's statistic before commit b767ae4."""
    from exporters.sensitivity import nsr_of

    return nsr_of(err.sum(0), sig.sum(0))


STATISTICS = {"typical": None, "ratio-of-sums": ratio_of_sums}  # None: the build's (typical_nsr)


def draw_sizes(text: str) -> list[int]:
    """``--sizes``: comma-separated draw sizes, each at least 2."""
    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 2:
        raise ConfigError(f"--sizes {text!r} is not a list of draw sizes",
                          "give whole numbers of at least 2: --sizes 32,128")
    return sizes


def form_errors(deploy: Path, stem: str, model, target, images):
    """:class:`exporters.sensitivity.LayerErrors` of one INT8 form of ``deploy`` against its FP32 ONNX
    (``model``, loaded), skipping what the build's ranking skips (the rules' float nodes)."""
    from exporters.quantize import default_float, form_float
    from exporters.sensitivity import layer_errors, onnx_runs

    qdq = deploy / f"{stem}{target.suffix}"
    if not qdq.is_file():
        raise ConfigError(f"{qdq} not found", f"build it first: python -m exporters.build --int8 --out {deploy}")
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    base, _, _ = default_float(model, (1, 3, *dims[2:]))
    return layer_errors(*onnx_runs(deploy / f"{stem}.onnx", qdq, [*base, *form_float(model, target)]), images)


def draws(n_images: int, size: int, pairs: int, seed: int = 0):
    """``pairs`` pairs of disjoint random draws of ``size`` of ``n_images`` images (row indices)."""
    rng = np.random.default_rng(seed)
    for _ in range(pairs):
        p = rng.permutation(n_images)
        yield p[:size], p[size: 2 * size]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deploy", type=Path, required=True, help="a build's output folder (both INT8 forms)")
    ap.add_argument("--stem", default="demo", help="the model's file stem in --deploy (default: demo)")
    ap.add_argument("--data", type=Path, required=True, help="a data.yaml or image folder to draw images from")
    ap.add_argument("--split", default="val", help="the data.yaml split (default: val; never the calibration images)")
    ap.add_argument("--images", type=int, default=256, help="how many images to run, a seeded subset (default: 256)")
    ap.add_argument("--sizes", default="32,128", help="draw sizes N; a pair needs 2N images (default: 32,128)")
    ap.add_argument("--pairs", type=int, default=30, help="pairs of disjoint draws per size (default: 30)")
    args = ap.parse_args(argv)
    return run_cli(lambda: _run(args), False)


def _run(args: argparse.Namespace) -> int:
    """Measure and print the table."""
    import onnx

    from calibration import CalibrationConfig
    from calibration.readers import CalibrationImages, open_source
    from exporters.quantize import QuantTarget
    from exporters.sensitivity import TOP

    sizes = draw_sizes(args.sizes)
    if max(sizes) * 2 > args.images:
        raise ConfigError(f"--sizes up to {max(sizes)} need {2 * max(sizes)} images; --images is {args.images}",
                          "raise --images or lower --sizes")
    fp32 = args.deploy / f"{args.stem}.onnx"
    if not fp32.is_file():
        raise ConfigError(f"{fp32} not found", f"build it first: python -m exporters.build --int8 --out {args.deploy}")
    source = open_source(CalibrationConfig(args.data, split=args.split, max_images=args.images, seed=1))
    model = onnx.load(str(fp32))
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    images = CalibrationImages(source, (dims[2], dims[3]), 1, show_progress=False, log=lambda s: None)
    print(f"{source.description}; {args.pairs} pairs of disjoint draws per size; top {TOP} layers")
    for target in QuantTarget:
        errors = form_errors(args.deploy, args.stem, model, target, images)
        n = len(errors.err)
        for name, nsr in STATISTICS.items():
            cells = []
            for size in sizes:
                if 2 * size > n:
                    cells.append(f"N={size}: only {n} images read")
                    continue
                got = [errors.stability(a, b, nsr) for a, b in draws(n, size, args.pairs)]
                cap, ov = [s.capture for s in got], [s.overlap for s in got]
                cells.append(f"N={size}: carries {np.mean(cap):.2f} (worst {np.min(cap):.2f}), "
                             f"{np.mean(ov):.0%} the same layers")
            print(f"{target.value:8s} {name:13s} " + " | ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
