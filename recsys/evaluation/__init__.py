"""Evaluation: train/valid/test splits, full-catalogue ranking metrics and the harness that runs models.

>>> from recsys.evaluation import EvalConfig, evaluate, results_table
>>> result = evaluate(model, dataset, EvalConfig(split="loo"), name="popularity")  # doctest: +SKIP
>>> print(results_table([result]))  # doctest: +SKIP
"""

from recsys.evaluation._harness import (
    DEFAULT_TABLE_METRICS,
    EvalConfig,
    EvalResult,
    evaluate,
    evaluate_many,
    load_results,
    results_table,
    save_results,
)
from recsys.evaluation._metrics import (
    METRIC_NAMES,
    ranking_metrics,
    sample_negatives,
    sampled_ranking_metrics,
)
from recsys.evaluation._splits import (
    Split,
    SplitKind,
    leave_one_out,
    make_split,
    published_split,
    temporal_cutoffs,
    temporal_split,
)

__all__ = [
    "DEFAULT_TABLE_METRICS",
    "METRIC_NAMES",
    "EvalConfig",
    "EvalResult",
    "Split",
    "SplitKind",
    "evaluate",
    "evaluate_many",
    "leave_one_out",
    "load_results",
    "make_split",
    "published_split",
    "ranking_metrics",
    "results_table",
    "sample_negatives",
    "sampled_ranking_metrics",
    "save_results",
    "temporal_cutoffs",
    "temporal_split",
]
