"""YOLO-format datasets: ``data.yaml`` files, image folders and label files.

Used by the mAP evaluator, the INT8 calibration readers and the benchmarks. The layout rules are
Ultralytics' (``images/`` ↔ ``labels/``, ``cx cy w h`` normalised labels, ``names`` as a list or a
dict), with two deliberate differences that make a dataset portable between machines:

* a relative ``path:`` in a data.yaml is taken relative to the yaml's folder (Ultralytics tries the
  current directory, then its global datasets folder);
* a relative line in a ``.txt`` image list is taken relative to the list's folder (Ultralytics does
  that only for lines starting with ``./``).

Paths are handled with :mod:`pathlib` only, and images are read through ``np.fromfile`` +
``cv2.imdecode`` so non-ASCII paths work on Windows.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence, Union

import cv2
import numpy as np

from ..errors import DatasetError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".jp2", ".mpo"})
# formats whose header size Pillow reports as stored (before EXIF orientation), as OpenCV's decoder does not
_EXIF_SIZED = frozenset({"JPEG", "MPO", "PNG", "WEBP"})
SPLITS = ("train", "val", "test")

PathLike = Union[str, Path]


@dataclass(frozen=True)
class DataConfig:
    """A parsed ``data.yaml``.

    Attributes:
        yaml_path: the file it was read from.
        root: the dataset root (``path:``, resolved; the yaml's folder when absent).
        splits: split name → image folders, image files or ``.txt`` image lists (absolute paths).
            Only splits present and non-empty in the yaml are listed.
        names: class names, index = class id.
    """

    yaml_path: Path
    root: Path
    splits: dict[str, list[Path]] = field(default_factory=dict)
    names: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class LabeledImage:
    """One image and its ground truth.

    Attributes:
        path: the image file.
        hw: its (height, width) as decoded (EXIF orientation applied).
        boxes: ``(N, 4)`` float32 xyxy boxes in pixels.
        classes: ``(N,)`` int32 class ids.
    """

    path: Path
    hw: tuple[int, int]
    boxes: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return len(self.classes)


def read_data_yaml(path: PathLike) -> DataConfig:
    """Parse a YOLO ``data.yaml`` (needs PyYAML).

    ``train``/``val``/``test`` may each be a folder, an image file, a ``.txt`` list of images, or a
    list of those, relative to ``path:``. ``names`` may be a list or an ``{id: name}`` dict; when
    absent, ``nc`` gives ``class_0 ... class_{nc-1}``. Paths are not required to exist here; listing
    a split's images (:func:`list_images`) checks them.
    """
    yaml_path = Path(path)
    if not yaml_path.is_file():
        raise DatasetError(f"data.yaml not found: {yaml_path}", "pass the path of an existing YOLO data.yaml")
    try:
        import yaml
    except ImportError as err:  # pragma: no cover - PyYAML is a base dependency
        raise DatasetError(f"reading {yaml_path} needs PyYAML, which is not installed",
                           "pip install pyyaml") from err
    try:
        data = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise DatasetError(f"{yaml_path} is not valid YAML: {err}", "fix the YAML syntax") from err
    if not isinstance(data, dict):
        raise DatasetError(f"{yaml_path} must be a YAML mapping with train/val/names keys, got {type(data).__name__}",
                           "see https://docs.ultralytics.com/datasets/detect/ for the format")

    root = Path(data["path"]) if data.get("path") else Path(".")
    if not root.is_absolute():  # relative to the yaml's folder, wherever the command runs from
        root = yaml_path.parent / root
    root = root.resolve()

    if "val" not in data and "validation" in data:  # Ultralytics accepts this alias too
        data["val"] = data["validation"]
    splits: dict[str, list[Path]] = {}
    for name in SPLITS:
        value = data.get(name)
        if not value:
            continue
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in items):
            raise DatasetError(f"{yaml_path}: '{name}:' must be a path or a list of paths, got {value!r}",
                               "write e.g. 'val: images/val' or 'val: [images/val1, images/val2]'")
        splits[name] = [_resolve_split_path(root, v) for v in items]
    return DataConfig(yaml_path=yaml_path.resolve(), root=root, splits=splits, names=_parse_names(data, yaml_path))


def _resolve_split_path(root: Path, value: str) -> Path:
    p = Path(value)
    if p.is_absolute():
        return p
    full = (root / p).resolve()
    if not full.exists() and value.startswith("../"):  # Ultralytics' fallback for '../' paths
        alt = (root / value[3:]).resolve()
        if alt.exists():
            return alt
    return full


def _parse_names(data: Mapping, yaml_path: Path) -> tuple[str, ...]:
    names, nc = data.get("names"), _int_like(data.get("nc"))
    if data.get("nc") is not None and nc is None:
        raise DatasetError(f"{yaml_path}: 'nc: {data.get('nc')!r}' is not a whole number", "write e.g. 'nc: 3'")
    if names is None:
        if nc is not None and nc > 0:
            return tuple(f"class_{i}" for i in range(nc))
        raise DatasetError(f"{yaml_path} has neither 'names:' nor 'nc:'", "add 'names: [cat, dog, ...]'")
    if isinstance(names, dict):
        try:
            ids = sorted(int(k) for k in names)
        except (TypeError, ValueError) as err:
            raise DatasetError(f"{yaml_path}: 'names:' keys must be class ids (0, 1, ...), got {list(names)}",
                               "write names as '0: cat' lines or as a list") from err
        if ids != list(range(len(ids))):
            raise DatasetError(f"{yaml_path}: 'names:' ids must be 0..{len(ids) - 1} without gaps, got {ids}",
                               "number the classes from 0 without gaps")
        by_id = {int(k): str(v) for k, v in names.items()}
        out = tuple(by_id[i] for i in ids)
    elif isinstance(names, list):
        out = tuple(str(n) for n in names)
    else:
        raise DatasetError(f"{yaml_path}: 'names:' must be a list or a dict, got {type(names).__name__}",
                           "write 'names: [cat, dog]' or '0: cat' lines")
    if nc is not None and nc != len(out):
        raise DatasetError(f"{yaml_path}: 'nc: {nc}' but {len(out)} names", "make 'nc' match 'names' or drop 'nc'")
    return out


def _int_like(value) -> int | None:
    """``3``, ``3.0`` or ``'3'`` (as Ultralytics takes ``nc:``) as an int; ``None`` for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdecimal():
        return int(value.strip())
    return None


def read_text(path: Path) -> str:
    """A label file or image list as text: UTF-8 with or without a byte-order mark, or UTF-16 with one
    (Windows Notepad's "Unicode"), as Ultralytics reads them.

    Raises:
        DatasetError: anything else, naming the file.
    """
    raw = path.read_bytes()
    try:
        if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            return raw.decode("utf-16")
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})",
                           "save it as UTF-8 (a plain text file)") from None


def _walk_images(folder: Path) -> list[Path]:
    """Image files under ``folder``, following linked folders (each folder once, by its real path), skipping
    hidden files and folders (``.thumbnails/``, macOS's ``._x.jpg`` sidecars), as Ultralytics' ``glob('**/*.*')``
    lists them. The tree itself is walked first, so a link to a folder it holds anyway is not followed: its
    images keep the path their label files are found by (``images/val/latest -> 2024``: ``2024/x.jpg``, whose
    labels are ``labels/val/2024/``)."""
    out: list[Path] = []
    seen: set[str] = set()
    links: list[str] = []

    def walk(root, follow: bool) -> None:
        for top, dirs, files in os.walk(root, followlinks=follow):
            real = os.path.realpath(top)
            if real in seen:  # a link back up the tree, or to a folder already listed
                dirs[:] = []
                continue
            seen.add(real)
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            if not follow:  # the links the tree holds: walked after it
                links.extend(os.path.join(top, d) for d in dirs if os.path.islink(os.path.join(top, d)))
            out.extend(Path(top) / f for f in files
                       if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES)

    walk(folder, False)
    for link in links:
        walk(link, True)
    return sorted(f for f in out if f.is_file())


def list_images(source: PathLike | Sequence[PathLike]) -> list[Path]:
    """Image files under ``source``, sorted.

    ``source`` is a folder (searched recursively), one image file, a ``.txt`` list of images (one
    per line, relative lines relative to the list's folder), or a sequence of those. Suffixes are
    matched case-insensitively against :data:`IMAGE_SUFFIXES`; in a folder, hidden files and folders are
    skipped and linked folders followed.
    """
    if isinstance(source, (list, tuple)):
        out: list[Path] = []
        for s in source:
            out.extend(list_images(s))
        return out
    p = Path(source)
    if p.is_dir():
        return _walk_images(p)
    if p.is_file() and p.suffix.lower() == ".txt":
        return _read_image_list(p)
    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
        return [p]
    if p.exists():
        raise DatasetError(f"{p} is neither a folder, an image ({', '.join(sorted(IMAGE_SUFFIXES))}) nor a .txt list",
                           "pass a folder of images, an image, or a .txt file listing images")
    raise DatasetError(f"image source not found: {p}",
                       "check the path (a data.yaml's relative 'path:' is taken from the data.yaml's own folder)")


def _read_image_list(txt: Path) -> list[Path]:
    out = []
    for line in read_text(txt).splitlines():
        line = line.strip()
        if not line:
            continue
        p = Path(line)
        if not p.is_absolute():
            p = (txt.parent / p).resolve()
        if p.suffix.lower() in IMAGE_SUFFIXES:
            out.append(p)
    return out


def label_path_for(image_path: PathLike) -> Path:
    """The YOLO label file of an image: the last ``images`` folder becomes ``labels``, suffix ``.txt``.

    An image with no ``images`` folder in its path has its label beside it.
    """
    p = Path(image_path)
    parts = list(p.parts[:-1])
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts, p.stem + ".txt")
    return p.with_suffix(".txt")


def load_labels(image_path: PathLike, image_hw: tuple[int, int],
                num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read an image's YOLO labels as pixel boxes.

    Each line is ``class cx cy w h`` (normalised to 0..1), or ``class x1 y1 x2 y2 ...`` (a polygon,
    as in segmentation datasets; its bounding box is used). A missing label file means no objects;
    exact duplicate lines are dropped (as Ultralytics does). Read as Ultralytics reads them: UTF-8 with
    or without a byte-order mark, coordinates up to 1% outside 0..1 (box sides never negative).
    With ``num_classes`` (the data.yaml's), a class id at or above it is an error.

    Returns:
        ``(xyxy float32 (N, 4), class_id int32 (N,))`` in pixels of an image of size ``image_hw``.

    Raises:
        DatasetError: a line is malformed, naming the label file and the line number.
    """
    lbl = label_path_for(image_path)
    if not lbl.is_file():
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int32)
    rows = []
    for n, line in enumerate(read_text(lbl).splitlines(), 1):
        if line.strip():
            rows.append(_parse_label_line(line, lbl, n, num_classes))
    if not rows:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int32)
    arr = np.array(rows, np.float64)
    _, first = np.unique(arr, axis=0, return_index=True)
    arr = arr[np.sort(first)]
    h, w = image_hw
    xyxy = np.stack([(arr[:, 1] - arr[:, 3] / 2) * w, (arr[:, 2] - arr[:, 4] / 2) * h,
                     (arr[:, 1] + arr[:, 3] / 2) * w, (arr[:, 2] + arr[:, 4] / 2) * h], axis=1)
    return xyxy.astype(np.float32), arr[:, 0].astype(np.int32)


COORD_SLACK = 0.01  # normalised coordinates may lie this far outside 0..1, as Ultralytics allows
_FIX_LABEL = "each line must be 'class cx cy w h' with class an integer >= 0 and coordinates normalised to 0..1"


def _parse_label_line(line: str, lbl: Path, n: int,
                      num_classes: int | None = None) -> tuple[float, float, float, float, float]:
    fields = line.split()
    try:
        values = [float(v) for v in fields]
    except ValueError:
        raise DatasetError(f"{lbl}, line {n}: not numbers: {line.strip()!r}", _FIX_LABEL) from None
    if len(values) != 5 and (len(values) < 7 or len(values) % 2 == 0):
        raise DatasetError(f"{lbl}, line {n}: expected 5 values (or a polygon of 3+ points), "
                           f"got {len(values)}: {line.strip()!r}", _FIX_LABEL)
    cls, coords = values[0], np.array(values[1:])
    if not np.isfinite(values).all():
        raise DatasetError(f"{lbl}, line {n}: non-finite value: {line.strip()!r}", _FIX_LABEL)
    if cls < 0 or cls != int(cls):
        raise DatasetError(f"{lbl}, line {n}: class must be an integer >= 0, got {fields[0]!r}", _FIX_LABEL)
    if num_classes is not None and cls >= num_classes:
        raise DatasetError(f"{lbl}, line {n}: class {int(cls)}, but the data.yaml names {num_classes} classes "
                           f"(ids 0-{num_classes - 1})",
                           "correct the label, or add the class to 'names:' in the data.yaml")
    # Ultralytics' tolerance: up to 1% outside 0..1, a box's width and height never negative
    if coords.min() < -COORD_SLACK or coords.max() > 1 + COORD_SLACK or (len(values) == 5 and coords[2:].min() < 0):
        raise DatasetError(f"{lbl}, line {n}: coordinates outside 0..1 (pixel values?): {line.strip()!r}",
                           "divide x and w by the image width and y and h by the image height")
    if len(values) == 5:
        return cls, *coords
    xs, ys = coords[0::2], coords[1::2]  # polygon -> its bounding box
    return cls, (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2, xs.max() - xs.min(), ys.max() - ys.min()


def read_image(path: PathLike) -> np.ndarray:
    """Read an image as BGR uint8, as ``cv2.imread`` does, but safe for non-ASCII paths on Windows."""
    p = Path(path)
    try:
        buf = np.fromfile(str(p), np.uint8)
    except OSError as err:
        raise DatasetError(f"cannot read image {p}: {err}", "check that the file exists and is readable") from err
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if img is None:
        raise DatasetError(f"cannot decode image {p} (corrupt or unsupported format)",
                           "re-save it as JPEG/PNG or remove it from the dataset")
    return img


def image_hw(path: PathLike) -> tuple[int, int]:
    """An image's decoded (height, width): from its header when Pillow is installed and the format is one
    whose header gives the stored size (JPEG, MPO, PNG, WebP; EXIF orientation applied as OpenCV's decoder
    applies it), else by decoding it (Pillow already reports a TIFF's size EXIF-rotated)."""
    try:
        from PIL import Image
    except ImportError:
        return read_image(path).shape[:2]
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
            fmt = im.format
    except Exception:  # Pillow cannot parse it: let OpenCV decide (and raise a DatasetError if it cannot)
        return read_image(path).shape[:2]
    if fmt not in _EXIF_SIZED:
        return read_image(path).shape[:2]
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def load_split(data: PathLike, split: str = "val") -> list[LabeledImage]:
    """The labelled images of one split.

    Args:
        data: a ``data.yaml`` (the ``split`` entry is used), or a folder / ``.txt`` list of images
            (``split`` is ignored). Labels are found with :func:`label_path_for`; images without a
            label file have no objects, so unlabelled sets work for calibration.
        split: ``"train"``, ``"val"`` or ``"test"``.

    Raises:
        DatasetError: the yaml has no such split, or the split has no images.
    """
    src = Path(data)
    num_classes = None
    if src.is_file() and src.suffix.lower() in (".yaml", ".yml"):
        cfg = read_data_yaml(src)
        num_classes = len(cfg.names)
        if split not in cfg.splits:
            raise DatasetError(f"{src} has no '{split}:' split (it has: {', '.join(cfg.splits) or 'none'})",
                               f"add '{split}: <images folder>' to {src.name} or pick another split")
        images = list_images(cfg.splits[split])
        where = f"split '{split}' of {src} ({', '.join(str(p) for p in cfg.splits[split])})"
    else:
        images = list_images(src)
        where = str(src)
    if not images:
        raise DatasetError(f"no images found in {where}",
                           f"put images ({', '.join(sorted(IMAGE_SUFFIXES))}) there or fix the path")
    return [_labeled(p, num_classes) for p in images]


def _labeled(path: Path, num_classes: int | None = None) -> LabeledImage:
    hw = image_hw(path)
    boxes, classes = load_labels(path, hw, num_classes)
    return LabeledImage(path=path, hw=(int(hw[0]), int(hw[1])), boxes=boxes, classes=classes)


def count_instances(items: Iterable[LabeledImage]) -> int:
    """Total number of labelled objects."""
    return sum(len(i) for i in items)
