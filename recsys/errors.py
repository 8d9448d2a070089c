"""The one exception tree of ``recsys``.

::

    RecsysError                      every error this library raises on purpose
    ├── DataError (ValueError)       bad values in user data: null ids, unknown items, empty text, ...
    │   └── SchemaError (TypeError)  missing or mistyped columns
    ├── ConfigError (ValueError)     an invalid setting or argument
    ├── NotFittedError (RuntimeError) a stage was used before ``fit``
    ├── DatasetNotFoundError (FileNotFoundError) a dataset file is missing; says where it looked
    └── ModelFormatError (ValueError) a saved model directory is incomplete, unknown or tampered with

Every message names the argument or column, the bad value, and the fix or the allowed values.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigError",
    "DataError",
    "DatasetNotFoundError",
    "ModelFormatError",
    "NotFittedError",
    "RecsysError",
    "SchemaError",
    "check_is_fitted",
]


class RecsysError(Exception):
    """Base class of every error raised on purpose by ``recsys``."""


class DataError(RecsysError, ValueError):
    """User data holds bad values (null ids, unknown items, empty texts, NaN, ...)."""


class SchemaError(DataError, TypeError):
    """A frame lacks a required column or a column has the wrong type."""


class ConfigError(RecsysError, ValueError):
    """An invalid setting or argument."""


class NotFittedError(RecsysError, RuntimeError):
    """A stage was used before it was fitted."""


class DatasetNotFoundError(RecsysError, FileNotFoundError):
    """A dataset file is missing."""


class ModelFormatError(RecsysError, ValueError):
    """A saved model directory is incomplete, of an unknown format, or fails its checksums."""


def check_is_fitted(stage: Any, attributes: tuple[str, ...] | None = None) -> None:
    """Raise :class:`NotFittedError` unless ``stage`` has its fitted attributes (names ending in ``_``).

    Parameters
    ----------
    stage:
        Any object following the ``fit``-returns-``self`` convention.
    attributes:
        Names that must exist and not be ``None``; by default every public attribute ending in ``_``
        declared in ``type(stage).__annotations__`` (at least one must exist).
    """
    names = attributes
    if names is None:
        annotations: dict[str, Any] = {}
        for klass in reversed(type(stage).__mro__):
            annotations.update(getattr(klass, "__annotations__", {}))
        names = tuple(n for n in annotations if n.endswith("_") and not n.startswith("_"))
    missing = [n for n in names if getattr(stage, n, None) is None]
    if missing or not names:
        kind = type(stage).__name__
        raise NotFittedError(
            f"This {kind} is not fitted yet (missing {', '.join(missing) or 'fitted state'}); "
            f"call {kind}.fit(...) first."
        )
