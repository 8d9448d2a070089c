"""Validation at the entry point: typed errors that name the column, the bad value and the fix.

Missing or mistyped columns always raise :class:`SchemaError`. Bad rows (null ids, duplicate item ids,
unknown items, empty texts, non-finite values) raise :class:`DataError` under ``on_invalid="raise"``
and are dropped, counted and warned about under ``on_invalid="repair"``. Events out of order are
always sorted (nothing is lost) and counted in the report.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import polars as pl

from recsys.data._config import DataConfig
from recsys.errors import DataError, SchemaError
from recsys.schema import EVENT, ID_DTYPES, ITEM_ID, TEXT, TIMESTAMP, USER_ID, WEIGHT

__all__ = ["DataWarning", "ValidationReport", "validate_interactions", "validate_items"]

logger = logging.getLogger(__name__)


class DataWarning(UserWarning):
    """Rows were dropped or values converted while validating user data."""


@dataclass
class ValidationReport:
    """What validation dropped or repaired, by reason (row counts)."""

    dropped: dict[str, int] = field(default_factory=dict)
    repaired: dict[str, int] = field(default_factory=dict)

    def merge(self, other: ValidationReport) -> ValidationReport:
        return ValidationReport({**self.dropped, **other.dropped}, {**self.repaired, **other.repaired})

    def summary(self) -> str:
        parts = [f"dropped {n} ({why})" for why, n in self.dropped.items() if n]
        parts += [f"repaired {n} ({why})" for why, n in self.repaired.items() if n]
        return "; ".join(parts) or "nothing dropped or repaired"


def _examples(values: pl.Series, n: int = 5) -> str:
    return ", ".join(repr(v) for v in values.unique(maintain_order=True).head(n).to_list())


def _require_columns(df: pl.DataFrame, columns: list[str], frame: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SchemaError(
            f"{frame} lacks column(s) {missing}; it has {df.columns}. Rename the matching columns "
            f"(df.rename({{'yourname': {missing[0]!r}}})) or set the DataConfig field that names them."
        )


def _check_id_dtype(df: pl.DataFrame, column: str, frame: str) -> None:
    dtype = df.schema[column]
    if not any(dtype == allowed for allowed in ID_DTYPES):
        raise SchemaError(
            f"{frame} column {column!r} has dtype {dtype}; ids must be integers or strings. "
            f"Fix: df.with_columns(pl.col({column!r}).cast(pl.String))."
        )


def _bad_rows(
    df: pl.DataFrame, bad: pl.Expr, reason: str, column: str, fix: str, config: DataConfig, report: ValidationReport
) -> pl.DataFrame:
    """Raise on rows matching ``bad`` or, under ``repair``, drop and count them."""
    flagged = df.filter(bad)
    if flagged.height == 0:
        return df
    if config.on_invalid == "raise":
        raise DataError(
            f"{flagged.height} row(s) with {reason} in column {column!r} (for example "
            f"{_examples(flagged[column])}). Fix: {fix}, or pass DataConfig(on_invalid='repair') to drop them."
        )
    report.dropped[reason] = report.dropped.get(reason, 0) + flagged.height
    warnings.warn(f"dropped {flagged.height} row(s) with {reason} in column {column!r}", DataWarning, stacklevel=4)
    return df.filter(~bad)


def _text_expr(df: pl.DataFrame, fields: tuple[str, ...], separator: str) -> pl.Expr:
    parts = []
    for name in fields:
        dtype = df.schema[name]
        if isinstance(dtype, pl.List) and not dtype.inner.is_nested():
            expr = pl.col(name).cast(pl.List(pl.String)).list.join(", ")
        elif dtype == pl.String or dtype.is_numeric() or dtype == pl.Categorical:
            expr = pl.col(name).cast(pl.String)
        else:
            raise SchemaError(
                f"items column {name!r} has dtype {dtype}; text fields must be strings, lists of strings or "
                f"numbers. Fix: cast it to pl.String or drop it from DataConfig.text_fields."
            )
        parts.append(pl.when(expr.str.strip_chars() == "").then(None).otherwise(expr.str.strip_chars()))
    return pl.concat_str(parts, separator=separator, ignore_nulls=True).fill_null("").alias(TEXT)


def validate_items(items: pl.DataFrame, config: DataConfig) -> tuple[pl.DataFrame, ValidationReport]:
    """Check an item table and join its text fields into ``text``.

    Returns the items (``item_id``, ``text``, then the other input columns) and a report.
    """
    report = ValidationReport()
    _require_columns(items, [ITEM_ID, *config.text_fields], "items")
    _check_id_dtype(items, ITEM_ID, "items")
    items = items.with_columns(_text_expr(items, config.text_fields, config.text_separator))
    items = _bad_rows(
        items, pl.col(ITEM_ID).is_null(), "null item id", ITEM_ID, "remove or fill the null ids", config, report
    )
    items = _bad_rows(
        items,
        ~pl.col(ITEM_ID).is_first_distinct(),
        "duplicate item id",
        ITEM_ID,
        "keep one row per item",
        config,
        report,
    )
    items = _bad_rows(
        items,
        pl.col(TEXT) == "",
        "empty item text",
        ITEM_ID,
        f"give these items text in {list(config.text_fields)} or add another text field",
        config,
        report,
    )
    others = [c for c in items.columns if c not in (ITEM_ID, TEXT)]
    return items.select(ITEM_ID, TEXT, *others), report


def _order_expr(df: pl.DataFrame, column: str) -> pl.Expr:
    dtype = df.schema[column]
    if isinstance(dtype, pl.Datetime):
        return pl.col(column).dt.epoch("s").alias(TIMESTAMP)
    if dtype.is_integer() or dtype.is_float():
        return pl.col(column).cast(pl.Int64, strict=False).alias(TIMESTAMP)
    raise SchemaError(
        f"interactions column {column!r} has dtype {dtype}; the order column must be an integer or float unix "
        f"time, a Datetime, or an integer position. Fix: parse it, e.g. pl.col({column!r}).str.to_datetime()."
    )


def _check_order_values(df: pl.DataFrame, column: str, config: DataConfig, report: ValidationReport) -> pl.DataFrame:
    dtype = df.schema[column]
    if dtype.is_integer():  # UInt64 / Int128 values beyond Int64 would silently become null timestamps
        out_of_range = pl.col(column).cast(pl.Int64, strict=False).is_null() & pl.col(column).is_not_null()
        df = _bad_rows(
            df, out_of_range, "non-finite or out-of-range order value", column, "remove huge timestamps", config, report
        )
    if dtype.is_float():
        bad = ~pl.col(column).is_finite().fill_null(True) | (pl.col(column).abs() >= 2.0**63).fill_null(False)
        df = _bad_rows(
            df, bad, "non-finite or out-of-range order value", column, "remove NaN/inf/huge timestamps", config, report
        )
        frac = df.filter(pl.col(column) != pl.col(column).floor())
        if frac.height:
            raise SchemaError(
                f"interactions column {column!r} holds fractional values (for example {_examples(frac[column])}); "
                f"expected whole unix seconds or positions. Fix: pl.col({column!r}).round().cast(pl.Int64)."
            )
    return _bad_rows(
        df,
        pl.col(column).is_null(),
        "null order value",
        column,
        "fill or remove the missing timestamps",
        config,
        report,
    )


def _optional_columns(df: pl.DataFrame, config: DataConfig, report: ValidationReport) -> list[pl.Expr]:
    exprs: list[pl.Expr] = []
    if config.weight_column is not None:
        _require_columns(df, [config.weight_column], "interactions")
        if not df.schema[config.weight_column].is_numeric():
            raise SchemaError(
                f"interactions column {config.weight_column!r} has dtype {df.schema[config.weight_column]}; "
                f"weights must be numeric. Fix: cast it to pl.Float32 or set DataConfig.weight_column=None."
            )
        exprs.append(pl.col(config.weight_column).cast(pl.Float32).alias(WEIGHT))
    if config.event_column is not None:
        _require_columns(df, [config.event_column], "interactions")
        dtype = df.schema[config.event_column]
        if dtype.is_nested() or dtype == pl.Object:
            raise SchemaError(
                f"interactions column {config.event_column!r} has dtype {dtype}; event types must be strings or "
                f"numbers. Fix: cast it to pl.String or set DataConfig.event_column=None."
            )
        exprs.append(pl.col(config.event_column).cast(pl.String).alias(EVENT))
    return exprs


def validate_interactions(
    interactions: pl.DataFrame, config: DataConfig, item_ids: pl.Series
) -> tuple[pl.DataFrame, ValidationReport]:
    """Check interactions against the catalogue ``item_ids`` and sort each user's events.

    Returns a frame ``user_id, item_id, timestamp (Int64)[, weight (Float32)][, event][, split]`` sorted by
    user then order (ties keep input order), and a report.
    """
    report = ValidationReport()
    order = config.order_column
    _require_columns(interactions, [USER_ID, ITEM_ID, order], "interactions")
    _check_id_dtype(interactions, USER_ID, "interactions")
    _check_id_dtype(interactions, ITEM_ID, "interactions")
    if interactions.schema[ITEM_ID] != item_ids.dtype:
        raise SchemaError(
            f"interactions column 'item_id' has dtype {interactions.schema[ITEM_ID]} but the items' item_id has "
            f"dtype {item_ids.dtype}. Fix: cast both to the same type, e.g. pl.col('item_id').cast(pl.String)."
        )
    df = interactions
    for column in (USER_ID, ITEM_ID):
        df = _bad_rows(
            df, pl.col(column).is_null(), f"null {column}", column, "remove or fill the null ids", config, report
        )
    df = _check_order_values(df, order, config, report)
    df = _bad_rows(
        df,
        ~pl.col(ITEM_ID).is_in(item_ids.implode()),
        "unknown item (not in the items table)",
        ITEM_ID,
        "add these items (with text) to the items table or remove their events",
        config,
        report,
    )
    extra = _optional_columns(df, config, report)
    if config.weight_column is not None:
        df = _bad_rows(
            df,
            # via Float32, the stored dtype: a finite 1e300 would otherwise become an infinite weight
            ~pl.col(config.weight_column).cast(pl.Float64).cast(pl.Float32).is_finite().fill_null(False),
            "null or non-finite weight",
            config.weight_column,
            "fill or remove null/NaN/inf weights (and weights beyond the float32 range)",
            config,
            report,
        )
    keep = ["split"] if "split" in df.columns else []
    df = df.select(USER_ID, ITEM_ID, _order_expr(df, order), *extra, *keep)
    return _sort_events(df, report), report


def _sort_events(df: pl.DataFrame, report: ValidationReport) -> pl.DataFrame:
    out_of_order = (
        df.group_by(USER_ID)
        .agg((pl.col(TIMESTAMP).diff() < 0).any().alias("unsorted"))
        .filter(pl.col("unsorted"))
        .height
    )
    if out_of_order:
        report.repaired["users whose events were sorted by time"] = out_of_order
        logger.info("sorted the events of %d user(s) whose rows were out of order", out_of_order)
    return df.sort([USER_ID, TIMESTAMP], maintain_order=True)
