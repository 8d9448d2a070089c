"""Where the public datasets live, and the last step every loader shares (validate, log the fingerprint)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import polars as pl

from recsys.data import DataConfig, Dataset
from recsys.errors import DatasetNotFoundError

__all__ = ["DATA_DIR_ENV", "data_roots", "find_files", "finish", "read_tsv", "require_files"]

logger = logging.getLogger("recsys.datasets")

DATA_DIR_ENV: Final = "RECSYS_DATA_DIR"
"""Environment variable naming the folder that holds the dataset folders (``ml-100k/``, ``jester5k/``)."""

_DEFAULT_ROOTS: Final = (Path("shared") / "data", Path("..") / "shared" / "data")


def data_roots(data_dir: str | Path | None = None) -> list[Path]:
    """The folders searched for datasets, in order.

    Parameters
    ----------
    data_dir:
        Explicit data folder; when given it is the only one searched.

    Returns
    -------
    list of Path
        ``[data_dir]``, else ``[$RECSYS_DATA_DIR]``, else ``./shared/data`` and ``../shared/data``
        (relative to the working directory).
    """
    if data_dir is not None:
        return [Path(data_dir)]
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return [Path(env)]
    return [Path.cwd() / root for root in _DEFAULT_ROOTS]


def _source(data_dir: str | Path | None) -> str:
    if data_dir is not None:
        return "the data_dir argument"
    if os.environ.get(DATA_DIR_ENV):
        return f"${DATA_DIR_ENV}"
    return f"the defaults (data_dir not given, ${DATA_DIR_ENV} not set)"


def find_files(folder: str, names: Sequence[str], data_dir: str | Path | None = None) -> list[Path]:
    """Paths of the files ``names`` of dataset ``folder`` under the first data root that has them all.

    Raises
    ------
    DatasetNotFoundError
        No root holds every file; the message lists each path looked at and how to point at the data.
    """
    roots = data_roots(data_dir)
    for root in roots:
        paths = [root / folder / name for name in names]
        if all(p.is_file() for p in paths):
            return paths
    looked = [str(root / folder / name) for root in roots for name in names if not (root / folder / name).is_file()]
    raise DatasetNotFoundError(
        f"Dataset {folder!r} is missing file(s); looked at (from {_source(data_dir)}): {', '.join(looked)}. "
        f"Fix: pass data_dir='/path/to/data' (the folder that holds {folder}/) or set the environment "
        f"variable {DATA_DIR_ENV} to it."
    )


def require_files(folder: str | Path, names: Sequence[str]) -> list[Path]:
    """Paths of ``names`` in the dataset ``folder``; raise :class:`DatasetNotFoundError` if one is absent."""
    paths = [Path(folder) / name for name in names]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"Dataset folder {str(folder)!r} is missing file(s); looked at: {', '.join(missing)}. "
            "Fix: pass the folder that holds them."
        )
    return paths


def read_tsv(path: Path, columns: Sequence[str] | None = None) -> pl.DataFrame:
    """Read a tab-separated file with every column as a string, no quoting (texts hold quote characters).

    Parameters
    ----------
    path:
        The file (``.gz`` allowed).
    columns:
        Column names for a file without a header row; ``None`` when the first row is the header.
    """
    return pl.read_csv(
        path,
        separator="\t",
        quote_char=None,
        infer_schema=False,
        has_header=columns is None,
        new_columns=list(columns) if columns is not None else None,
    )


def finish(interactions: pl.DataFrame, items: pl.DataFrame, config: DataConfig, name: str) -> Dataset:
    """Validate the frames into a :class:`~recsys.data.Dataset` and log its fingerprint at INFO."""
    dataset = Dataset.from_frames(interactions, items, config, name=name)
    if logger.isEnabledFor(logging.INFO):
        logger.info("loaded dataset %s: %s", name, dataset.fingerprint())
    return dataset
