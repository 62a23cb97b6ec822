"""Built-in data sets; importing this package registers them."""

from ml.data import agedb, cifar10, digits, fashion_mnist, image_folder  # noqa: F401
from ml.data.base import DATASETS, ArrayDataset, DatasetError, load_dataset, register_dataset

__all__ = ["DATASETS", "ArrayDataset", "DatasetError", "load_dataset", "register_dataset"]
