"""The data contract: readers, validation, the :class:`Dataset` container and per-user histories."""

from recsys.data._config import DataConfig
from recsys.data._dataset import Dataset, Fingerprint
from recsys.data._history import Histories, item_index
from recsys.data._readers import read_table
from recsys.data._validate import DataWarning, ValidationReport, validate_interactions, validate_items

__all__ = [
    "DataConfig",
    "DataWarning",
    "Dataset",
    "Fingerprint",
    "Histories",
    "ValidationReport",
    "item_index",
    "read_table",
    "validate_interactions",
    "validate_items",
]
