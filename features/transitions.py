"""Item-to-item transitions: which items follow which in users' sequences, and scores from them.

``Transitions.fit`` builds a sparse ``(n_items, n_items)`` matrix ``M`` where ``M[i, j]`` sums
``distance_decay ** (d - 1)`` over every time item ``j`` follows item ``i`` at ``d <= window`` steps in
one user's sequence (optionally row-normalised into transition probabilities). A user's scores are
``W @ M`` with ``W[u, i]`` the recency weight of item ``i`` in ``u``'s history
(``0.5 ** ((len - 1 - pos) / history_half_life)``, summed over repeats).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recsys.data import Histories
from recsys.errors import ConfigError, DataError, check_is_fitted
from recsys.features import _common
from recsys.features._common import check_history_items, check_positive_float, sparse_values

__all__ = ["TransitionConfig", "Transitions", "recency_matrix"]

logger = logging.getLogger(__name__)

_PAIR_CHUNK_USERS = 4096


@dataclass(frozen=True)
class TransitionConfig:
    """Settings of :class:`Transitions`.

    Parameters
    ----------
    window:
        Item ``j`` counts as following item ``i`` when it comes at most this many events later.
    distance_decay:
        Weight multiplier per extra step: a pair ``d`` steps apart adds ``distance_decay ** (d - 1)``.
    history_half_life:
        Events after which a history item's weight halves when scoring (in events, not seconds).
    normalize:
        Divide each row of the matrix by its sum (transition probabilities).
    """

    window: int = 3
    distance_decay: float = 0.5
    history_half_life: float = 5.0
    normalize: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ConfigError(f"window must be a positive integer (for example 3), got {self.window!r}.")
        if not (0.0 < self.distance_decay <= 1.0):
            raise ConfigError(f"distance_decay must be in (0, 1], got {self.distance_decay!r}.")
        check_positive_float("history_half_life", self.history_half_life, 5.0)
        if not isinstance(self.normalize, bool):
            raise ConfigError(f"normalize must be True or False, got {self.normalize!r}.")


def recency_matrix(
    histories: Histories, n_items: int, half_life: float, max_events: int | None = None
) -> sp.csr_matrix:
    """Recency-weighted bag of items per user.

    Parameters
    ----------
    histories:
        Events of ``n_users`` users, oldest first.
    n_items:
        Catalogue size.
    half_life:
        The newest event weighs 1, one ``half_life`` events earlier weighs 0.5, and so on.
    max_events:
        Keep only each user's last ``max_events`` events; ``None`` keeps all.

    Returns
    -------
    scipy.sparse.csr_matrix
        float32 of shape ``(n_users, n_items)``; ``W[u, i]`` sums the weights of item ``i`` in
        ``u``'s history.
    """
    check_history_items(histories, n_items)
    users = histories.event_user()
    age = histories.event_age()  # 0 for the newest event
    weights = np.power(0.5, age / half_life).astype(np.float32)
    keep = slice(None) if max_events is None else age < max_events
    shape = (histories.n_users, n_items)
    matrix = sp.coo_matrix((weights[keep], (users[keep], histories.item_idx[keep])), shape=shape)
    return matrix.tocsr()  # duplicates are summed


def _pairs(histories: Histories, window: int, decay: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (earlier, later) item pair at most ``window`` steps apart in one user's sequence, weighted."""
    items, users = histories.item_idx, histories.event_user()
    sources, targets, weights = [], [], []
    for d in range(1, window + 1):
        same_user = users[:-d] == users[d:]
        sources.append(items[:-d][same_user])
        targets.append(items[d:][same_user])
        weights.append(np.full(int(same_user.sum()), decay ** (d - 1), dtype=np.float32))
    return np.concatenate(sources), np.concatenate(targets), np.concatenate(weights)


def _row_normalize(matrix: sp.csr_matrix) -> sp.csr_matrix:
    sums = np.asarray(matrix.sum(axis=1), dtype=np.float32).ravel()
    inverse = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
    return (sp.diags(inverse) @ matrix).astype(np.float32).tocsr()


class Transitions:
    """Sequential co-occurrence stage: ``fit`` on histories, ``score`` users' next items.

    Attributes
    ----------
    matrix_:
        scipy.sparse.csr_matrix, float32 of shape ``(n_items, n_items)``.
    """

    matrix_: sp.csr_matrix

    def __init__(self, config: TransitionConfig | None = None) -> None:
        self.config = config if config is not None else TransitionConfig()

    def fit(self, histories: Histories, n_items: int) -> Transitions:
        """Build ``matrix_`` from training ``histories`` over ``n_items`` items. Returns ``self``."""
        check_history_items(histories, n_items)
        cfg = self.config
        src, dst, weights = _pairs(histories, cfg.window, cfg.distance_decay)
        matrix = sp.coo_matrix((weights, (src, dst)), shape=(n_items, n_items)).tocsr()
        matrix.sum_duplicates()
        self.matrix_ = _row_normalize(matrix) if cfg.normalize else matrix.astype(np.float32)
        logger.info("transitions: %d item pairs from %d events", self.matrix_.nnz, histories.item_idx.size)
        return self

    @property
    def n_items(self) -> int:
        check_is_fitted(self)
        return int(self.matrix_.shape[0])

    def user_weights(self, histories: Histories) -> sp.csr_matrix:
        """float32 csr matrix of shape ``(n_users, n_items)``: recency weights of the history items."""
        return recency_matrix(histories, self.n_items, self.config.history_half_life)

    def score(self, histories: Histories) -> np.ndarray:
        """Dense scores: float32 array of shape ``(n_users, n_items)``; zero rows for empty histories.

        Memory grows with ``n_users * n_items``; callers chunk over users.
        """
        check_is_fitted(self)
        return np.asarray((self.user_weights(histories) @ self.matrix_).toarray(), dtype=np.float32)

    def score_sparse(self, histories: Histories) -> sp.csr_matrix:
        """The same scores as :meth:`score` as a float32 csr matrix: memory follows the transitions found,
        not ``n_users * n_items``."""
        check_is_fitted(self)
        return (self.user_weights(histories) @ self.matrix_).astype(np.float32).tocsr()

    def score_pairs(
        self,
        histories: Histories,
        user_pos: np.ndarray,
        item_idx: np.ndarray,
        *,
        chunk_users: int = _PAIR_CHUNK_USERS,
        scores: sp.csr_matrix | None = None,
    ) -> np.ndarray:
        """Scores of given (user, item) pairs without a dense catalogue-wide matrix.

        Parameters
        ----------
        histories:
            Events of ``n_users`` users.
        user_pos:
            int array of shape ``(n_pairs,)``: positions into ``histories``.
        item_idx:
            int array of shape ``(n_pairs,)``: catalogue rows.
        chunk_users:
            Users per sparse ``W @ M`` block (bounds memory).
        scores:
            ``score_sparse(histories)`` when the caller already holds it (the pipeline's candidate stage ranks
            by it): the pairs are read from it instead of multiplying ``W @ M`` again. Same values either way,
            since each row of the product depends only on that user's row of ``W``.

        Returns
        -------
        numpy.ndarray
            float32 array of shape ``(n_pairs,)``, equal to ``score(histories)[user_pos, item_idx]``.
        """
        check_is_fitted(self)
        if isinstance(chunk_users, bool) or not isinstance(chunk_users, int) or chunk_users < 1:
            raise ConfigError(f"chunk_users must be a positive integer, got {chunk_users!r}.")
        user_pos, item_idx = _check_pairs(user_pos, item_idx, histories.n_users, self.n_items)
        if scores is not None and scores.shape != (histories.n_users, self.n_items):
            raise DataError(
                f"scores has shape {scores.shape}; pass score_sparse(histories), shape "
                f"({histories.n_users}, {self.n_items})."
            )
        if scores is not None and self.n_items > _common.DENSE_MAX_ITEMS:
            return sparse_values(scores, user_pos, item_idx)
        weights = self.user_weights(histories) if scores is None else None
        buffer = None  # up to DENSE_MAX_ITEMS items, the pairs read a chunk's score rows through a RowBuffer
        if self.n_items <= _common.DENSE_MAX_ITEMS:
            buffer = _common.RowBuffer(self.n_items, histories.n_users)
            chunk_users = min(chunk_users, buffer.rows)
        order = np.argsort(user_pos, kind="stable")
        starts = np.arange(0, histories.n_users + chunk_users, chunk_users)
        bounds = np.searchsorted(user_pos[order], starts)  # pairs of chunk c: order[bounds[c]:bounds[c+1]]
        out = np.zeros(user_pos.size, dtype=np.float32)
        for c in np.nonzero(np.diff(bounds))[0]:
            sel = order[bounds[c] : bounds[c + 1]]
            start = int(starts[c])
            if weights is not None:
                block = (weights[start : start + chunk_users] @ self.matrix_).tocsr()  # (chunk, n_items)
            else:
                block = scores[start : start + chunk_users]  # type: ignore[index]
            if buffer is None:
                out[sel] = sparse_values(block, user_pos[sel] - start, item_idx[sel])
                continue
            out[sel] = buffer.read(block, np.arange(block.shape[0]), user_pos[sel] - start, item_idx[sel])
        return out


def _check_pairs(
    user_pos: np.ndarray, item_idx: np.ndarray, n_users: int, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """int64 copies of ``user_pos`` and ``item_idx`` after checking their shapes and ranges."""
    users = np.asarray(user_pos, dtype=np.int64).ravel()
    items = np.asarray(item_idx, dtype=np.int64).ravel()
    if users.shape != items.shape:
        raise DataError(f"user_pos has {users.size} entries but item_idx has {items.size}; pass one per pair.")
    if users.size and (users.min() < 0 or users.max() >= n_users):
        raise DataError(f"user_pos must lie in 0..{n_users - 1} (positions into the histories).")
    if items.size and (items.min() < 0 or items.max() >= n_items):
        raise DataError(f"item_idx must lie in 0..{n_items - 1} (rows of the fitted catalogue).")
    return users, items
