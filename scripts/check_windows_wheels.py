"""Check that every runtime dependency ships a Windows (win_amd64) wheel.

The first user deploys on Windows with an RTX laptop, so the runtime (base install) and the
``gpu`` and ``openvino`` extras must install there without a compiler. The TensorRT extras (``rtx``, ``trt``) are
listed but not judged: PyPI serves only a source distribution for ``tensorrt-rtx`` and ``tensorrt``,
so no wheel query can answer for them.
The base requirements are fetched with ``pip download --only-binary=:all: --platform win_amd64``;
the extras' wheels are large (onnxruntime-gpu: hundreds of MB), so for them pip resolves the same query with
``pip install --dry-run`` (wheel metadata only, nothing large is downloaded).

    python scripts/check_windows_wheels.py [--python-version 3.11]

Reads the requirements from the installed distribution's metadata, so it checks what setup.py says.
Exit code 1 lists every requirement without a Windows wheel.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import subprocess
import sys
import tempfile

DIST = "yolo-deploy"
RUNTIME_EXTRAS = ("gpu", "openvino")
UNCHECKED_EXTRAS = ("rtx", "trt")


def requirements() -> tuple[list[str], list[str], list[str]]:
    """(base, checked-extra, unchecked-extra) requirements as declared by the installed distribution."""
    base, extra, unchecked = [], [], []
    for req in importlib.metadata.requires(DIST) or []:
        spec, _, marker = (part.strip() for part in req.partition(";"))
        if not marker:
            base.append(spec)
        elif any(f'extra == "{e}"' in marker for e in RUNTIME_EXTRAS):
            extra.append(spec)
        elif any(f'extra == "{e}"' in marker for e in UNCHECKED_EXTRAS):
            unchecked.append(spec)
    extra = list(dict.fromkeys(extra))
    return base, extra, [u for u in dict.fromkeys(unchecked) if u not in extra]


def has_windows_wheel(req: str, pyver: str, dry_run: bool) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory() as tmp:
        common = ["--only-binary=:all:", "--platform", "win_amd64", "--python-version", pyver,
                  "--no-deps", "--quiet", "--disable-pip-version-check"]
        cmd = ([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--target", tmp]
               if dry_run else [sys.executable, "-m", "pip", "download", "-d", tmp]) + common + [req]
        p = subprocess.run(cmd, capture_output=True, text=True)
    return p.returncode == 0, (p.stderr.strip().splitlines() or [""])[-1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python-version", default="3.11", help="Windows Python to check for (default: 3.11)")
    args = ap.parse_args(argv)
    base, extra, unchecked = requirements()
    failed = []
    for req, dry in [(r, False) for r in base] + [(r, True) for r in extra]:
        ok, msg = has_windows_wheel(req, args.python_version, dry)
        print(f"{'ok  ' if ok else 'FAIL'} win_amd64 cp{args.python_version.replace('.', '')} {req}"
              + ("" if ok else f": {msg}"))
        if not ok:
            failed.append(req)
    for req in unchecked:
        print(f"n/a  win_amd64 {req}: PyPI has only a source distribution; not checkable here")
    if failed:
        print(f"{len(failed)} runtime requirement(s) have no Windows wheel: {', '.join(failed)}")
        return 1
    print(f"all {len(base) + len(extra)} runtime requirements have Windows wheels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
