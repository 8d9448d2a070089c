"""Build the embedded ``ml-latest-small`` files from the GroupLens CSV release.

Run once by maintainers; the output ships inside the package::

    python -m recsys.datasets._build_embedded ../shared/data/ml-latest-small

It writes ``ratings.parquet``, ``movies.parquet`` and ``tags.parquet`` (zstd, compact dtypes, source column
names, ratings sorted by user then time) and a copy of ``README.txt``, which holds the licence: the data may
be redistributed for non-commercial research with its terms and citation (Harper & Konstan 2015).
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import polars as pl

from recsys.errors import DataError, DatasetNotFoundError

__all__ = ["EMBEDDED_DIR", "build", "main"]

logger = logging.getLogger(__name__)

EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded" / "ml-latest-small"

_SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "ratings": {"userId": pl.Int32(), "movieId": pl.Int32(), "rating": pl.Float32(), "timestamp": pl.Int64()},
    "movies": {"movieId": pl.Int32(), "title": pl.String(), "genres": pl.String()},
    "tags": {"userId": pl.Int32(), "movieId": pl.Int32(), "tag": pl.String(), "timestamp": pl.Int64()},
}
_SORT = {
    "ratings": ["userId", "timestamp", "movieId"],
    "movies": ["movieId"],
    "tags": ["movieId", "timestamp"],
}


def _convert(src: Path, out: Path, table: str) -> int:
    """Convert ``src/<table>.csv`` to ``out/<table>.parquet``; return the row count."""
    frame = pl.read_csv(src / f"{table}.csv", schema=_SCHEMAS[table]).sort(_SORT[table], maintain_order=True)
    frame.write_parquet(out / f"{table}.parquet", compression="zstd", compression_level=19, statistics=False)
    back = pl.read_parquet(out / f"{table}.parquet")
    if not back.equals(frame):
        raise DataError(f"{table}.parquet does not read back equal to {table}.csv; the build is broken.")
    logger.info("%s: %d rows, %d bytes", table, frame.height, (out / f"{table}.parquet").stat().st_size)
    return frame.height


def build(src: str | Path, out: str | Path = EMBEDDED_DIR) -> dict[str, int]:
    """Convert the CSV release in ``src`` into the embedded files in ``out``.

    Returns
    -------
    dict
        Row count of each table written.

    Raises
    ------
    DatasetNotFoundError
        A source file is missing.
    """
    src, out = Path(src), Path(out)
    needed = [src / f"{t}.csv" for t in _SCHEMAS] + [src / "README.txt"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise DatasetNotFoundError(f"missing source file(s): {', '.join(missing)}; pass the ml-latest-small folder.")
    out.mkdir(parents=True, exist_ok=True)
    counts = {table: _convert(src, out, table) for table in _SCHEMAS}
    shutil.copyfile(src / "README.txt", out / "README.txt")
    return counts


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="folder with ratings.csv, movies.csv, tags.csv and README.txt")
    parser.add_argument("--out", type=Path, default=EMBEDDED_DIR, help="output folder (default: the package's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        counts = build(args.src, args.out)
    except DatasetNotFoundError as err:
        logger.error("%s", err)
        return 2
    logger.info("wrote %s to %s", counts, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
