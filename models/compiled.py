"""The ranker's trees compiled to native code: faster scoring of large candidate frames, same scores.

LightGBM's ``Booster.predict`` walks each tree node by node through its generic tree structure. `lleaves
<https://github.com/siboehm/lleaves>`_ turns a LightGBM text model into LLVM code, one function per tree with the
thresholds as constants, and compiles it in process. On the saved Scientific (unisrec) ranker, five members
with 217 trees in all, one chunk of 2,048 users (560,537 candidate rows of 44 features; Intel Xeon, 2 threads):
LightGBM 1.20 s, compiled 0.21 s, after a one-off 1.3 s compile. The scores are LightGBM's up to the order in
which the tree outputs are summed (at most 1e-15 apart; the thresholds compare the same float64 values).

It is optional (``pip install 'textmemory-recsys[fast]'``, which ``make install`` includes): without ``lleaves``
the ranker scores with LightGBM. :class:`~recsys.models.ranker.RankerConfig` ``predictor`` picks: ``"auto"``
(LightGBM scores a model's first :data:`COMPILE_MIN_ROWS` rows, over however many calls; the call that reaches
that count compiles it, where the compile starts to pay for itself; LightGBM throughout when lleaves is missing or
fails to compile),
``"compiled"`` (always; an error without lleaves) or ``"lightgbm"``. ``pred_contrib`` (explanations) always runs
in LightGBM. Nothing compiled is written to disk: a process compiles its models once, from their text.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
import time

import numpy as np

from recsys.errors import ConfigError

__all__ = ["COMPILE_MIN_ROWS", "PREDICTORS", "CompiledForest", "compiled_available"]

logger = logging.getLogger(__name__)

PREDICTORS = ("auto", "lightgbm", "compiled")
COMPILE_MIN_ROWS = 600_000
"""``predictor="auto"`` compiles a model once LightGBM has scored this many of its rows (all calls together): the
rows on which LightGBM spends about what the compile costs (on the unisrec ranker about 9.4 ns per tree and row
against 6 ms per tree to compile), the ski-rental rule, so a process never pays more than about twice the better
of the two choices. A small call never waits for a compile; a batch job of millions of rows compiles in its first
chunks and scores the rest 4-5x faster."""

INSTALL_HINT = "pip install 'textmemory-recsys[fast]' (lleaves and a llvmlite it supports)"


def compiled_available() -> bool:
    """Whether ``lleaves`` is importable (the ``fast`` extra)."""
    return importlib.util.find_spec("lleaves") is not None


class CompiledForest:
    """One LightGBM text model compiled by lleaves; :meth:`predict` returns what ``Booster.predict`` does (raw
    scores, the lambdarank objective has no transform).

    Raises
    ------
    ConfigError
        lleaves is not installed.
    """

    def __init__(self, text: str) -> None:
        if not compiled_available():
            raise ConfigError(
                f"the compiled ranker predictor needs lleaves: {INSTALL_HINT}; or use predictor='lightgbm'."
            )
        import lleaves

        started = time.perf_counter()
        # lleaves reads a model file; the text goes through a private temporary file, removed once compiled
        handle, path = tempfile.mkstemp(prefix="recsys-ranker-", suffix=".txt")
        try:
            with os.fdopen(handle, "w") as file:
                file.write(text)
            self._model = lleaves.Model(model_file=path)
            self._model.compile()  # float64 thresholds and outputs, as LightGBM
        finally:
            os.unlink(path)
        self.compile_seconds = time.perf_counter() - started
        logger.info("ranker: %d trees compiled in %.2f s", self._model.num_trees(), self.compile_seconds)

    def predict(self, matrix: np.ndarray, n_threads: int) -> np.ndarray:
        """float64 ``(n_rows,)`` scores of ``matrix`` ``(n_rows, n_features)`` (any float dtype; NaN = missing)."""
        rows = np.ascontiguousarray(matrix, dtype=np.float64)
        return np.asarray(self._model.predict(rows, n_jobs=max(1, n_threads)), dtype=np.float64)
