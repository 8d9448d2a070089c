"""The contract of a ranker feature block.

A block is a small stage with one job. ``fit(context)`` learns statistics from *past* events only (the
pipeline passes the events before every training cut-off, so no label leaks in); ``transform(candidates,
histories)`` adds the block's columns to a candidate frame and keeps its rows and their order.

The candidate frame has at least ``query (u32)`` and ``item_idx (u32)``; ``query`` is a row of the
:class:`~recsys.data.Histories` passed beside it, which holds that query's events *before* its cut-off,
oldest first. The time "now" of a query is its last history event (a query never knows when its label
happens).

Fitted state is numpy arrays (or scipy CSR matrices) named in ``state_attributes``, so that every block
saves to safetensors through :meth:`FeatureBlock.state` / :meth:`FeatureBlock.load_state` without pickle.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys.data import Histories
from recsys.errors import ModelFormatError, SchemaError, check_is_fitted
from recsys.schema import ITEM_IDX

__all__ = ["QUERY", "FeatureBlock", "FitContext", "query_now"]

QUERY = "query"


@dataclass(frozen=True)
class FitContext:
    """What a block may learn from.

    Attributes
    ----------
    events: past events of every user, oldest first (catalogue rows index ``items`` and ``item_vectors``).
    items: the catalogue in ``item_idx`` order: ``item_id, text`` and any other item columns (categories...).
    item_vectors: float32 ``(n_items, d)`` L2-normalised text vectors of the catalogue.
    learned_vectors: float32 ``(n_items, d')`` L2-normalised vectors of the catalogue in the user encoder's
        learned space (the memory encoder's item tower), or None when the user encoder has no space of its own
        (zero-shot: its vectors are the text vectors); the ``learned`` group is skipped then.
    """

    events: Histories
    items: pl.DataFrame
    item_vectors: np.ndarray
    learned_vectors: np.ndarray | None = None

    @property
    def n_items(self) -> int:
        return self.items.height


def query_now(histories: Histories) -> np.ndarray:
    """int64 ``(n_queries,)``: the timestamp of each query's last history event (0 for empty histories)."""
    last = np.maximum(histories.indptr[1:] - 1, 0)
    now = histories.timestamps[last] if len(histories.timestamps) else np.zeros(histories.n_users, np.int64)
    return np.where(histories.lengths > 0, now, 0).astype(np.int64)


class FeatureBlock(ABC):
    """Base class of the feature blocks.

    Subclasses set ``group`` (the name used in ablations), return their column names from ``names`` and
    list their fitted attributes (numpy arrays or scipy CSR matrices, names ending in ``_``) in
    ``state_attributes``.
    """

    group: ClassVar[str]
    state_attributes: ClassVar[tuple[str, ...]] = ()

    @property
    @abstractmethod
    def names(self) -> list[str]:
        """The columns :meth:`transform` adds, in order."""

    @abstractmethod
    def fit(self, context: FitContext) -> FeatureBlock:
        """Learn statistics from ``context`` (past events only). Returns ``self``."""

    @abstractmethod
    def _transform(self, candidates: pl.DataFrame, histories: Histories) -> pl.DataFrame: ...

    def transform(self, candidates: pl.DataFrame, histories: Histories) -> pl.DataFrame:
        """``candidates`` with this block's columns added (rows and their order kept)."""
        if self.state_attributes:
            check_is_fitted(self, self.state_attributes)
        missing = [c for c in (QUERY, ITEM_IDX) if c not in candidates.columns]
        if missing:
            raise SchemaError(f"candidate frame lacks {missing}; it has {candidates.columns}.")
        out = self._transform(candidates, histories)
        if out.height != candidates.height or any(n not in out.columns for n in self.names):
            raise SchemaError(f"feature block {self.group!r} must add {self.names} and keep every candidate row.")
        return out

    def extend_items(self, items: pl.DataFrame, item_vectors: np.ndarray, n_old: int) -> FeatureBlock:
        """A copy that also scores items appended to the catalogue (new items known only by their data).

        ``items`` and ``item_vectors`` are the whole extended catalogue: the ``n_old`` fitted rows first,
        unchanged, then the new ones. The default pads per-item arrays with ``pad_value`` and grows
        item-indexed sparse matrices with empty rows and columns: a new item has no past events. Blocks that
        read item data override this.
        """
        if self.state_attributes:
            check_is_fitted(self, self.state_attributes)
        twin = copy.copy(self)
        n_new = items.height
        for name in self.state_attributes:
            value = getattr(self, name)
            if value.ndim < 1 or value.shape[0] != n_old:
                continue  # not indexed by item
            if sp.issparse(value):
                shape = (n_new, n_new if value.shape[1] == n_old else value.shape[1])
                grown = value.tocsr().copy()
                grown.resize(shape)
                setattr(twin, name, grown)
            else:
                pad = np.full((n_new - n_old, *value.shape[1:]), self.pad_value(name), dtype=value.dtype)
                setattr(twin, name, np.concatenate([value, pad]))
        return twin

    def pad_value(self, name: str) -> float:
        """The value of state array ``name`` for an item without past events (default 0)."""
        return 0.0

    # ------------------------------------------------------------------------------ persistence
    def state(self) -> dict[str, np.ndarray]:
        """The fitted attributes as named arrays (CSR matrices as ``name.data/indices/indptr/shape``)."""
        if self.state_attributes:
            check_is_fitted(self, self.state_attributes)
        arrays: dict[str, np.ndarray] = {}
        for name in self.state_attributes:
            value = getattr(self, name)
            if sp.issparse(value):
                csr = value.tocsr()
                arrays |= {
                    f"{name}.data": np.ascontiguousarray(csr.data),
                    f"{name}.indices": np.ascontiguousarray(csr.indices),  # scipy's own index dtype (int32
                    f"{name}.indptr": np.ascontiguousarray(csr.indptr),  # where it fits): loading shares it
                    f"{name}.shape": np.asarray(csr.shape, np.int64),
                }
            else:
                arrays[name] = np.ascontiguousarray(value)
        return arrays

    def load_state(self, arrays: dict[str, np.ndarray]) -> FeatureBlock:
        """Restore what :meth:`state` wrote. Returns ``self``."""
        for name in self.state_attributes:
            if f"{name}.shape" in arrays:
                shape = tuple(int(x) for x in arrays[f"{name}.shape"])
                parts = (arrays[f"{name}.data"], arrays[f"{name}.indices"], arrays[f"{name}.indptr"])
                setattr(self, name, sp.csr_matrix(parts, shape=shape, copy=False))  # int64 (older saves): a copy
            elif name in arrays:
                setattr(self, name, arrays[name])
            else:
                raise ModelFormatError(f"saved features lack {self.group}.{name}; the model directory is incomplete.")
        return self
