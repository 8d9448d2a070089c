"""Train / valid / test splits of a :class:`~recsys.data.Dataset`.

Three kinds, chosen by :func:`make_split`:

``"loo"``
    Leave-one-out (:func:`leave_one_out`): per user, the last event is the test target, the second-to-last
    the valid target, the rest is training data.
``"temporal"``
    Global time cutoffs (:func:`temporal_split`): the events after a cutoff are targets.
``"published"``
    The split a dataset ships with, read from its ``split`` column (:func:`published_split`).

Every frame of a :class:`Split` has the columns of ``Dataset.interactions`` (without ``split``) and is sorted
by ``user_id, timestamp``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, get_args

import polars as pl

from recsys.data import Dataset
from recsys.errors import ConfigError, DataError
from recsys.schema import TIMESTAMP, USER_ID

__all__ = [
    "Split",
    "SplitKind",
    "leave_one_out",
    "make_split",
    "published_split",
    "temporal_cutoffs",
    "temporal_split",
]

logger = logging.getLogger(__name__)

SplitKind = Literal["loo", "temporal", "published"]
SPLIT_COLUMN = "split"
PUBLISHED_SPLIT_DATASETS = ("amazon-scientific-unisrec",)
"""Datasets (folders of the shared data directory) that ship a published train/valid/test split."""


@dataclass(frozen=True)
class Split:
    """One train / valid / test division of a dataset's interactions.

    Attributes
    ----------
    name:
        The split kind (``"loo"``, ``"temporal"`` or ``"published"``).
    train:
        Events the model is fitted on.
    valid:
        Target events for model selection; their users have events in ``train``.
    test:
        Target events for the final numbers; their users have events in ``train`` or ``valid``.
    """

    name: str
    train: pl.DataFrame
    valid: pl.DataFrame
    test: pl.DataFrame

    def history_for_test(self) -> pl.DataFrame:
        """Train and valid events, sorted by ``user_id, timestamp``: the history for scoring ``test``."""
        return _sorted(pl.concat([self.train, self.valid], how="vertical_relaxed"))

    def history_for_valid(self) -> pl.DataFrame:
        """Train events: what the model may see when scoring ``valid``."""
        return self.train

    def summary(self) -> str:
        """A one-line description with event and user counts of each part."""
        parts = (("train", self.train), ("valid", self.valid), ("test", self.test))
        sizes = ", ".join(f"{n} {df.height:,} events / {df[USER_ID].n_unique():,} users" for n, df in parts)
        return f"split {self.name!r}: {sizes}"


def _sorted(df: pl.DataFrame) -> pl.DataFrame:
    return df.sort([USER_ID, TIMESTAMP], maintain_order=True)


def _events(ds: Dataset) -> pl.DataFrame:
    """The dataset's events without the published ``split`` column, sorted by user and time."""
    df = ds.interactions
    if SPLIT_COLUMN in df.columns:
        df = df.drop(SPLIT_COLUMN)
    return _sorted(df)


def leave_one_out(ds: Dataset) -> Split:
    """Per user: the last event is ``test``, the second-to-last ``valid``, the rest ``train``.

    Users with fewer than 3 events stay wholly in ``train`` (the model learns from them) and are not
    evaluated: they have no valid or test target. Ties in ``timestamp`` keep the dataset order.

    Parameters
    ----------
    ds:
        The dataset; its interactions are sorted by ``user_id, timestamp``.

    Returns
    -------
    Split
        Named ``"loo"``; ``valid`` and ``test`` hold exactly one event per evaluated user.
    """
    df = _events(ds).with_columns(
        pl.int_range(pl.len(), dtype=pl.Int64).over(USER_ID).alias("_pos"),
        pl.len().over(USER_ID).cast(pl.Int64).alias("_n"),
    )
    evaluated = pl.col("_n") >= 3
    from_end = pl.col("_n") - pl.col("_pos")
    test = df.filter(evaluated & (from_end == 1))
    valid = df.filter(evaluated & (from_end == 2))
    train = df.filter(~evaluated | (from_end > 2))
    split = Split("loo", *(part.drop("_pos", "_n") for part in (train, valid, test)))
    logger.info("%s", split.summary())
    return split


def _check_fractions(valid_fraction: float, test_fraction: float) -> None:
    if not 0.0 <= valid_fraction < 1.0:
        raise ConfigError(f"valid_fraction={valid_fraction!r} must be in [0, 1); for example 0.1.")
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction={test_fraction!r} must be in (0, 1); for example 0.1.")
    if valid_fraction + test_fraction >= 1.0:
        raise ConfigError(
            f"valid_fraction + test_fraction = {valid_fraction + test_fraction!r} leaves no training events; "
            "make their sum smaller than 1 (for example 0.1 and 0.1)."
        )


def temporal_cutoffs(ds: Dataset, valid_fraction: float = 0.1, test_fraction: float = 0.1) -> tuple[float, float]:
    """The two global cutoffs of :func:`temporal_split`: event-time quantiles (linear interpolation).

    Returns
    -------
    tuple of float
        ``(valid_cutoff, test_cutoff)``: the ``1 - valid_fraction - test_fraction`` and ``1 - test_fraction``
        quantiles of all event timestamps. Events strictly after a cutoff belong to the later period.

    Raises
    ------
    ConfigError
        The fractions are out of range, the dataset has no events, or its order is a position, not a time.
    """
    _check_fractions(valid_fraction, test_fraction)
    if not ds.has_time:
        raise ConfigError(
            f"dataset {ds.name!r} orders events by position, not time, so split='temporal' has no meaning; "
            "use split='loo' instead."
        )
    times = ds.interactions[TIMESTAMP]
    valid_cut = times.quantile(1.0 - valid_fraction - test_fraction, interpolation="linear")
    test_cut = times.quantile(1.0 - test_fraction, interpolation="linear")
    if valid_cut is None or test_cut is None:
        raise ConfigError(f"dataset {ds.name!r} has no interactions to split; load a non-empty dataset.")
    return float(valid_cut), float(test_cut)


def temporal_split(ds: Dataset, valid_fraction: float = 0.1, test_fraction: float = 0.1) -> Split:
    """Split at two global time cutoffs taken from event-time quantiles (see :func:`temporal_cutoffs`).

    Events up to the valid cutoff are ``train``. Events between the cutoffs are ``valid`` targets of users
    with at least one ``train`` event; events after the test cutoff are ``test`` targets of users with at
    least one ``train`` or ``valid`` event. A user may have several targets. Events of users who first appear
    after the valid cutoff (no earlier history to recommend from) are dropped, and their number logged.

    Parameters
    ----------
    ds:
        The dataset; its ``timestamp`` must be a time (``ds.has_time``).
    valid_fraction, test_fraction:
        Shares of all events (by count, before dropping cold-start users) in the valid and test periods.

    Returns
    -------
    Split
        Named ``"temporal"``.
    """
    valid_cut, test_cut = temporal_cutoffs(ds, valid_fraction, test_fraction)
    df = _events(ds)
    t = pl.col(TIMESTAMP)
    train = df.filter(t <= valid_cut)
    seen = train[USER_ID].unique().implode()
    valid = df.filter((t > valid_cut) & (t <= test_cut) & pl.col(USER_ID).is_in(seen))
    seen = pl.concat([train[USER_ID], valid[USER_ID]]).unique().implode()
    test = df.filter((t > test_cut) & pl.col(USER_ID).is_in(seen))
    dropped = df.height - train.height - valid.height - test.height
    split = Split("temporal", train, valid, test)
    logger.info(
        "%s (cutoffs %s and %s; %d cold-start event(s) dropped)",
        split.summary(),
        valid_cut,
        test_cut,
        dropped,
    )
    return split


def published_split(ds: Dataset) -> Split:
    """The split the dataset ships with, from its ``split`` column (``"train"``, ``"valid"``, ``"test"``).

    Raises
    ------
    ConfigError
        The dataset has no ``split`` column.
    DataError
        The ``split`` column holds other values.
    """
    if SPLIT_COLUMN not in ds.interactions.columns:
        raise ConfigError(
            f"dataset {ds.name!r} has no published split (no 'split' column in its interactions); use "
            f"split='loo' or split='temporal', or a dataset that ships one: "
            f"{', '.join(PUBLISHED_SPLIT_DATASETS)}."
        )
    labels = ds.interactions[SPLIT_COLUMN].cast(pl.String)
    unknown = labels.filter(~labels.is_in(["train", "valid", "test"]) | labels.is_null()).unique()
    if unknown.len():
        raise DataError(
            f"interactions column 'split' holds {unknown.head(5).to_list()}; allowed values are 'train', "
            "'valid' and 'test'. Fix: map the other labels onto these three."
        )
    df = _sorted(ds.interactions.with_columns(labels))
    train, valid, test = (df.filter(pl.col(SPLIT_COLUMN) == s).drop(SPLIT_COLUMN) for s in ("train", "valid", "test"))
    split = Split("published", train, valid, test)
    logger.info("%s", split.summary())
    return split


def make_split(ds: Dataset, kind: SplitKind) -> Split:
    """Split ``ds`` by ``kind``: ``"loo"`` (:func:`leave_one_out`), ``"temporal"`` (:func:`temporal_split`
    with default fractions) or ``"published"`` (:func:`published_split`).

    Raises
    ------
    ConfigError
        ``kind`` is not one of the three.
    """
    if kind == "loo":
        return leave_one_out(ds)
    if kind == "temporal":
        return temporal_split(ds)
    if kind == "published":
        return published_split(ds)
    raise ConfigError(f"split kind={kind!r} is not known; use one of {list(get_args(SplitKind))}.")
