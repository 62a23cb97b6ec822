"""Data set loaders on small files written in the real on-disk formats, and forget-set drawing."""

from __future__ import annotations

import csv
import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ml.data import DatasetError, load_dataset
from ml.data.agedb import decade_class, subject_from_filename
from ml.data.fashion_mnist import DEFAULT_ROOT as FASHION_ROOT
from ml.data.forget import class_forget_ids, group_exclusive_forget_ids, random_forget_ids

PER_BATCH = 3
LABEL_NAMES = [b"airplane", *(f"class{i}".encode() for i in range(1, 9)), b"truck"]


# ---------------------------------------------------------------- CIFAR-10


def _cifar_batch(marker_base: int, n: int) -> dict[bytes, object]:
    """A batch like the real ones: bytes keys, uint8 data [n, 3072] (channel-major), list labels."""
    data = np.zeros((n, 3072), dtype=np.uint8)
    data[:, 0] = marker_base + np.arange(n)  # red channel, pixel (0, 0)
    data[:, 1024] = 200  # green channel, pixel (0, 0)
    return {b"batch_label": b"batch", b"data": data, b"labels": [(marker_base + i) % 10 for i in range(n)]}


def _dump(path: Path, obj: object) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


@pytest.fixture
def cifar_root(tmp_path: Path) -> Path:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for b in range(1, 6):
        _dump(folder / f"data_batch_{b}", _cifar_batch(10 * b, PER_BATCH))
    _dump(folder / "test_batch", _cifar_batch(100, 2))
    _dump(folder / "batches.meta", {b"label_names": LABEL_NAMES, b"num_cases_per_batch": PER_BATCH})
    return tmp_path


def test_cifar10_order_shapes_and_labels(cifar_root: Path) -> None:
    ds = load_dataset("cifar10", cifar_root)
    assert ds.train_x.shape == (5 * PER_BATCH, 3, 32, 32) and ds.train_x.dtype == np.uint8
    assert ds.test_x.shape == (2, 3, 32, 32)
    assert ds.train_y.dtype == np.int64
    # id = (batch - 1) * PER_BATCH + row: batch 1..5 concatenated, as torchvision's CIFAR10(train=True).
    for b in range(1, 6):
        for row in range(PER_BATCH):
            i = (b - 1) * PER_BATCH + row
            assert ds.train_x[i, 0, 0, 0] == 10 * b + row
            assert ds.train_y[i] == (10 * b + row) % 10
    assert (ds.train_x[:, 1, 0, 0] == 200).all()
    assert list(ds.test_x[:, 0, 0, 0]) == [100, 101]
    assert ds.classes[0] == "airplane" and ds.classes[9] == "truck"
    assert ds.autoaugment == "cifar10" and ds.mean == (0.4914, 0.4822, 0.4465)


def _python2_batch(data: bytes, labels: list[int]) -> bytes:
    """A batch pickled the way the real files are (Python 2, protocol 2): str keys/data, numpy.core names."""

    def short(s: bytes) -> bytes:  # SHORT_BINSTRING
        return b"U" + bytes([len(s)]) + s

    n = len(data) // 3072
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + short(b"b") + b"\x87R"
        b"(K\x01K" + bytes([n]) + b"M\x00\x0c\x86cnumpy\ndtype\n" + short(b"u1") + b"K\x00K\x01\x87R"
        b"(K\x03" + short(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        b"\x89T" + struct.pack("<I", len(data)) + data + b"tb"
    )
    label_list = b"](" + b"".join(b"K" + bytes([y]) for y in labels) + b"e"
    return b"\x80\x02}(" + short(b"data") + array + short(b"labels") + label_list + b"u."


def test_cifar10_reads_python2_pickles(cifar_root: Path) -> None:
    pixels = (np.arange(2 * 3072) % 251).astype(np.uint8)
    (cifar_root / "cifar-10-batches-py" / "data_batch_5").write_bytes(
        _python2_batch(pixels.tobytes(), [1, 7])
    )
    ds = load_dataset("cifar10", cifar_root)
    assert ds.n_train == 4 * PER_BATCH + 2
    assert np.array_equal(ds.train_x[-2:].reshape(2, -1), pixels.reshape(2, -1))
    assert ds.train_y[-2:].tolist() == [1, 7]


def test_cifar10_accepts_the_batch_folder_itself(cifar_root: Path) -> None:
    ds = load_dataset("cifar10", cifar_root / "cifar-10-batches-py")
    assert ds.n_train == 5 * PER_BATCH


def test_cifar10_missing_folder_and_files(cifar_root: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="cifar-10-batches-py"):
        load_dataset("cifar10", empty)
    (cifar_root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="data_batch_3 is missing"):
        load_dataset("cifar10", cifar_root)


def test_cifar10_missing_meta(cifar_root: Path) -> None:
    (cifar_root / "cifar-10-batches-py" / "batches.meta").unlink()
    with pytest.raises(DatasetError, match=r"batches\.meta is missing"):
        load_dataset("cifar10", cifar_root)


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ({b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]}, "uint8 array"),
        ({b"data": np.zeros((3, 3072), np.float32), b"labels": [0, 1, 2]}, "uint8 array"),
        ({b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1]}, "2 labels for 3 images"),
        ({b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1, 10]}, "0..9"),
        ([1, 2, 3], "holds a list"),
    ],
)
def test_cifar10_malformed_batch(cifar_root: Path, batch: object, message: str) -> None:
    _dump(cifar_root / "cifar-10-batches-py" / "data_batch_2", batch)
    with pytest.raises(DatasetError, match=message):
        load_dataset("cifar10", cifar_root)


class _Payload:
    """Unpickling this would create a file: the loader must refuse before that happens."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return exec, (f"open({str(self.target)!r}, 'w').close()",)


def test_cifar10_refuses_pickled_code(cifar_root: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    _dump(cifar_root / "cifar-10-batches-py" / "data_batch_1", {b"data": _Payload(marker), b"labels": []})
    with pytest.raises(DatasetError, match=r"refusing to load (__builtin__|builtins)\.exec"):
        load_dataset("cifar10", cifar_root)
    assert not marker.exists()


def test_cifar10_garbage_file(cifar_root: Path) -> None:
    (cifar_root / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle at all")
    with pytest.raises(DatasetError, match="test_batch is not a readable CIFAR-10 pickle"):
        load_dataset("cifar10", cifar_root)


# ---------------------------------------------------------------- Fashion-MNIST


def _idx(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_fashion(folder: Path, n_train: int = 5, n_test: int = 3) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        images[:, 0, 0] = np.arange(n) + (0 if prefix == "train" else 50)
        images[:, 27, 27] = 255
        labels = (np.arange(n) * 3) % 10
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(images)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(labels)))


def test_fashion_mnist_generated_files(tmp_path: Path) -> None:
    _write_fashion(tmp_path)
    ds = load_dataset("fashion_mnist", tmp_path)
    assert ds.train_x.shape == (5, 1, 28, 28) and ds.train_x.dtype == np.uint8
    assert ds.test_x.shape == (3, 1, 28, 28)
    assert list(ds.train_x[:, 0, 0, 0]) == [0, 1, 2, 3, 4]
    assert list(ds.test_x[:, 0, 0, 0]) == [50, 51, 52]
    assert (ds.train_x[:, 0, 27, 27] == 255).all()
    assert list(ds.train_y) == [0, 3, 6, 9, 2] and ds.train_y.dtype == np.int64
    assert ds.classes[9] == "Ankle boot" and ds.in_channels == 1


def test_fashion_mnist_uncompressed_fallback(tmp_path: Path) -> None:
    _write_fashion(tmp_path)
    gz = tmp_path / "t10k-labels-idx1-ubyte.gz"
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(gzip.decompress(gz.read_bytes()))
    gz.unlink()
    assert load_dataset("fashion_mnist", tmp_path).n_test == 3


def test_fashion_mnist_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("fashion_mnist", tmp_path / "nowhere")
    _write_fashion(tmp_path)
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 20))
    with pytest.raises(DatasetError, match="bad IDX magic 00000803, expected 00000801"):
        load_dataset("fashion_mnist", tmp_path)
    labels.write_bytes(gzip.compress(_idx(np.arange(5))[:-1]))
    with pytest.raises(DatasetError, match="header says"):
        load_dataset("fashion_mnist", tmp_path)
    labels.write_bytes(gzip.compress(_idx(np.arange(4))))
    with pytest.raises(DatasetError, match="5 images but 4 labels"):
        load_dataset("fashion_mnist", tmp_path)
    labels.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DatasetError, match="cannot be read"):
        load_dataset("fashion_mnist", tmp_path)
    labels.unlink()
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte\.gz .* is missing"):
        load_dataset("fashion_mnist", tmp_path)


@pytest.mark.skipif(
    not Path(FASHION_ROOT).is_dir(),
    reason=f"{FASHION_ROOT} is absent (apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_real_files() -> None:
    ds = load_dataset("fashion_mnist")
    assert (ds.n_train, ds.n_test) == (60000, 10000)
    assert ds.image_size == (28, 28)
    assert np.bincount(ds.train_y).tolist() == [6000] * 10
    assert abs(ds.train_x.mean() / 255 - ds.mean[0]) < 1e-3


# ---------------------------------------------------------------- AgeDB

# (folder, age, file name, grey level): CSV rows in this order.
AGEDB_ROWS = [
    (1, 35, "0_MariaCallas_35_f.jpg", 10),
    (0, 40, "1_MariaCallas_40_f.jpg", 20),
    (2, 101, "2_OldPerson_101_m.jpg", 30),
    (3, 5, "3_YoungOne_5_m.jpg", 40),
    (0, 100, "4_OldPerson_100_m.jpg", 50),
    (4, 99, "5_OldPerson_99_m.jpg", 60),
    (1, 47, "6_Jean_Paul_Sartre_47_m.jpg", 70),
    (2, 36, "7_MariaCallas_36_f.jpg", 80),
]
TRAIN_ROWS = [r for r in AGEDB_ROWS if r[0] != 0]
TEST_ROWS = [r for r in AGEDB_ROWS if r[0] == 0]


def _write_agedb(root: Path, prefix: str = "", extra: dict[str, list[str]] | None = None) -> None:
    (root / "AgeDB").mkdir(parents=True)
    columns = ["folder", "age", "img_path", *(extra or {})]
    with (root / "AgeDB.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for i, (folder, age, name, grey) in enumerate(AGEDB_ROWS):
            Image.new("RGB", (40, 30), (grey, grey, grey)).save(root / "AgeDB" / name, quality=95)
            writer.writerow([folder, age, f"{prefix}AgeDB/{name}", *(v[i] for v in (extra or {}).values())])


def test_agedb_classification(tmp_path: Path) -> None:
    _write_agedb(tmp_path)
    ds = load_dataset("agedb", tmp_path, image_size=16)
    assert ds.train_x.shape == (len(TRAIN_ROWS), 3, 16, 16) and ds.train_x.dtype == np.uint8
    assert ds.test_x.shape == (len(TEST_ROWS), 3, 16, 16)
    # Train ids follow the CSV rows with folder != 0 in order; each image is a distinct grey level.
    grey = ds.train_x.reshape(ds.n_train, -1).mean(axis=1)
    assert np.allclose(grey, [r[3] for r in TRAIN_ROWS], atol=2)
    assert np.allclose(ds.test_x.reshape(ds.n_test, -1).mean(axis=1), [r[3] for r in TEST_ROWS], atol=2)
    assert ds.train_y.tolist() == [3, 9, 0, 9, 4, 3]  # 35, 101 (clamped), 5, 99, 47, 36
    assert ds.test_y.tolist() == [4, 9]  # 40, 100 (clamped)
    assert ds.train_y.dtype == np.int64 and ds.num_classes == 10 and ds.task == "classification"
    assert ds.classes[0] == "0-9" and ds.classes[9] == "90+"
    assert ds.autoaugment == "imagenet" and ds.mean == (0.485, 0.456, 0.406)
    # Subjects from file names, numbered by first appearance in the training split.
    assert ds.train_groups is not None and ds.train_groups.tolist() == [0, 1, 2, 1, 3, 0]


def test_agedb_regression(tmp_path: Path) -> None:
    _write_agedb(tmp_path)
    ds = load_dataset("agedb", tmp_path, task="regression", image_size=8)
    assert ds.task == "regression" and ds.num_classes == 1 and ds.target_scale == 100.0
    assert ds.train_y.dtype == np.float32
    assert ds.train_y.tolist() == [35.0, 101.0, 5.0, 99.0, 47.0, 36.0]
    assert ds.test_y.tolist() == [40.0, 100.0]


def test_agedb_subject_column_and_path_prefix(tmp_path: Path) -> None:
    subjects = ["a", "a", "b", "b", "c", "c", "d", "d"]
    _write_agedb(tmp_path, prefix="data/", extra={"name": subjects, "gender": ["f"] * 8})
    ds = load_dataset("agedb", tmp_path, image_size=8)
    assert ds.train_groups is not None
    assert ds.train_groups.tolist() == [0, 1, 1, 2, 3, 3]  # training rows' names: a, b, b, c, d, d


@pytest.mark.parametrize(
    ("age", "cls"), [(0, 0), (9, 0), (10, 1), (35, 3), (99, 9), (100, 9), (101, 9), (150, 9)]
)
def test_decade_class(age: int, cls: int) -> None:
    assert decade_class(age) == cls


def test_subject_from_filename() -> None:
    assert subject_from_filename("AgeDB/0_MariaCallas_35_f.jpg") == "MariaCallas"
    assert subject_from_filename("6_Jean_Paul_Sartre_47_m.jpg") == "Jean_Paul_Sartre"
    assert subject_from_filename("odd.jpg") == "odd"


def test_agedb_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"AgeDB\.csv is missing"):
        load_dataset("agedb", tmp_path)
    _write_agedb(tmp_path)
    with pytest.raises(DatasetError, match="unknown AgeDB task"):
        load_dataset("agedb", tmp_path, task="ranking")
    csv_path = tmp_path / "AgeDB.csv"
    text = csv_path.read_text()
    csv_path.write_text(text.replace("img_path", "image", 1))
    with pytest.raises(DatasetError, match=r"lacks column\(s\) \['img_path'\]"):
        load_dataset("agedb", tmp_path)
    csv_path.write_text(text.replace("1,35,", "1,thirty,", 1))
    with pytest.raises(DatasetError, match="row 2: age='thirty' is not a number"):
        load_dataset("agedb", tmp_path)
    csv_path.write_text(text.replace("AgeDB/0_MariaCallas", "../AgeDB/0_MariaCallas", 1))
    with pytest.raises(DatasetError, match="must be relative"):
        load_dataset("agedb", tmp_path)
    csv_path.write_text(text)
    (tmp_path / "AgeDB" / "3_YoungOne_5_m.jpg").unlink()
    with pytest.raises(DatasetError, match=r"3_YoungOne_5_m\.jpg' not found"):
        load_dataset("agedb", tmp_path)
    (tmp_path / "AgeDB" / "3_YoungOne_5_m.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match="cannot be decoded"):
        load_dataset("agedb", tmp_path)


def test_agedb_subject_exclusive_forget_set(tmp_path: Path) -> None:
    _write_agedb(tmp_path)
    ds = load_dataset("agedb", tmp_path, image_size=8)
    assert ds.train_groups is not None
    for seed in range(10):
        ids = group_exclusive_forget_ids(ds.train_groups, count=3, seed=seed)
        forgotten = set(ds.train_groups[ids].tolist())
        retained = set(np.delete(ds.train_groups, ids).tolist())
        assert not forgotten & retained and 0 < ids.size <= 3


# ---------------------------------------------------------------- image folder


def _write_class_folders(root: Path, counts: dict[str, int]) -> None:
    for c, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True)
        for i in reversed(range(n)):  # written out of order: the loader must sort
            Image.new("RGB", (12, 9), (10 * c, 5 * i, 7)).save(root / name / f"img{i:02d}.png")


def test_image_folder_order_matches_torchvision(tmp_path: Path) -> None:
    from torchvision.datasets import ImageFolder

    counts = {"dog": 4, "cat": 3, "bird": 5}
    _write_class_folders(tmp_path, counts)
    ds = load_dataset("image_folder", tmp_path, image_size=8, test_fraction=0.0)
    reference = ImageFolder(str(tmp_path))
    assert ds.classes == reference.classes == ["bird", "cat", "dog"]
    assert ds.train_y.tolist() == [y for _, y in reference.samples]
    assert ds.train_x.shape == (12, 3, 8, 8) and ds.n_test == 0
    # Uniform PNGs (lossless) whose red/green levels encode (class folder, file index).
    expected = [
        (10 * list(counts).index(reference.classes[y]), 5 * int(Path(path).stem[3:]))
        for path, y in reference.samples
    ]
    assert [(int(x[0, 0, 0]), int(x[1, 0, 0])) for x in ds.train_x] == expected


def test_image_folder_seeded_split(tmp_path: Path) -> None:
    _write_class_folders(tmp_path, {"a": 10, "b": 5})
    ds = load_dataset("image_folder", tmp_path, image_size=8, test_fraction=0.2, split_seed=3)
    assert (ds.n_train, ds.n_test) == (12, 3)  # 2 of a, 1 of b
    assert np.bincount(ds.test_y).tolist() == [2, 1]
    # Training ids keep ImageFolder order: labels non-decreasing and file indices ascending per class.
    assert ds.train_y.tolist() == sorted(ds.train_y.tolist())
    again = load_dataset("image_folder", tmp_path, image_size=8, test_fraction=0.2, split_seed=3)
    assert np.array_equal(ds.train_x, again.train_x)
    other = load_dataset("image_folder", tmp_path, image_size=8, test_fraction=0.2, split_seed=4)
    assert not np.array_equal(ds.test_x, other.test_x)
    assert len(ds.mean) == 3 and all(s > 0 for s in ds.std)


def test_image_folder_train_test_layout(tmp_path: Path) -> None:
    _write_class_folders(tmp_path / "train", {"x": 3, "y": 2})
    _write_class_folders(tmp_path / "test", {"y": 1})
    ds = load_dataset("image_folder", tmp_path, image_size=8)
    assert (ds.n_train, ds.n_test) == (5, 1)
    assert ds.classes == ["x", "y"] and ds.test_y.tolist() == [1]


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("image_folder", tmp_path / "nowhere")
    tmp_path.joinpath("loose.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="one subfolder of images per class"):
        load_dataset("image_folder", tmp_path)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DatasetError, match="no valid file"):
        load_dataset("image_folder", tmp_path)
    _write_class_folders(tmp_path / "train", {"x": 2})
    _write_class_folders(tmp_path / "test", {"z": 1})
    with pytest.raises(DatasetError, match=r"classes \['z'\] that train/ lacks"):
        load_dataset("image_folder", tmp_path)


def test_registry_errors() -> None:
    with pytest.raises(DatasetError, match="valid: agedb, cifar10, digits, fashion_mnist, image_folder"):
        load_dataset("mnist")
    with pytest.raises(DatasetError, match="needs a folder"):
        load_dataset("cifar10")


# ---------------------------------------------------------------- forget sets


def test_random_forget_ids() -> None:
    ids = random_forget_ids(1000, fraction=0.1, seed=7)
    assert ids.dtype == np.int64 and ids.size == 100
    assert np.array_equal(ids, np.unique(ids)) and ids.min() >= 0 and ids.max() < 1000
    assert np.array_equal(ids, random_forget_ids(1000, count=100, seed=7))
    assert not np.array_equal(ids, random_forget_ids(1000, count=100, seed=8))
    assert random_forget_ids(10, fraction=0.25, seed=0).size == 2  # round(2.5) = 2
    for bad in (
        {"fraction": 0.0},
        {"fraction": 1.0},
        {"count": 0},
        {"count": 10},
        {},
        {"fraction": 0.1, "count": 1},
    ):
        with pytest.raises(ValueError):
            random_forget_ids(10, seed=0, **bad)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(
    groups=st.lists(st.integers(0, 12), min_size=2, max_size=80),
    fraction=st.floats(0.05, 0.95),
    seed=st.integers(0, 2**16),
)
def test_group_exclusive_never_splits_a_group(groups: list[int], fraction: float, seed: int) -> None:
    arr = np.asarray(groups)
    target = round(fraction * arr.size)
    if not 0 < target < arr.size:
        with pytest.raises(ValueError, match="leaves the forget or retain set empty"):
            group_exclusive_forget_ids(arr, fraction=fraction, seed=seed)
        return
    if np.unique(arr, return_counts=True)[1].min() > target:
        with pytest.raises(ValueError, match="no whole group fits"):
            group_exclusive_forget_ids(arr, fraction=fraction, seed=seed)
        return
    ids = group_exclusive_forget_ids(arr, fraction=fraction, seed=seed)
    assert ids.dtype == np.int64 and np.array_equal(ids, np.unique(ids))
    assert 0 < ids.size <= target
    inside = set(arr[ids].tolist())
    assert not inside & set(np.delete(arr, ids).tolist())
    assert np.array_equal(ids, group_exclusive_forget_ids(arr, fraction=fraction, seed=seed))


def test_group_exclusive_hits_the_target_with_singletons() -> None:
    groups = np.array(["p1"] * 5 + [f"s{i}" for i in range(20)])
    ids = group_exclusive_forget_ids(groups, count=7, seed=1)
    assert ids.size == 7
    with pytest.raises(ValueError, match="no whole group fits"):
        group_exclusive_forget_ids(np.array([0, 0, 0, 1, 1, 1]), count=2, seed=0)


def test_class_forget_ids() -> None:
    labels = np.array([0, 2, 1, 2, 0, 2])
    assert class_forget_ids(labels, 2).tolist() == [1, 3, 5]
    with pytest.raises(ValueError, match="no training samples"):
        class_forget_ids(labels, 7)
    with pytest.raises(ValueError, match="1-D integer"):
        class_forget_ids(labels.astype(np.float32), 2)
    with pytest.raises(ValueError, match="retain set would be empty"):
        class_forget_ids(np.zeros(4, dtype=np.int64), 0)


def test_every_data_set_gets_canonical_strides():
    """A size-1 channel axis with an odd stride sends oneDNN down a heap-corrupting path."""
    data = load_dataset("digits")
    for x in (data.train_x, data.test_x):
        assert x.strides == (64, 64, 8, 1)
