"""Collaborative-filtering peers from `implicit` (ALS, BPR) in the shape of the evaluation harness.

A peer, not part of the library: it needs ``pip install -e ".[bench]"``. Every event counts once (implicit
feedback; ratings are ignored, as in our pipeline). With ``valid`` targets, ``fit`` picks the number of factors
on them (models fitted on the training events, scored on the validation targets against the full catalogue),
then refits on training + validation events, the history our pipeline and RecBole also see at test time.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsys.errors import ConfigError, NotFittedError
from recsys.evaluation import ranking_metrics
from recsys.schema import ITEM_ID, RANK, SCORE, USER_ID

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImplicitConfig:
    """Settings of an `implicit` peer.

    Parameters
    ----------
    kind:
        ``"als"`` (alternating least squares, confidence ``1 + alpha``) or ``"bpr"`` (Bayesian personalised
        ranking, SGD).
    factors:
        Latent dimensions; with validation targets, the best of ``factor_grid`` replaces it.
    factor_grid:
        Candidates for ``factors``, chosen on validation NDCG@10 (empty: no search).
    iterations:
        ALS sweeps or BPR epochs.
    regularization, alpha, learning_rate:
        As in `implicit` (``alpha``: ALS only; ``learning_rate``: BPR only).
    seed:
        Random state of the factor initialisation and of BPR's sampling.
    """

    kind: Literal["als", "bpr"] = "als"
    factors: int = 64
    factor_grid: tuple[int, ...] = (32, 64, 128)
    iterations: int | None = None
    regularization: float = 0.01
    alpha: float = 10.0
    learning_rate: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("als", "bpr"):
            raise ConfigError(f"ImplicitConfig.kind={self.kind!r}; use 'als' or 'bpr'.")
        if self.factors < 1 or any(f < 1 for f in self.factor_grid):
            raise ConfigError(f"ImplicitConfig factors must be >= 1; got {self.factors}, {self.factor_grid}.")


class ImplicitRecommender:
    """ALS or BPR from `implicit`, recommending from the full catalogue (``RecommenderLike``)."""

    def __init__(self, config: ImplicitConfig | None = None) -> None:
        self.config = config or ImplicitConfig()

    def _model(self, factors: int) -> Any:
        from implicit.cpu.als import AlternatingLeastSquares
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        cfg = self.config
        if cfg.kind == "als":
            return AlternatingLeastSquares(
                factors=factors,
                regularization=cfg.regularization,
                alpha=cfg.alpha,
                iterations=cfg.iterations or 15,
                random_state=cfg.seed,
            )
        return BayesianPersonalizedRanking(
            factors=factors,
            learning_rate=cfg.learning_rate,
            regularization=cfg.regularization,
            iterations=cfg.iterations or 100,
            random_state=cfg.seed,
        )

    def _matrix(self, events: pl.DataFrame) -> sp.csr_matrix:
        """Users x items, 1 where the user has the item (repeats count once)."""
        pairs = events.select(USER_ID, ITEM_ID).unique()
        rows = pairs.join(self.users_, on=USER_ID, how="inner").join(self.items_, on=ITEM_ID, how="inner")
        shape = (self.users_.height, self.items_.height)
        data = np.ones(rows.height, dtype=np.float32)
        return sp.csr_matrix((data, (rows["u"].to_numpy(), rows["i"].to_numpy())), shape=shape)

    def _fit(self, events: pl.DataFrame, factors: int) -> Any:
        self.users_ = events.select(pl.col(USER_ID).unique().sort()).with_row_index("u")
        import implicit.cpu.als  # noqa: F401  (loads its BLAS first: the limit below covers only loaded libraries)

        # implicit's own threads do the work (its advice, to avoid oversubscription); it checks BLAS on construction
        with threadpool_limits(1, "blas"):
            model = self._model(factors)
            model.fit(self._matrix(events), show_progress=False)
        return model

    def fit(self, interactions: pl.DataFrame, items: pl.DataFrame, valid: pl.DataFrame | None = None) -> Any:
        """Fit on ``interactions`` (+ ``valid``, after choosing the factors on it)."""
        self.items_ = items.select(pl.col(ITEM_ID)).with_row_index("i")
        factors = self.config.factors
        if valid is not None and valid.height and self.config.factor_grid:
            scores = {}
            for f in self.config.factor_grid:
                self.model_ = self._fit(interactions, f)
                users = valid[USER_ID].unique()
                recs = self.recommend(users, 10, history=interactions)
                scores[f] = ranking_metrics(recs, valid, items.height, (10,))["ndcg@10"]
            factors = max(scores, key=lambda f: scores[f])
            logger.info("%s: validation NDCG@10 by factors %s -> %d", self.config.kind, scores, factors)
            interactions = pl.concat([interactions, valid.select(interactions.columns)])
        self.factors_ = factors
        self.model_ = self._fit(interactions, factors)
        return self

    def recommend(
        self,
        users: pl.Series | Sequence[Any],
        k: int = 10,
        *,
        history: pl.DataFrame | None = None,
        exclude_seen: bool = True,
    ) -> pl.DataFrame:
        """Top ``k`` per user by the factor model; ``history`` only filters seen items (the user factors are
        the fitted ones, so users unseen at fit time get no rows)."""
        if not hasattr(self, "model_"):
            raise NotFittedError("ImplicitRecommender is not fitted; call fit first.")
        asked = pl.DataFrame({USER_ID: pl.Series(users)}).unique(maintain_order=True)
        known = asked.join(self.users_, on=USER_ID, how="inner")
        seen = self._matrix(history) if history is not None else sp.csr_matrix(self.users_.height, self.items_.height)
        rows = known["u"].to_numpy()
        ids, scores = self.model_.recommend(rows, seen[rows], N=k, filter_already_liked_items=exclude_seen)
        n = len(rows)
        out = pl.DataFrame(
            {
                USER_ID: np.repeat(known[USER_ID].to_numpy(), k),
                "i": ids.reshape(-1).astype(np.int64),
                SCORE: scores.reshape(-1).astype(np.float32),
                RANK: np.tile(np.arange(1, k + 1, dtype=np.uint32), n),
            }
        )
        out = out.filter(pl.col("i") >= 0).join(self.items_.with_columns(pl.col("i").cast(pl.Int64)), on="i")
        return out.sort(USER_ID, RANK).select(USER_ID, ITEM_ID, SCORE, RANK)

    def with_seed(self, seed: int) -> ImplicitRecommender:
        return ImplicitRecommender(dataclasses.replace(self.config, seed=seed))
