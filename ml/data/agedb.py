"""AgeDB faces from AgeDB.csv plus its images: age by decade (classification) or age itself (regression)."""

from __future__ import annotations

import csv
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from ml.data.base import ArrayDataset, DatasetError, register_dataset

CSV_NAME = "AgeDB.csv"
REQUIRED_COLUMNS = ("folder", "age", "img_path")
SUBJECT_COLUMNS = ("subject", "name")
"""Columns, in order of preference, that name the person in a row; else the name comes from the file name."""
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
"""ImageNet statistics, as the study normalised AgeDB."""
NUM_DECADES = 10
TARGET_SCALE = 100.0
"""Regression: the network regresses age / 100 (targets near [0, 1]); predictions are multiplied back."""
CLASSES = [f"{10 * d}-{10 * d + 9}" for d in range(NUM_DECADES - 1)] + ["90+"]


def decade_class(age: int) -> int:
    """The study's age classes: age // 10, with ages of 100 and over clamped to 99 (class 9)."""
    return min(age, 99) // 10


def subject_from_filename(img_path: str) -> str:
    """The person in an AgeDB file name `<id>_<Name>_<age>_<gender>.jpg` (e.g. 0_MariaCallas_35_f.jpg)."""
    parts = PurePosixPath(img_path.replace("\\", "/")).stem.split("_")
    return "_".join(parts[1:-2]) if len(parts) >= 4 else PurePosixPath(img_path).stem


def resolve_image(root: Path, img_path: str) -> Path:
    """img_path relative to root; if absent there, with leading folders dropped one by one (e.g. "data/").

    Paths that would leave root (absolute, or through "..") are refused.
    """
    parts = PurePosixPath(img_path.replace("\\", "/")).parts
    if not parts or parts[0] == "/" or ".." in parts:
        raise DatasetError(f"AgeDB image path {img_path!r} must be relative to the data set folder")
    for start in range(len(parts)):
        candidate = root.joinpath(*parts[start:])
        if candidate.is_file():
            return candidate
    raise DatasetError(f"AgeDB image {img_path!r} not found under {root}")


def _load_image(path: Path, size: int) -> np.ndarray:
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    except (OSError, UnidentifiedImageError) as exc:
        raise DatasetError(f"AgeDB image {path} cannot be decoded: {exc}") from exc
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def _read_rows(csv_path: Path) -> list[dict[str, str]]:
    if not csv_path.is_file():
        raise DatasetError(f"AgeDB index {csv_path.name} is missing from {csv_path.parent}")
    with csv_path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = [c.strip().lower() for c in reader.fieldnames or []]
        missing = [c for c in REQUIRED_COLUMNS if c not in fields]
        if missing:
            raise DatasetError(f"{csv_path.name} lacks column(s) {missing}; it has {fields}")
        rows = [
            {k.strip().lower(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader
        ]
    if not rows:
        raise DatasetError(f"{csv_path.name} has no rows")
    return rows


def _int_field(row: dict[str, str], column: str, where: str) -> int:
    try:
        return int(float(row[column]))
    except (ValueError, OverflowError):
        raise DatasetError(f"{where}: {column}={row[column]!r} is not a number") from None


@register_dataset(
    "agedb",
    description=(
        "AgeDB faces from AgeDB.csv (folder, age, img_path) + images; folder 0 = test, other rows = train "
        "in CSV row order (ids); task classification (10 decade classes, 100+ in the last) or regression"
    ),
)
def load_agedb(
    root: Path, task: str = "classification", image_size: int = 112, csv_name: str = CSV_NAME
) -> ArrayDataset:
    """Order: the CSV's rows with folder != 0, in row order; sample id i = the i-th such row. Test: folder == 0.

    train_groups holds one integer per training sample naming its person (the subject or name column if
    present, else the Name part of the file name), numbered in order of first appearance, so forget sets
    can be drawn subject-exclusive. Images are converted to RGB and resized to image_size squared.
    Regression targets are ages in years (float32) with target_scale 100.
    """
    if task not in ("classification", "regression"):
        raise DatasetError(f"unknown AgeDB task {task!r}; valid: classification, regression")
    if not 8 <= image_size <= 512:
        raise DatasetError(f"image_size must lie in 8..512, got {image_size}")
    rows = _read_rows(root / csv_name)
    subject_column = next((c for c in SUBJECT_COLUMNS if c in rows[0]), None)
    paths, ages, is_test, subjects = [], [], [], []
    for line, row in enumerate(rows, start=2):
        where = f"{csv_name} row {line}"
        age = _int_field(row, "age", where)
        if age < 0:
            raise DatasetError(f"{where}: negative age {age}")
        ages.append(age)
        is_test.append(_int_field(row, "folder", where) == 0)
        paths.append(resolve_image(root, row["img_path"]))
        subjects.append(row[subject_column] if subject_column else subject_from_filename(row["img_path"]))
    test = np.asarray(is_test)
    train_rows, test_rows = np.flatnonzero(~test), np.flatnonzero(test)
    if train_rows.size == 0:
        raise DatasetError(f"{csv_name}: every row has folder 0 (test); the training split is empty")
    # Decode straight into one buffer, train rows first, so the ~0.6 GB of images is never copied.
    order = np.concatenate([train_rows, test_rows])
    images = np.empty((len(order), 3, image_size, image_size), dtype=np.uint8)

    def fill(slot: int) -> None:
        images[slot] = _load_image(paths[order[slot]], image_size)

    # PIL decodes outside the GIL, so threads speed up reading ~16k JPEGs.
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(fill, range(len(order))))
    if task == "classification":
        targets = np.asarray([decade_class(a) for a in ages], dtype=np.int64)
    else:
        targets = np.asarray(ages, dtype=np.float32)
    group_ids: dict[str, int] = {}
    groups = np.asarray(
        [group_ids.setdefault(subjects[i], len(group_ids)) for i in train_rows], dtype=np.int64
    )
    regression = task == "regression"
    return ArrayDataset(
        name="agedb",
        train_x=images[: train_rows.size],
        train_y=targets[train_rows],
        test_x=images[train_rows.size :],
        test_y=targets[test_rows],
        num_classes=1 if regression else NUM_DECADES,
        mean=MEAN,
        std=STD,
        task="regression" if regression else "classification",
        classes=["age"] if regression else list(CLASSES),
        train_groups=groups,
        autoaugment="imagenet",
        target_scale=TARGET_SCALE if regression else 1.0,
    )
