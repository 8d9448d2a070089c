"""The registry of dataset loaders by name: :func:`load_dataset` and :func:`available_datasets`."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from recsys.data import Dataset
from recsys.datasets._amazon import load_amazon_scientific_lcrec, load_amazon_scientific_unisrec
from recsys.datasets._jester import load_jester5k
from recsys.datasets._lastfm import load_lastfm_llara
from recsys.datasets._mind import load_mind_small_fragment
from recsys.datasets._movielens import load_ml_100k, load_ml_latest_small
from recsys.errors import ConfigError

__all__ = ["available_datasets", "load_dataset"]

logger = logging.getLogger("recsys.datasets")

Loader = Callable[..., Dataset]
"""``loader(data_dir, **options) -> Dataset``; options are keyword-only parameters."""

_LOADERS: Final[dict[str, Loader]] = {
    "ml-latest-small": load_ml_latest_small,
    "ml-100k": load_ml_100k,
    "amazon-scientific-unisrec": load_amazon_scientific_unisrec,
    "amazon-scientific-lcrec": load_amazon_scientific_lcrec,
    "lastfm-llara": load_lastfm_llara,
    "jester5k": load_jester5k,
    "mind-small-fragment": load_mind_small_fragment,
}


def available_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`, sorted."""
    return sorted(_LOADERS)


def _options_of(loader: Loader) -> list[str]:
    parameters = inspect.signature(loader).parameters.values()
    return [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]


def load_dataset(name: str, data_dir: str | Path | None = None, **options: Any) -> Dataset:
    """Load a public dataset by name as a validated :class:`~recsys.data.Dataset`.

    Parameters
    ----------
    name:
        One of :func:`available_datasets`. ``"ml-latest-small"`` ships inside the package; the others are read
        from ``<data folder>/<name>/``.
    data_dir:
        The data folder (holding ``ml-100k/``, ``jester5k/``, ...). Default: ``$RECSYS_DATA_DIR``, else
        ``./shared/data``, else ``../shared/data`` (relative to the working directory).
    **options:
        Dataset-specific keyword options, e.g. ``with_tags=True`` for ``"ml-latest-small"`` or
        ``on_invalid="raise"`` for ``"mind-small-fragment"``.

    Returns
    -------
    Dataset
        Interactions ``user_id, item_id, timestamp`` plus ``weight``/``event``/``split`` where the dataset has
        them (``split`` marks a published train/valid/test split), and items ``item_id, text, ...``.

    Raises
    ------
    ConfigError
        Unknown ``name`` or option; the message lists the allowed ones.
    DatasetNotFoundError
        A file is missing; the message lists every path looked at.
    """
    loader = _LOADERS.get(name)
    if loader is None:
        raise ConfigError(f"Unknown dataset name={name!r}; available: {', '.join(available_datasets())}.")
    allowed = _options_of(loader)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"Dataset {name!r} has no option(s) {unknown}; its options are {allowed or 'none'}.")
    start = time.perf_counter()
    dataset = loader(data_dir, **options)
    logger.info("load_dataset(%r) took %.2f s", name, time.perf_counter() - start)
    return dataset
