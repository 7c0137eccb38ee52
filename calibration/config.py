"""What a calibration pass reads and how it turns activations into ranges."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from engine.errors import ConfigError

DEFAULT_MAX_IMAGES = 500  # TensorRT's guidance is ~500 images; more rarely moves a range
DEFAULT_VIDEO_EVERY = 30  # about one frame a second at 30 fps: neighbouring frames add little


class CalibrationMethod(str, Enum):
    """How a tensor's observed values become its quantization range (NNCF's estimators, see
    :mod:`calibration.strategies`).

    ``MEAN_MINMAX`` (default): the mean over images of each image's smallest and largest value,
    NNCF's default for activations. ``MINMAX``: the smallest and largest value over all images
    (NVIDIA ModelOpt's ``max``). ``PERCENTILE``: the mean over images of each image's
    ``100 - percentile`` and ``percentile`` quantiles.
    """

    MEAN_MINMAX = "mean-minmax"
    MINMAX = "minmax"
    PERCENTILE = "percentile"


@dataclass(frozen=True)
class CalibrationConfig:
    """Where calibration images come from and how many are used.

    Attributes:
        source: an image folder, a ``.txt`` list of images, a video file, or a YOLO ``data.yaml``.
        split: the data.yaml split to read (``train`` by default: calibrate on training-like data,
            keep ``val`` for the accuracy check).
        max_images: at most this many images (a seeded random subset when there are more).
        seed: seed of the shuffle that picks the subset.
        video_every: from a video, every Nth frame.
        method: range estimation, see :class:`CalibrationMethod`.
        percentile: the percentile kept by ``PERCENTILE``.
    """

    source: Path
    split: str = "train"
    max_images: int = DEFAULT_MAX_IMAGES
    seed: int = 0
    video_every: int = DEFAULT_VIDEO_EVERY
    method: CalibrationMethod = CalibrationMethod.MEAN_MINMAX
    percentile: float = 99.999

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", Path(self.source))
        object.__setattr__(self, "method", CalibrationMethod(self.method))
        if self.max_images < 1:
            raise ConfigError(f"--calib-images {self.max_images} must be >= 1", "use e.g. --calib-images 500")
        if self.video_every < 1:
            raise ConfigError(f"--calib-every {self.video_every} must be >= 1", "use e.g. --calib-every 30")
        if not 50.0 < self.percentile <= 100.0:
            raise ConfigError(f"percentile {self.percentile} must be in (50, 100]", "use the default 99.999")
