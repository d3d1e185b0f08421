"""Data for Frontprop experiments: built-in patterns, image data sets, streams and task splits."""
from .datasets import (DATASETS, DIGITS_SPLIT_SEED, DIGITS_TEST_SHARE, DatasetCorruptError,
                       DatasetNotFoundError, load, read_idx)
from .patterns import PATTERN_NAMES, SIMPLE_PATTERNS, simple_patterns
from .streams import (Batches, Task, choose_dataset, class_incremental, flatten, permuted_tasks,
                      pixel_permutations, train_test)

__all__ = ["PATTERN_NAMES", "SIMPLE_PATTERNS", "simple_patterns",
           "DATASETS", "DIGITS_SPLIT_SEED", "DIGITS_TEST_SHARE", "DatasetNotFoundError",
           "DatasetCorruptError", "load", "read_idx",
           "Batches", "Task", "flatten", "class_incremental", "permuted_tasks", "pixel_permutations",
           "choose_dataset", "train_test"]
