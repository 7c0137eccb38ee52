#!/usr/bin/env bash
# TensorRT 10.x and 11.x: do the names our builder and backend call exist there? Neither can be installed
# from PyPI alone (tensorrt-cu12 and tensorrt-cu12-libs are stubs that fetch gigabytes of libraries from
# pypi.nvidia.com at install time) and their builder needs a GPU, so the check reads the string table of
# the 1.3 MB tensorrt-cu12-bindings wheel of each (PyPI, no dependencies), and imports TensorRT-RTX.
# Raise the versions when NVIDIA ships new ones (pip index versions tensorrt-cu12-bindings).
set -euo pipefail
cd "$(dirname "$0")/.."
python scripts/check_tensorrt_api.py --module tensorrt_rtx --pypi 10.16.1.11 --pypi 11.4.0.106
