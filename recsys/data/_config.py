"""The data contract's settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from recsys.errors import ConfigError

__all__ = ["DataConfig"]

OnInvalid = Literal["raise", "repair"]


@dataclass(frozen=True)
class DataConfig:
    """How raw frames map onto the data contract.

    Parameters
    ----------
    text_fields:
        Item columns joined (in this order, nulls skipped) into the item text. String, list-of-string
        and numeric columns are accepted.
    text_separator:
        Placed between the text fields.
    order_column:
        Interaction column that orders each user's events: a unix timestamp, a ``Datetime``, or an
        explicit position for sequences without time. It becomes the ``timestamp`` column.
    order_is_time:
        False when ``order_column`` is a position rather than a time (time-based features are then off).
    weight_column:
        Optional interaction column (for example ``"rating"``) that becomes ``weight`` (float32).
    event_column:
        Optional interaction column with the event type; becomes ``event``.
    on_invalid:
        ``"raise"`` (default) raises a :class:`~recsys.errors.DataError` on bad rows; ``"repair"`` drops
        them, counts them in the report and warns. Missing or mistyped columns always raise.
    """

    text_fields: tuple[str, ...] = ("text",)
    text_separator: str = ". "
    order_column: str = "timestamp"
    order_is_time: bool = True
    weight_column: str | None = None
    event_column: str | None = None
    on_invalid: OnInvalid = "raise"

    def __post_init__(self) -> None:
        if isinstance(self.text_fields, str):
            object.__setattr__(self, "text_fields", (self.text_fields,))
        if not self.text_fields:
            raise ConfigError("DataConfig.text_fields is empty; name at least one item text column.")
        if self.on_invalid not in ("raise", "repair"):
            raise ConfigError(f"DataConfig.on_invalid={self.on_invalid!r} is not allowed; use 'raise' or 'repair'.")
