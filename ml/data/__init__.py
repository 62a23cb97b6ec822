"""Built-in data sets; importing this package registers them."""

from ml.data import digits  # noqa: F401
from ml.data.base import DATASETS, ArrayDataset, DatasetError, load_dataset, register_dataset

__all__ = ["DATASETS", "ArrayDataset", "DatasetError", "load_dataset", "register_dataset"]
