"""Evaluation: train/valid/test splits, full-catalogue ranking metrics and the harness that runs models.

>>> from recsys.evaluation import EvalConfig, evaluate, length_table, results_table
>>> result = evaluate(model, dataset, EvalConfig(split="loo"), name="popularity")  # doctest: +SKIP
>>> table = results_table([result])  # doctest: +SKIP

With ``EvalConfig(length_buckets=(20, 50, 200))`` the result also holds the metrics per history length:

>>> by_length = length_table([result], metric="ndcg@10")  # doctest: +SKIP
"""

from recsys.evaluation._harness import (
    DEFAULT_TABLE_METRICS,
    EvalConfig,
    EvalResult,
    evaluate,
    evaluate_many,
    length_table,
    load_results,
    results_table,
    save_results,
)
from recsys.evaluation._metrics import (
    METRIC_NAMES,
    metrics_by_history_length,
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
    "length_table",
    "load_results",
    "make_split",
    "metrics_by_history_length",
    "published_split",
    "ranking_metrics",
    "results_table",
    "sample_negatives",
    "sampled_ranking_metrics",
    "save_results",
    "temporal_cutoffs",
    "temporal_split",
]
