"""Check that every runtime dependency ships a Windows (win_amd64) wheel.

The first user deploys on Windows with an RTX laptop, so the runtime (base install) and the
``export``, ``gpu``, ``openvino``, ``cuda`` and ``stream`` extras must install there without a compiler (each
requirement itself; their own dependencies are not resolved: pip evaluates environment markers for the
machine it runs on, not for Windows). The TensorRT extras (``rtx``, ``trt``) are
listed but not judged: PyPI serves only a source distribution for ``tensorrt-rtx`` and ``tensorrt``,
so no wheel query can answer for them.
The base requirements are fetched with ``pip download --only-binary=:all: --platform win_amd64``;
the runtime extras' wheels are large (onnxruntime-gpu: hundreds of MB), so for them pip resolves the same query with
``pip install --dry-run`` (wheel metadata only, nothing large is downloaded). The ``track`` and
``alerts`` extras are resolved the same way together with every package they pull in (supervision,
scipy, paho-mqtt …), so a dependency without a Windows wheel fails the check too.

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
RUNTIME_EXTRAS = ("export", "gpu", "openvino", "cuda", "stream")  # the build runs on the user's Windows machine too
WITH_DEPS_EXTRAS = ("track", "alerts")  # small wheels: resolved with everything they pull in
UNCHECKED_EXTRAS = ("rtx", "trt")


def requirements() -> tuple[list[str], list[str], list[str], list[str]]:
    """(base, checked-extra, checked-with-dependencies, unchecked-extra) requirements as declared."""
    base, extra, deps, unchecked = [], [], [], []
    for req in importlib.metadata.requires(DIST) or []:
        spec, _, marker = (part.strip() for part in req.partition(";"))
        if not marker:
            base.append(spec)
        elif any(f'extra == "{e}"' in marker for e in RUNTIME_EXTRAS):
            extra.append(spec)
        elif any(f'extra == "{e}"' in marker for e in WITH_DEPS_EXTRAS):
            deps.append(spec)
        elif any(f'extra == "{e}"' in marker for e in UNCHECKED_EXTRAS):
            unchecked.append(spec)
    extra = list(dict.fromkeys(extra))
    return base, extra, list(dict.fromkeys(deps)), [u for u in dict.fromkeys(unchecked) if u not in extra]


def has_windows_wheel(req: str | list[str], pyver: str, dry_run: bool, with_deps: bool = False) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory() as tmp:
        common = ["--only-binary=:all:", "--platform", "win_amd64", "--python-version", pyver,
                  "--quiet", "--disable-pip-version-check"] + ([] if with_deps else ["--no-deps"])
        cmd = ([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--target", tmp]
               if dry_run else [sys.executable, "-m", "pip", "download", "-d", tmp]) + common
        p = subprocess.run(cmd + ([req] if isinstance(req, str) else req), capture_output=True, text=True)
    return p.returncode == 0, (p.stderr.strip().splitlines() or [""])[-1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python-version", default="3.11", help="Windows Python to check for (default: 3.11)")
    args = ap.parse_args(argv)
    base, extra, deps, unchecked = requirements()
    failed = []
    for req, dry in [(r, False) for r in base] + [(r, True) for r in extra]:
        ok, msg = has_windows_wheel(req, args.python_version, dry)
        print(f"{'ok  ' if ok else 'FAIL'} win_amd64 cp{args.python_version.replace('.', '')} {req}"
              + ("" if ok else f": {msg}"))
        if not ok:
            failed.append(req)
    if deps:
        ok, msg = has_windows_wheel(deps, args.python_version, True, with_deps=True)
        print(f"{'ok  ' if ok else 'FAIL'} win_amd64 cp{args.python_version.replace('.', '')} {', '.join(deps)} "
              "and every dependency" + ("" if ok else f": {msg}"))
        if not ok:
            failed += deps
    for req in unchecked:
        print(f"n/a  win_amd64 {req}: PyPI has only a source distribution; not checkable here")
    if failed:
        print(f"{len(failed)} runtime requirement(s) have no Windows wheel: {', '.join(failed)}")
        return 1
    print(f"all {len(base) + len(extra) + len(deps)} runtime requirements have Windows wheels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
