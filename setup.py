"""Install the four packages: engine (runtime), exporters, calibration, benchmarks.

The base install is the lean runtime an edge box needs (NumPy, OpenCV, ONNX Runtime). Everything
else is an extra; see README.md ("Install") for which to pick.
"""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "engine" / "_version.py").read_text()).group(1)

# OpenCV: the full opencv-python wheel, because Ultralytics (the `export` extra) requires it and two
# wheels that both provide `cv2` (opencv-python + opencv-python-headless) break each other.
RUNTIME = ["numpy>=1.23", "opencv-python>=4.8", "onnxruntime>=1.17", "pyyaml>=5.4"]

EXTRAS = {
    # torch comes with ultralytics (torchvision has no CPU build: CUDA torch is installed, and runs on a CPU)
    # faster-coco-eval scores mAP for the INT8 accuracy gate (pycocotools is the fallback)
    # nncf: INT8 calibration statistics (calibration/strategies.py uses its statistics aggregator: 3.x API)
    "export": ["ultralytics>=8.3", "onnx>=1.15", "onnxslim>=0.1.50", "faster-coco-eval>=1.6", "nncf>=3.0,<4"],
    # the versions engine/backends/trt_flavor.py supports: TensorRT-RTX 1.x, TensorRT 10.x and 11.x
    "rtx": ["tensorrt-rtx>=1.0,<2", "cuda-python>=12.6"],
    "trt": ["tensorrt>=10.0,<12", "cuda-python>=12.6"],
    # onnxruntime-gpu replaces onnxruntime (both provide the `onnxruntime` module): see README
    "gpu": ["onnxruntime-gpu>=1.17", "cuda-python>=12.6"],
    # openvino + nncf: the Ultralytics OpenVINO peers (FP32, and INT8 by NNCF); both ship Windows wheels.
    # lap: Ultralytics' own trackers need it (benchmarks/tracking.py runs model.track as the peer)
    "bench": ["rich>=13", "matplotlib>=3.7", "tqdm>=4.60", "psutil>=5.9", "faster-coco-eval>=1.6",
              "openvino>=2024.4", "nncf>=2.14", "lap>=0.5.12"],
    "stream": ["prometheus-client>=0.20"],  # 0.20: start_http_server returns the server, so it can be shut down
    # --track: roboflow's trackers (Apache-2.0; 2.6: timestamped updates); pure Python, like its dependencies' wheels
    "track": ["trackers>=2.6"],
    # --events with MQTT delivery and the status page's /metrics (webhooks need nothing: urllib)
    "alerts": ["trackers>=2.6", "paho-mqtt>=2.0", "prometheus-client>=0.20"],
    # our CUDA kernels (engine/cuda/kernels/*.cu): cuda-python + the NVRTC library wheel (no CUDA toolkit)
    "cuda": ["cuda-python>=13", "nvidia-cuda-nvrtc>=13"],
    # python -m engine.serve: Triton bundled in nvidia-pytriton (venv from Debian's python3, see .ci/setup_triton.sh)
    "serve": ["nvidia-pytriton>=0.7,<0.8"],  # engine.serve uses the layout of its bundled Triton (0.7: Triton 2.51)
    # OpenVINO IRs: the runtime backend (x86 CPUs, Intel iGPU/NPU) and, for the build, NNCF's INT8 (tested: 2026.4 / 3.4)
    "openvino": ["openvino>=2025.0", "nncf>=2.15"],
}
# tritonclient: tests parse config.pbtxt into Triton's ModelConfig and talk to engine.serve
EXTRAS["dev"] = sorted({*EXTRAS["export"], *EXTRAS["bench"], *EXTRAS["stream"], *EXTRAS["cuda"], *EXTRAS["alerts"],
                        *EXTRAS["openvino"], "pytest>=7", "tritonclient[all]>=2.40"})

setup(
    name="yolo-deploy",
    version=VERSION,
    description="Export, quantize, build and run Ultralytics YOLO detectors: ONNX, INT8, TensorRT, live video",
    long_description=(HERE / "README.md").read_text(encoding="utf-8") if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["engine", "engine.*", "exporters", "exporters.*", "calibration",
                                    "calibration.*", "benchmarks", "benchmarks.*"]),
    package_data={"engine": ["cuda/kernels/*.cu"]},  # NVRTC compiles these at run time
    python_requires=">=3.10",
    install_requires=RUNTIME,
    extras_require=EXTRAS,
    classifiers=["Programming Language :: Python :: 3", "Operating System :: OS Independent",
                 "Topic :: Scientific/Engineering :: Image Recognition"],
)
