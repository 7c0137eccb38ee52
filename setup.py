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
    "export": ["ultralytics>=8.3", "onnx>=1.15", "onnxslim>=0.1.50"],
    "rtx": ["tensorrt-rtx>=1.0", "cuda-python>=12.6"],
    "trt": ["tensorrt>=10.0", "cuda-python>=12.6"],
    # onnxruntime-gpu replaces onnxruntime (both provide the `onnxruntime` module): see README
    "gpu": ["onnxruntime-gpu>=1.17", "cuda-python>=12.6"],
    "bench": ["rich>=13", "matplotlib>=3.7", "tqdm>=4.60", "psutil>=5.9"],
    "stream": ["prometheus-client>=0.17"],
}
EXTRAS["dev"] = sorted({*EXTRAS["export"], *EXTRAS["bench"], *EXTRAS["stream"], "pytest>=7"})

setup(
    name="yolo-deploy",
    version=VERSION,
    description="Export, quantize, build and run Ultralytics YOLO detectors: ONNX, INT8, TensorRT, live video",
    long_description=(HERE / "README.md").read_text(encoding="utf-8") if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["engine", "engine.*", "exporters", "exporters.*", "calibration",
                                    "calibration.*", "benchmarks", "benchmarks.*"]),
    package_data={"engine": ["cuda/*.cu"]},
    python_requires=">=3.10",
    install_requires=RUNTIME,
    extras_require=EXTRAS,
    classifiers=["Programming Language :: Python :: 3", "Operating System :: OS Independent",
                 "Topic :: Scientific/Engineering :: Image Recognition"],
)
