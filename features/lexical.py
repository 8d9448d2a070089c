"""Word-level similarity between a candidate's text and the query's history: the words and model numbers two
item texts share, which a sentence encoder blurs ("4 1/2-Inch 80 Grit Sanding Roll" and "... 120 Grit ...").

Each item text becomes a TF-IDF bag of its words and word pairs (hashed into ``2**20`` slots, so no vocabulary is
stored), which a fixed signed random projection folds into ``dim`` dense dimensions (the hashing trick a second
time; cosines are kept to about ``1 / sqrt(dim)``). :class:`LexicalSimilarity` then compares those vectors like
:class:`~recsys.features.similarity.TextSimilarity` compares the sentence encoder's. Fitted state is the
catalogue's document frequencies and its vectors; a new item needs only its text.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys.errors import ConfigError, DataError, check_is_fitted
from recsys.features._common import check_positive_int
from recsys.features.base import FitContext
from recsys.features.similarity import TextSimilarity, _unit_rows
from recsys.schema import TEXT

__all__ = ["LexicalConfig", "LexicalSimilarity", "hashed_counts"]

logger = logging.getLogger(__name__)

N_HASHED = 1 << 20
"""Hash slots of the word and word-pair counts before the projection."""
TOKEN = r"(?u)\b\w[\w./-]*\w\b|\b\w\b"
"""A word: letters and digits, with inner dots, slashes and hyphens kept ("1/2-inch", "1.75mm", "hp-00057")."""


@dataclass(frozen=True)
class LexicalConfig:
    """Settings of :class:`LexicalSimilarity`.

    Parameters
    ----------
    short_term: how many of the query's newest events form its short-term profile (``lex_recent_*``).
    dim: dense dimensions of the projected TF-IDF vectors (cosines are kept to about ``1 / sqrt(dim)``).
    seed: seed of the signed projection (part of the fitted model: the same seed maps new items alike).
    """

    short_term: int = 5
    dim: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive_int("short_term", self.short_term, 5)
        check_positive_int("dim", self.dim, 512)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer (for example 0), got {self.seed!r}.")


def hashed_counts(texts: pl.Series) -> sp.csr_matrix:
    """float32 csr ``(len(texts), N_HASHED)``: how often each lower-cased word and word pair occurs in each text
    (null texts are empty)."""
    from sklearn.feature_extraction.text import HashingVectorizer

    vectorizer = HashingVectorizer(
        n_features=N_HASHED, ngram_range=(1, 2), token_pattern=TOKEN, alternate_sign=False, norm=None
    )
    return vectorizer.transform(texts.fill_null("").to_list()).astype(np.float32).tocsr()


def _projection(seed: int, dim: int) -> sp.csr_matrix:
    """float32 csr ``(N_HASHED, dim)``: one ``+-1`` per hash slot, in a seeded random column."""
    rng = np.random.default_rng(seed)
    columns = rng.integers(0, dim, N_HASHED)
    signs = rng.choice(np.array([-1.0, 1.0], np.float32), N_HASHED)
    return sp.csr_matrix((signs, (np.arange(N_HASHED), columns)), shape=(N_HASHED, dim))


class LexicalSimilarity(TextSimilarity):
    """:class:`~recsys.features.similarity.TextSimilarity`'s four cosines over the items' projected word TF-IDF
    vectors: ``lex_last``, ``lex_recent_mean``, ``lex_recent_max``, ``lex_history`` (NaN for empty histories).

    Attributes
    ----------
    vectors_: float32 ``(n_items, dim)``: the catalogue's projected TF-IDF vectors, L2-normalised.
    idf_: float32 ``(N_HASHED,)``: ``log((1 + n_items) / (1 + document frequency)) + 1`` of each hash slot.
    """

    group = "lexical"
    prefix = "lex"
    state_attributes = ("vectors_", "idf_")

    idf_: np.ndarray

    def __init__(self, config: LexicalConfig | None = None) -> None:
        self.config = config if config is not None else LexicalConfig()  # type: ignore[assignment]

    def _vectors(self, texts: pl.Series) -> np.ndarray:
        """Unit ``(len(texts), dim)`` vectors of ``texts`` under the fitted ``idf_``."""
        counts = hashed_counts(texts)
        counts.data = np.log1p(counts.data)  # sublinear term frequency
        weighted = counts @ sp.diags(self.idf_)
        config: LexicalConfig = self.config  # type: ignore[assignment]
        return _unit_rows(np.asarray((weighted @ _projection(config.seed, config.dim)).todense(), np.float32))

    def fit(self, context: FitContext) -> LexicalSimilarity:
        """Document frequencies and vectors of the catalogue's texts. Returns ``self``.

        Raises
        ------
        DataError
            The catalogue has no text column.
        """
        if TEXT not in context.items.columns:
            raise DataError(f"the 'lexical' feature group reads the catalogue's {TEXT!r} column; it has none.")
        counts = hashed_counts(context.items[TEXT])
        frequency = np.bincount(counts.indices, minlength=N_HASHED)  # documents per slot
        n = counts.shape[0]
        self.idf_ = (np.log((1.0 + n) / (1.0 + frequency)) + 1.0).astype(np.float32)
        self.vectors_ = self._vectors(context.items[TEXT])
        logger.info("lexical: %d texts, %d word slots in use", n, int((frequency > 0).sum()))
        return self

    def extend_items(self, items: pl.DataFrame, item_vectors: np.ndarray, n_old: int) -> LexicalSimilarity:
        """A copy that also knows the appended items (rows ``n_old`` on of ``items``), from their texts."""
        check_is_fitted(self, self.state_attributes)
        twin = copy.copy(self)
        new = items[TEXT].slice(n_old) if TEXT in items.columns else pl.Series([None] * (items.height - n_old))
        twin.vectors_ = np.concatenate([self.vectors_, self._vectors(new)])
        return twin
