"""LightGBM LambdaRank over candidate features, with the sharp edges wrapped.

Before LightGBM: rows are sorted by query, ``group`` sizes derive from run lengths, labels are integers,
a group holds at most 10,000 rows, and the feature names are checked again at scoring time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from recsys.errors import ConfigError, DataError, SchemaError, check_is_fitted
from recsys.models.compiled import COMPILE_MIN_ROWS, PREDICTORS, CompiledForest, compiled_available

__all__ = ["LambdaRanker", "RankerConfig", "RankerEnsemble", "ndcg_at", "query_ndcg", "ranker_from_texts"]

logger = logging.getLogger(__name__)
_COMPILE_LOCK = threading.Lock()  # counts rows and compiles for every ranker of the process, one at a time

MAX_GROUP_ROWS = 10_000


@dataclass(frozen=True)
class RankerConfig:
    """LightGBM LambdaRank settings (deterministic by default).

    Parameters
    ----------
    n_estimators:
        Maximum boosting rounds; early stopping on the validation groups picks the best.
    learning_rate, num_leaves, min_child_samples:
        The usual LightGBM knobs. Small trees with at least 200 rows per leaf: with 31 leaves and 20 rows the
        validation NDCG peaked after about 13 trees on Scientific (0.1001 against 0.1018). A slow rate, 0.02
        (0.05 before 2026-11-30), chosen on validation targets with the fold-ranker ensemble (paired, same
        encoders): ml-100k NDCG@10 +0.0024 and +0.0029 (seeds 0, 1), Scientific (unisrec) -0.0004, with a
        quarter of the trees there. On ml-100k's test split it was neutral (3 seeds: 0.1442 against 0.1439).
    early_stopping_rounds:
        Rounds without validation NDCG@``eval_at`` improvement before stopping.
    eval_at:
        Cut-off of the validation NDCG used for early stopping.
    objective:
        ``"lambdarank"`` (LambdaRank, the default) or ``"rank_xendcg"`` (XE-NDCG, a listwise cross-entropy
        surrogate of NDCG).
    feature_fraction:
        Share of the features each tree may split on (a seeded draw per tree; 1.0 = all).
    truncation_level:
        LambdaRank's ``lambdarank_truncation_level``: only pairs with an item in the top this many positions of a
        query's current ranking get gradients (LightGBM's default 30).
    base_feature:
        A feature column whose value, times ``base_weight``, is every row's starting score (LightGBM's
        ``init_score``), so the trees learn corrections to it rather than its order from scratch; scores, early
        stopping and ``pred_contrib`` include it (in that feature's contribution). None: start from zero.
    base_weight:
        The starting score's scale. For a cosine interest score, the encoder's inverse softmax temperature (10
        for the memory encoder's 0.1) makes it the encoder's own logit. Measured in the memory pipeline
        (``retrieval_score``, weight 10; ml-100k validation targets, paired, same encoders): NDCG@10 +0.0029 and
        -0.0027 (seeds 0, 1) with about twice the trees, so the pipeline does not use it by default.
    lambda_l2:
        LightGBM's ``lambda_l2``: an L2 penalty on the leaf values, which shrinks leaves that few rows or small
        gradients support (0: none).
    path_smooth:
        LightGBM's ``path_smooth``: pulls each leaf's value towards its parent's, more so for leaves with few
        rows (0: none).
    n_threads:
        LightGBM threads (fixed for determinism), and the compiled predictor's.
    predictor:
        What scores candidate rows (:mod:`recsys.models.compiled`): ``"auto"`` (the trees compiled to native code
        by lleaves once it has scored ``COMPILE_MIN_ROWS`` rows in all, when the ``fast`` extra is installed;
        LightGBM otherwise), ``"compiled"`` (always; an error without lleaves) or ``"lightgbm"``. The same scores
        either way, up to the summation order of the trees' outputs (~1e-15). Saved with the model.
    seed:
        Seed of every random choice.
    """

    n_estimators: int = 300
    learning_rate: float = 0.02
    num_leaves: int = 15
    min_child_samples: int = 200
    early_stopping_rounds: int = 30
    eval_at: int = 10
    objective: str = "lambdarank"
    feature_fraction: float = 1.0
    truncation_level: int = 30
    base_feature: str | None = None
    base_weight: float = 10.0
    lambda_l2: float = 0.0
    path_smooth: float = 0.0
    n_threads: int = 2
    seed: int = 0
    predictor: str = "auto"

    def __post_init__(self) -> None:
        if self.n_estimators < 1:
            raise ConfigError(f"RankerConfig.n_estimators={self.n_estimators} must be >= 1.")
        if not 0 < self.learning_rate <= 1:
            raise ConfigError(f"RankerConfig.learning_rate={self.learning_rate} must be in (0, 1].")
        if not 0 < self.feature_fraction <= 1:
            raise ConfigError(f"RankerConfig.feature_fraction={self.feature_fraction} must be in (0, 1].")
        if self.truncation_level < 1:
            raise ConfigError(f"RankerConfig.truncation_level={self.truncation_level} must be >= 1.")
        if not self.base_weight > 0:
            raise ConfigError(f"RankerConfig.base_weight={self.base_weight} must be > 0.")
        for name in ("lambda_l2", "path_smooth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                raise ConfigError(f"RankerConfig.{name}={value!r} must be a finite number >= 0 (0: off).")
        if self.predictor not in PREDICTORS:
            raise ConfigError(f"RankerConfig.predictor={self.predictor!r}; use one of {list(PREDICTORS)}.")
        if self.objective not in ("lambdarank", "rank_xendcg"):
            raise ConfigError(f"RankerConfig.objective={self.objective!r}; use 'lambdarank' or 'rank_xendcg'.")

    def lgb_params(self) -> dict[str, object]:
        return {
            "objective": self.objective,
            "metric": "ndcg",
            "eval_at": [self.eval_at],
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_child_samples": self.min_child_samples,
            "feature_fraction": self.feature_fraction,
            "lambdarank_truncation_level": self.truncation_level,
            "lambda_l2": self.lambda_l2,
            "path_smooth": self.path_smooth,
            "num_threads": self.n_threads,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
        }


def _groups(query: pl.Series) -> np.ndarray:
    """Run lengths of a sorted query column (any dtype): LightGBM's ``group``."""
    if len(query) == 0:
        return np.zeros(0, np.int64)
    sizes = np.bincount(query.rle_id().to_numpy())
    if sizes.max() > MAX_GROUP_ROWS:
        raise DataError(f"a query has {sizes.max()} candidate rows; LambdaRank allows at most {MAX_GROUP_ROWS}.")
    return sizes


def query_ndcg(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray, k: int) -> np.ndarray:
    """float64 array of shape ``(n_queries,)``: each query's NDCG@``k``, as LightGBM's ``ndcg`` metric computes it.

    Gains ``2**label - 1``, discount ``1 / log2(position + 2)`` (position from 0), tied scores in row order (a
    stable sort, as LightGBM's), and a query without a positive label counts as 1.

    Parameters
    ----------
    scores:
        float array of shape ``(n_rows,)``, higher is better.
    labels:
        int array of shape ``(n_rows,)``, the relevance (0 = not relevant).
    groups:
        int array of shape ``(n_queries,)``: rows per query, in row order (LightGBM's ``group``).
    k:
        The cut-off.
    """
    n = len(groups)
    query = np.repeat(np.arange(n), groups)  # (n_rows,)
    starts = np.repeat(np.cumsum(groups) - groups, groups)
    position = np.arange(len(query)) - starts  # (n_rows,) 0-based position inside the query
    discount = np.where(position < k, 1.0 / np.log2(position + 2.0), 0.0)
    gains = np.exp2(np.asarray(labels, np.float64)) - 1.0
    by_score = np.lexsort((-np.asarray(scores, np.float64), query))  # query blocks kept, best first, ties stable
    ideal = np.lexsort((-gains, query))
    dcg = np.bincount(query, weights=gains[by_score] * discount, minlength=n)
    idcg = np.bincount(query, weights=gains[ideal] * discount, minlength=n)
    return np.where(idcg > 0, dcg / np.where(idcg > 0, idcg, 1.0), 1.0)


def ndcg_at(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray, k: int) -> float:
    """Mean NDCG@``k`` over query groups (:func:`query_ndcg`; NaN without queries): LightGBM's ``ndcg`` metric."""
    return float(query_ndcg(scores, labels, groups, k).mean()) if len(groups) else float("nan")


def _ndcg(score: Callable[[pl.DataFrame], np.ndarray], frame: pl.DataFrame, query: str, label: str, at: int) -> float:
    frame = frame.sort(query, maintain_order=True)
    return ndcg_at(score(frame), frame[label].cast(pl.Int32).to_numpy(), _groups(frame[query]), at)


def _base_column(config: RankerConfig, features: Sequence[str]) -> int | None:
    """The position of ``config.base_feature`` among ``features`` (None without one)."""
    if config.base_feature is None:
        return None
    if config.base_feature not in features:
        raise ConfigError(
            f"RankerConfig.base_feature={config.base_feature!r} is not among the ranker's features {list(features)}; "
            "name one of them or set it to None."
        )
    return list(features).index(config.base_feature)


def start_scores(config: RankerConfig, matrix: np.ndarray, features: Sequence[str]) -> np.ndarray | None:
    """float64 ``(n_rows,)``: every row's starting score (LightGBM's ``init_score``), ``base_weight`` times the
    ``base_feature`` column of ``matrix`` ``(n_rows, len(features))``; None without a base feature."""
    base = _base_column(config, features)
    return None if base is None else config.base_weight * matrix[:, base].astype(np.float64)


def _features(frame: pl.DataFrame, features: Sequence[str]) -> pl.Expr:
    """The feature columns rounded to float32, the precision the booster trains on (checked present)."""
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise SchemaError(f"candidate frame lacks feature column(s) {missing}; it has {frame.columns}.")
    return pl.col(list(features)).cast(pl.Float32)


def _matrix(frame: pl.DataFrame, features: Sequence[str]) -> np.ndarray:
    """The float32 feature matrix ``(frame.height, len(features))`` that the booster trains on."""
    return frame.select(_features(frame, features)).to_numpy()


def _rows(frame: pl.DataFrame, features: Sequence[str]) -> np.ndarray:
    """:func:`_matrix`'s values as a row-major float64 array, the layout the compiled forest reads (LightGBM
    scores it identically: float32 -> float64 is exact), built once per scoring call."""
    return frame.select(_features(frame, features).cast(pl.Float64)).to_numpy(order="c")


class LambdaRanker:
    """Learn to order each query's candidates with LightGBM LambdaRank.

    ``fit`` takes a polars frame with a query column (one query = one user at one cut-off), the feature
    columns and an integer ``label`` (1 = the held-out next item).
    """

    booster_: Any = None
    feature_names_: list[str] | None = None
    _forest: CompiledForest | None = None  # the booster compiled for scoring (not state: built on first need)
    _forest_failed = False
    _rows_scored = 0  # rows LightGBM scored so far (``predictor="auto"`` compiles once they reach COMPILE_MIN_ROWS)

    def __init__(self, config: RankerConfig | None = None) -> None:
        self.config = config or RankerConfig()

    def _dataset(self, frame: pl.DataFrame, query: str, label: str, features: Sequence[str]):
        import lightgbm as lgb

        frame = frame.sort(query, maintain_order=True)
        matrix = _matrix(frame, features)
        return lgb.Dataset(
            matrix,
            label=frame[label].cast(pl.Int32).to_numpy(),
            group=_groups(frame[query]),
            init_score=start_scores(self.config, matrix, features),
            feature_name=list(features),
            free_raw_data=False,
        )

    def fit(
        self,
        train: pl.DataFrame,
        valid: pl.DataFrame | None,
        features: Sequence[str],
        query: str = "query",
        label: str = "label",
    ) -> LambdaRanker:
        """Train on ``train`` groups; early-stop on NDCG of ``valid`` groups when given.

        Returns
        -------
        self
        """
        import lightgbm as lgb

        dtrain = self._dataset(train, query, label, features)
        sets = [dtrain]
        callbacks: list[Callable[..., Any]] = [lgb.log_evaluation(period=0)]
        if valid is not None and valid.height:
            sets.append(self._dataset(valid, query, label, features))
            callbacks.append(lgb.early_stopping(self.config.early_stopping_rounds, verbose=False))
        booster = lgb.train(
            self.config.lgb_params(),
            dtrain,
            num_boost_round=self.config.n_estimators,
            valid_sets=sets[1:] or None,
            callbacks=callbacks,
        )
        logger.info("ranker: %d trees (best iteration %s)", booster.num_trees(), booster.best_iteration)
        self.booster_ = booster
        self.feature_names_ = list(features)
        self._forest, self._forest_failed, self._rows_scored = None, False, 0
        return self

    def score(self, frame: pl.DataFrame) -> np.ndarray:
        """float64 array of shape ``(frame.height,)``: ranker scores (higher is better)."""
        check_is_fitted(self)
        names = self.booster_.feature_name()
        if names != self.feature_names_:
            raise SchemaError(f"the booster's features {names} differ from the ranker's {self.feature_names_}.")
        if frame.height == 0:
            return np.zeros(0)
        return self._predict(_rows(frame, names))

    def _predict(self, matrix: np.ndarray, **kwargs: Any) -> np.ndarray:
        """The booster's output on a feature matrix ``(n_rows, n_features)`` in ``feature_names_`` order, plus the
        starting score (``config.base_feature``; with ``pred_contrib``, in that feature's column)."""
        compiled = None if kwargs else self._compiled(len(matrix))
        if compiled is not None:
            out = compiled.predict(matrix, self.config.n_threads)
        else:
            out = self.booster_.predict(matrix, num_iteration=self.booster_.best_iteration or None, **kwargs)
        features = self.feature_names_ or []
        start = start_scores(self.config, matrix, features)  # (n_rows,) or None
        if start is None:
            return out
        if kwargs.get("pred_contrib"):
            out[:, _base_column(self.config, features)] += start
            return out
        return out + start

    def _compiled(self, rows: int) -> CompiledForest | None:
        """The compiled forest that scores a call of ``rows`` rows, compiled on first need (``config.predictor``,
        see :mod:`recsys.models.compiled`; ``"auto"``: once this call and the earlier ones reach
        ``COMPILE_MIN_ROWS`` rows in all); None: LightGBM scores it. Chunks served side by side call it at
        once: the count and the compile hold :data:`_COMPILE_LOCK` (one compile; the other call waits for it)."""
        predictor = self.config.predictor
        if predictor == "lightgbm" or self._forest_failed:
            return None
        if self._forest is not None:
            return self._forest
        with _COMPILE_LOCK:
            if self._forest is None and not self._forest_failed:  # another call may have decided meanwhile
                if predictor == "auto":
                    self._rows_scored += rows
                    if self._rows_scored < COMPILE_MIN_ROWS:
                        return None
                    if not compiled_available():  # the fast extra is not installed: LightGBM, nothing to warn
                        self._forest_failed = True
                        return None
                self._forest = self._compile()
            return self._forest

    def _compile(self) -> CompiledForest | None:
        """The booster's best iteration compiled; None (and LightGBM from then on) where ``"auto"`` fails to
        compile it (an lleaves / llvmlite mismatch), a :class:`ConfigError` where ``"compiled"`` does."""
        text = self.booster_.model_to_string(num_iteration=self.booster_.best_iteration or None)
        try:
            return CompiledForest(text)
        except ConfigError:
            raise
        except Exception as err:
            if self.config.predictor == "compiled":
                raise ConfigError(
                    f"the ranker's trees could not be compiled ({err!r}); use predictor='lightgbm'."
                ) from err
            logger.warning("ranker: compiling the trees failed (%r); LightGBM scores instead", err)
            self._forest_failed = True
            return None

    def ndcg(self, frame: pl.DataFrame, query: str = "query", label: str = "label", at: int | None = None) -> float:
        """Mean NDCG@``at`` (default ``config.eval_at``) of this ranker's order of ``frame``'s queries (see
        :func:`ndcg_at`); the validation metric of early stopping."""
        return _ndcg(self.score, frame, query, label, at or self.config.eval_at)

    @property
    def boosters(self) -> list[Any]:
        """The LightGBM boosters whose scores this ranker returns: its one booster."""
        check_is_fitted(self)
        return [self.booster_]

    @property
    def n_trees(self) -> int:
        """Trees that :meth:`score` evaluates (the best iteration's, after early stopping)."""
        check_is_fitted(self)
        best = int(self.booster_.best_iteration)  # 0 without early stopping, -1 when loaded from text
        return best if best > 0 else int(self.booster_.num_trees())

    def contributions(self, frame: pl.DataFrame) -> np.ndarray:
        """float64 array ``(frame.height, n_features + 1)``: LightGBM ``pred_contrib`` (last column: bias)."""
        check_is_fitted(self)
        return self._predict(_matrix(frame, self.feature_names_ or []), pred_contrib=True)

    def to_text(self) -> str:
        """LightGBM's text model (the saved format; never pickle)."""
        check_is_fitted(self)
        return self.booster_.model_to_string()

    def to_texts(self) -> list[str]:
        """:meth:`to_text` as a list, like :meth:`RankerEnsemble.to_texts` (see :func:`ranker_from_texts`)."""
        return [self.to_text()]

    @classmethod
    def from_text(cls, text: str, config: RankerConfig | None = None) -> LambdaRanker:
        """Load a ranker from :meth:`to_text` output."""
        import lightgbm as lgb

        self = cls(config)
        self.booster_ = lgb.Booster(model_str=text)
        self.feature_names_ = self.booster_.feature_name()
        return self


class RankerEnsemble:
    """The mean of several fitted :class:`LambdaRanker` over the same features: the rankers of
    cross-validation folds, each trained on the other folds and early-stopped on its own (bagging, where one
    refit on every query would take a single tree count for all).

    It scores, explains and reports importance like one ranker: scores and ``pred_contrib`` contributions are the
    members' means (SHAP values are additive, so the contributions still sum to the score); importance sums the
    members'. It saves as one LightGBM text model per member.
    """

    def __init__(self, members: Sequence[LambdaRanker]) -> None:
        if not members:
            raise ConfigError("RankerEnsemble needs at least one fitted ranker.")
        names = [m.feature_names_ for m in members] + [m.booster_.feature_name() for m in members]
        if any(n != names[0] for n in names):  # checked once here, not at every score
            raise SchemaError(f"the ensemble's rankers have different features: {names}.")
        self.members_ = list(members)
        self.feature_names_: list[str] | None = names[0]
        self.config = members[0].config

    @property
    def boosters(self) -> list[Any]:
        """The members' LightGBM boosters."""
        return [b for m in self.members_ for b in m.boosters]

    @property
    def n_trees(self) -> int:
        """Trees that :meth:`score` evaluates, over all members."""
        return sum(m.n_trees for m in self.members_)

    def score(self, frame: pl.DataFrame) -> np.ndarray:
        """float64 array of shape ``(frame.height,)``: the members' mean score (higher is better)."""
        if frame.height == 0:
            return np.zeros(0)
        matrix = _rows(frame, self.feature_names_ or [])  # built once for every member
        return np.mean([m._predict(matrix) for m in self.members_], axis=0)

    def score_top(self, frame: pl.DataFrame, query: str, keep: int) -> np.ndarray:
        """Two-stage scores, float64 ``(frame.height,)``: the first member scores every row; the whole ensemble
        scores only each query's ``keep`` best rows by it, which get :meth:`score`'s value. The other rows keep
        the first member's order below every kept row (they are what a top-``keep`` list never shows), so
        with ``m`` members it costs about ``1 + (m - 1) * keep / rows`` boosters' time instead of ``m``."""
        if frame.height == 0:
            return np.zeros(0)
        matrix = _rows(frame, self.feature_names_ or [])
        first = self.members_[0]._predict(matrix)  # (n_rows,)
        best = pl.DataFrame({"q": frame[query], "s": first}).select(
            pl.col("s").rank("ordinal", descending=True).over("q") <= keep
        )
        kept = np.flatnonzero(best.to_series().to_numpy())
        out = first.copy()
        rest = matrix[kept]
        out[kept] = np.mean([first[kept], *(m._predict(rest) for m in self.members_[1:])], axis=0)
        dropped = np.ones(frame.height, bool)
        dropped[kept] = False
        if dropped.any():  # below every kept row, in the first member's order
            out[dropped] -= first[dropped].max() - out[kept].min() + 1.0
        return out

    def contributions(self, frame: pl.DataFrame) -> np.ndarray:
        """float64 array ``(frame.height, n_features + 1)``: the members' mean ``pred_contrib`` (last: bias)."""
        matrix = _matrix(frame, self.feature_names_ or [])
        return np.mean([m._predict(matrix, pred_contrib=True) for m in self.members_], axis=0)

    def ndcg(self, frame: pl.DataFrame, query: str = "query", label: str = "label", at: int | None = None) -> float:
        """Mean NDCG@``at`` of the ensemble's order of ``frame``'s queries (see :meth:`LambdaRanker.ndcg`)."""
        return _ndcg(self.score, frame, query, label, at or self.config.eval_at)

    def to_texts(self) -> list[str]:
        """Each member's LightGBM text model (the saved format; never pickle)."""
        return [m.to_text() for m in self.members_]

    @classmethod
    def from_texts(cls, texts: Sequence[str], config: RankerConfig | None = None) -> RankerEnsemble:
        """Load an ensemble from :meth:`to_texts` output."""
        return cls([LambdaRanker.from_text(t, config) for t in texts])


def ranker_from_texts(texts: Sequence[str], config: RankerConfig | None = None) -> LambdaRanker | RankerEnsemble:
    """A :class:`LambdaRanker` from one LightGBM text model, a :class:`RankerEnsemble` from several."""
    if len(texts) == 1:
        return LambdaRanker.from_text(texts[0], config)
    return RankerEnsemble.from_texts(texts, config)
