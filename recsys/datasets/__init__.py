"""Public recommender datasets with item text, loaded by name as a validated :class:`~recsys.data.Dataset`.

``ml-latest-small`` ships inside the package; the others are read from a data folder (the ``data_dir``
argument, ``$RECSYS_DATA_DIR``, ``./shared/data`` or ``../shared/data``)::

    from recsys.datasets import available_datasets, load_dataset

    dataset = load_dataset("ml-latest-small", with_tags=True)
    fingerprint = dataset.fingerprint()

``synthetic_dataset(n_items, n_users, max_history=10_000, seed=0)`` generates a catalogue with text and users with
long, drifting histories, up to 10^6 x 10^6 (see :class:`SyntheticConfig`).
"""

from recsys.datasets._mind import load_mind
from recsys.datasets._paths import DATA_DIR_ENV
from recsys.datasets._registry import available_datasets, load_dataset
from recsys.datasets._synthetic import SyntheticConfig, synthetic_dataset

__all__ = ["DATA_DIR_ENV", "SyntheticConfig", "available_datasets", "load_dataset", "load_mind", "synthetic_dataset"]
