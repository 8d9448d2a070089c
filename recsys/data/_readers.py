"""Readers for Parquet, CSV/TSV and JSON lines into polars."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import polars as pl

from recsys.errors import ConfigError, DatasetNotFoundError

__all__ = ["read_table"]

Format = Literal["parquet", "csv", "tsv", "jsonl"]

_SUFFIXES: dict[str, Format] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


def _infer_format(path: Path) -> Format:
    suffixes = [s for s in path.suffixes if s != ".gz"]
    fmt = _SUFFIXES.get(suffixes[-1].lower()) if suffixes else None
    if fmt is None:
        raise ConfigError(
            f"Cannot tell the format of {str(path)!r} from its suffix; pass format= one of "
            f"'parquet', 'csv', 'tsv', 'jsonl' or rename it to {sorted(_SUFFIXES)}."
        )
    return fmt


def read_table(path: str | Path, format: Format | None = None) -> pl.DataFrame:
    """Read a Parquet, CSV, TSV or JSON-lines file (``.gz`` allowed for text formats) into polars.

    A folder of Parquet files (``part-*.parquet``) is read as one table.

    Raises
    ------
    DatasetNotFoundError
        The path does not exist.
    ConfigError
        The format cannot be inferred from the suffix and ``format`` was not given.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetNotFoundError(f"No file at {str(path)!r}; check the path.")
    if path.is_dir():
        return pl.read_parquet(path / "*.parquet")
    fmt = format or _infer_format(path)
    if fmt == "parquet":
        return pl.read_parquet(path)
    if fmt in ("csv", "tsv"):
        return pl.read_csv(path, separator="\t" if fmt == "tsv" else ",", infer_schema_length=10_000)
    if fmt == "jsonl":
        return pl.read_ndjson(path)
    raise ConfigError(f"format={fmt!r} is not supported; use 'parquet', 'csv', 'tsv' or 'jsonl'.")
