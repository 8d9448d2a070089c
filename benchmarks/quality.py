"""Quality against peers on exactly our splits: our pipeline (seeds), our baselines, implicit ALS/BPR and RecBole.

Every model is fitted on the same training events, may early-stop or tune on the same validation targets, and is
scored by the same code (:func:`recsys.evaluation.ranking_metrics`) on the same test targets against the full
catalogue, under two protocols:

* ``masked``: history items (train + valid events of the user) are never recommended (our default);
* ``unmasked``: they may be (RecBole's default for sequential models).

Raw rows merge into ``benchmarks/results/quality.json`` keyed by (dataset, model, seed, protocol), so a later run
of one dataset or model replaces only its own rows. Usually run through ``benchmarks/run.py``.

    python benchmarks/quality.py --profile fast|full [--datasets ml-100k ...] [--models ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from recsys.datasets import load_dataset
from recsys.evaluation import make_split, ranking_metrics
from recsys.evaluation._harness import _git_commit
from recsys.models.memory_encoder import MemoryEncoderConfig
from recsys.models.text_encoder import TextEncoderConfig
from recsys.pipeline import Recommender, RecommenderConfig
from recsys.schema import USER_ID
from recsys.zoo import make_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from foundation import machine, write_block
from implicit_peer import ImplicitConfig, ImplicitRecommender

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "quality.json"


def markers(profile: str) -> tuple[str, str]:
    """The README block of a profile's tables (the fast profile's smoke numbers never overwrite the full ones)."""
    return f"<!-- quality-{profile}:start -->", f"<!-- quality-{profile}:end -->"


SPLITS = {
    "ml-100k": "loo",
    "ml-latest-small": "loo",
    "amazon-scientific-unisrec": "published",
    "amazon-scientific-lcrec": "loo",
}
KS = (10, 50)
METRICS = ("ndcg@10", "ndcg@50", "recall@10", "recall@50", "mrr@50")
OURS = "ours (pipeline-memory)"
ENCODER_ALONE = "ours (encoder alone)"
"""The first stage of the same fitted pipeline (``Recommender.retrieve``: the memory encoder and FAISS, no
ranker); its fit seconds are the whole pipeline's. Not a peer: it shows what the ranking stage adds."""
OURS_SEEN = "ours (ranker trained with seen items)"
"""Unmasked protocol only: the same fitted pipeline with its ranker retrained on candidates that include the
history items (``train_with_seen=True`` through ``Recommender.with_features``: same encoders), as a model meant to
serve with ``exclude_seen=False`` is set up; fit seconds add the retraining to the pipeline's."""
TUNED = "ours (pipeline-memory, tuned)"
"""Full profile, datasets in :data:`DATASET_SETTINGS` only: our pipeline with that dataset's settings chosen on its
validation targets (the ``ours (pipeline-memory)`` rows run the library defaults, and the throughput suite times
those). Not a peer."""
OURS_ROWS = (OURS, ENCODER_ALONE, OURS_SEEN, TUNED)
BASELINES = ("popularity", "transitions", "zero-shot-text", "ease")


@dataclass(frozen=True)
class Profile:
    """What a profile runs. ``fast`` is a smoke run of every row on one small dataset (6 encoder epochs,
    no cross-fitting, one hold-out ranker instead of the fold-ranker ensemble, one RecBole epoch over lists of the
    last 20 items instead of 50: RecBole's epoch is linear in the list length, 288 s at 50 on ml-100k on 2 Intel Xeon
    cores); ``full`` is the benchmark."""

    name: str
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    memory_epochs: int | None  # None: the library default
    memory_crossfit: int | None  # None: the library default
    ranker_folds: int | None  # None: the library default (RecommenderConfig.ranker_folds)
    recbole_models: tuple[str, ...]
    recbole_epochs: int
    recbole_max_seq_len: int  # RecBole's MAX_ITEM_LIST_LENGTH (its default: 50)


PROFILES = {
    "fast": Profile("fast", ("ml-100k",), (0,), 6, 0, 0, ("SASRec",), 1, 20),
    "full": Profile("full", tuple(SPLITS), (0, 1, 2), None, None, None, ("SASRec", "BERT4Rec"), 50, 50),
}


DATASET_SETTINGS: dict[str, dict[str, Any]] = {
    # unisrec validation targets, seeds 0 / 1, paired (a316bc9): +0.0019 / +0.0021 NDCG@10, the only variant
    # screened there that gained more than 0.0015 on both seeds (benchmarks/README.md, "Feature groups, paired")
    "amazon-scientific-unisrec": {
        "groups": ("learned", "lexical", "brand"),
        "n_similar_candidates": 50,
        "n_lexical_candidates": 50,
    },
}
"""Per-dataset settings of our pipeline in the ``full`` profile, each chosen on that dataset's validation targets
(``feature_groups.py --targets valid``, the test events unused) and confirmed on the test split: ``groups`` adds
opt-in feature groups, every other key is a :class:`RecommenderConfig` field. Datasets not listed run the library
defaults. The tables say which rows used them."""


def dataset_settings(profile: Profile, dataset: str | None) -> dict[str, Any]:
    """Our pipeline's settings for ``dataset`` beyond the library defaults ({} in the ``fast`` profile)."""
    return DATASET_SETTINGS.get(dataset, {}) if dataset is not None and profile.name == "full" else {}


def describe_settings(settings: dict[str, Any]) -> str:
    """``settings`` in words, for the tables ("" when there are none)."""
    parts = [f"+ {g}" for g in settings.get("groups", ())]
    parts += [f"{k}={v}" for k, v in settings.items() if k != "groups"]
    return ", ".join(parts)


def ours(profile: Profile, seed: int, cache_dir: str | None, dataset: str | None = None) -> Recommender:
    """The full pipeline with the learned memory encoder, as shipped (``recsys.zoo``'s ``pipeline-memory``),
    with :data:`DATASET_SETTINGS` for ``dataset`` where it has any (None: the library defaults)."""
    memory = MemoryEncoderConfig(seed=seed, show_progress=False)
    if profile.memory_epochs is not None:
        memory = dataclasses.replace(memory, epochs=profile.memory_epochs)
    config = RecommenderConfig(
        text=TextEncoderConfig(cache_dir=cache_dir, show_progress=False),
        user_encoder="memory",
        memory=memory,
        seed=seed,
        show_progress=False,
    )
    if profile.memory_crossfit is not None:
        config = dataclasses.replace(config, memory_crossfit=profile.memory_crossfit)
    if profile.ranker_folds is not None:
        config = dataclasses.replace(config, ranker_folds=profile.ranker_folds)
    settings = dict(dataset_settings(profile, dataset))
    groups = settings.pop("groups", ())
    if groups:
        features = dataclasses.replace(config.features, groups=(*config.features.groups, *groups))
        config = dataclasses.replace(config, features=features)
    return Recommender(dataclasses.replace(config, **settings))


def _metrics(recs: pl.DataFrame, targets: pl.DataFrame, n_items: int) -> dict[str, float]:
    return {k: v for k, v in ranking_metrics(recs, targets, n_items, KS).items() if not k.startswith("coverage")}


def evaluate_both(
    model: Any,
    name: str,
    seed: int,
    dataset: Any,
    split: Any,
    fit: Callable[[], None] | None = None,
    protocols: tuple[str, ...] = ("masked", "unmasked"),
) -> list[dict[str, Any]]:
    """Fit ``model`` once (train + valid), then score the test users with and without the history mask (each
    of ``protocols``)."""
    targets = split.test
    users = targets[USER_ID].unique().sort()
    history = split.history_for_test().filter(pl.col(USER_ID).is_in(users.implode()))
    start = time.perf_counter()
    if fit is None:
        model.fit(split.train, dataset.items, valid=split.valid)
    else:
        fit()
    fit_seconds = time.perf_counter() - start
    rows = []
    for protocol in protocols:
        exclude = protocol == "masked"
        start = time.perf_counter()
        recs = model.recommend(users, k=max(KS), history=history, exclude_seen=exclude)
        seconds = time.perf_counter() - start
        rows.append(
            {
                "dataset": dataset.name,
                "model": name,
                "seed": seed,
                "protocol": protocol,
                "metrics": _metrics(recs, targets, dataset.items.height),
                "fit_seconds": fit_seconds,
                "predict_seconds": seconds,
                "users": users.len(),
                "users_per_second": users.len() / seconds,
            }
        )
    logging.info(
        "%s seed %d on %s: NDCG@10 %.4f (fit %.0f s)",
        name,
        seed,
        dataset.name,
        rows[0]["metrics"]["ndcg@10"],  # (the first protocol's)
        fit_seconds,
    )
    return rows


class _EncoderAlone:
    """A fitted pipeline's first stage as a model: ``recommend`` is :meth:`Recommender.retrieve`."""

    def __init__(self, pipeline: Recommender) -> None:
        self.pipeline = pipeline

    def recommend(self, users: Any, k: int = 10, **kwargs: Any) -> pl.DataFrame:
        return self.pipeline.retrieve(users, k, **kwargs)


class _Plain:
    """A baseline from ``recsys.zoo`` whose ``fit`` takes no validation targets: fitted on train + valid."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def fit(self, interactions: pl.DataFrame, items: pl.DataFrame, valid: pl.DataFrame | None = None) -> Any:
        events = interactions if valid is None else pl.concat([interactions, valid.select(interactions.columns)])
        self.model.fit(events, items)
        return self

    def recommend(self, users: Any, k: int = 10, **kwargs: Any) -> pl.DataFrame:
        return self.model.recommend(users, k, **kwargs)


def _recbole_run_rows(run: dict[str, Any], **extra: Any) -> list[dict[str, Any]]:
    """Our two protocol rows of one ``recbole_peer.run_recbole`` result; a run stopped by its epoch cap is named so,
    and so is one with lists shorter than RecBole's default 50 items."""
    settings = run["settings"]
    capped = run["epochs_run"] >= settings["epochs"]
    length = settings.get("max_seq_len", 50)
    name = f"RecBole {settings['model']}" + (f", {length}-item lists" if length != 50 else "")
    name += f" ({run['epochs_run']}-epoch cap)" if capped else ""
    return [
        {
            "dataset": run["dataset"],
            "model": name,
            "seed": settings["seed"],
            "protocol": protocol,
            "metrics": {k: v for k, v in run[f"metrics_{protocol}"].items() if not k.startswith("coverage")},
            "fit_seconds": run["fit_seconds"],
            "predict_seconds": run[f"inference_seconds_{protocol}"],
            "users": run["n_test_users"],
            "users_per_second": run[f"users_per_s_{protocol}"],
            "epochs_run": run["epochs_run"],
            **extra,
        }
        for protocol in ("masked", "unmasked")
    ]


def recbole_rows(
    dataset: str, model: str, seed: int, epochs: int, data_dir: str | None, max_seq_len: int = 50
) -> list[dict[str, Any]]:
    """RecBole's model on our split (``benchmarks/recbole_peer.py``, in its own virtual environment): trained
    on our train events (lists of the last ``max_seq_len`` items), early-stopped on our valid targets,
    ``full_sort_topk`` scored by our metric code."""
    from recbole_peer import run_recbole  # creates RecBole's pinned virtual environment on first use

    extra: dict[str, Any] = {"data_dir": data_dir} if data_dir else {}
    out = run_recbole(dataset, model=model, seed=seed, epochs=epochs, max_seq_len=max_seq_len, **extra)  # type: ignore[arg-type]
    return _recbole_run_rows(out, best_epoch=out.get("best_epoch"), versions=out.get("versions"))


def recbole_cli_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of RecBole runs made by ``recbole_peer.py``'s own command line (its ``runs`` in ``path``), each keeping
    that command and commit."""
    runs = json.loads(path.read_text()).get("runs", {}).values()
    rows = []
    for run in runs:
        stamp = {"command": run["command"], "commit": run["commit"]}
        rows += _recbole_run_rows(run, **stamp, cpu=run.get("cpu", "CPU not recorded"))  # not this machine's
    return rows


def run_dataset(
    name: str,
    profile: Profile,
    models: set[str] | None,
    data_dir: str | None,
    cache_dir: str | None,
    keep: Callable[[list[dict[str, Any]]], None],
) -> None:
    """Every row of one dataset (``models``: a subset of row names to run; None = all), each model's rows handed
    to ``keep`` as soon as they are measured (a long run that stops keeps what it finished)."""
    dataset = load_dataset(name, data_dir=data_dir)
    split = make_split(dataset, SPLITS[name])  # type: ignore[arg-type]
    text = TextEncoderConfig(cache_dir=cache_dir, show_progress=False)

    peers: list[tuple[str, int, Callable[[], Any]]] = [
        (base, 0, functools.partial(lambda b: _Plain(make_model(b, text)), base)) for base in BASELINES
    ]
    peers += [
        (f"implicit {kind.upper()}", 0, functools.partial(lambda k: ImplicitRecommender(ImplicitConfig(kind=k)), kind))
        for kind in ("als", "bpr")
    ]
    for row, seed, build in peers:
        if models is None or row in models:
            keep(evaluate_both(build(), row, seed, dataset, split))
    for model in profile.recbole_models:
        if models is None or f"RecBole {model}" in models:
            epochs, length = profile.recbole_epochs, profile.recbole_max_seq_len
            keep(recbole_rows(name, model, profile.seeds[0], epochs, data_dir, length))
    if models is None or OURS in models:
        for seed in profile.seeds:
            pipeline = ours(profile, seed, cache_dir)
            rows = evaluate_both(pipeline, OURS, seed, dataset, split)
            alone = evaluate_both(_EncoderAlone(pipeline), ENCODER_ALONE, seed, dataset, split, fit=lambda: None)
            start = time.perf_counter()
            seen = pipeline.with_features(train_with_seen=True)
            retrain = rows[0]["fit_seconds"] + time.perf_counter() - start
            unmasked = evaluate_both(seen, OURS_SEEN, seed, dataset, split, fit=lambda: None, protocols=("unmasked",))
            keep(
                rows
                + [{**r, "fit_seconds": rows[0]["fit_seconds"]} for r in alone]
                + [{**r, "fit_seconds": retrain} for r in unmasked]
            )
            if seed == PROFILES[profile.name].seeds[0]:  # the end-to-end suite times the batch job on this model
                pipeline.save(model_dir(name, profile))  # (the profile's own first seed, whatever --seeds says)
    described = describe_settings(dataset_settings(profile, name))
    if described and (models is None or TUNED in models):
        for seed in profile.seeds:
            tuned = evaluate_both(ours(profile, seed, cache_dir, name), TUNED, seed, dataset, split)
            keep([{**r, "settings": described} for r in tuned])


def model_dir(dataset: str, profile: Profile) -> Path:
    """Where the quality suite leaves our first seed's fitted model (git-ignored)."""
    return HERE / ".models" / f"{dataset}-{profile.name}"


def _row_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """(dataset, model, seed, protocol, profile), the model without its epoch-cap and list-length notes: a new run
    of a model replaces its earlier run whether either stopped at its cap or not, whatever their list lengths."""
    model = re.sub(r"(, \d+-item lists)?( \(\d+-epoch cap\))?$", "", str(row.get("model")))
    return (row.get("dataset"), model, row.get("seed"), row.get("protocol"), row.get("profile"))


def merge(rows: list[dict[str, Any]], run_info: dict[str, Any]) -> dict[str, Any]:
    """Add ``rows`` to the JSON file, replacing rows with the same (dataset, model, seed, protocol, profile)."""
    payload = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"rows": []}
    info = machine()
    here = {"cpu_flags": info["cpu_flags"], "versions": info["versions"]}
    for row in rows:
        if "cpu" not in row:  # a row that names its machine (an imported run) keeps it, with no environment
            row["cpu"], row["environment"] = info["cpu"], here  # the payload's machine is only the last run's
        row.update(run_info)
    fresh = {_row_key(r) for r in rows}
    payload["rows"] = [r for r in payload["rows"] if _row_key(r) not in fresh] + rows
    payload["machine"] = machine()
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(payload, indent=1))
    return payload


def _mean_spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per (dataset, protocol, model): metric means over seeds, the spread and the timings."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["protocol"], r["model"]), []).append(r)
    out = []
    for (dataset, protocol, model), group in groups.items():
        out.append(
            {
                "dataset": dataset,
                "protocol": protocol,
                "model": model,
                "seeds": len(group),
                "values": {m: [g["metrics"][m] for g in group] for m in METRICS},
                "fit_seconds": statistics.mean(g["fit_seconds"] for g in group),
                "predict_seconds": statistics.mean(g["predict_seconds"] for g in group),
                "commit": group[0].get("commit"),
                "profile": group[0].get("profile"),
            }
        )
    return out


def render(payload: dict[str, Any], profile: str) -> str:
    rows = [r for r in payload["rows"] if r.get("profile") == profile]
    start, end = markers(profile)
    lines = [start, "", _provenance(rows, payload["machine"]), ""]
    summary = summarise(rows)
    for dataset in dict.fromkeys(r["dataset"] for r in summary):
        for protocol, words in (("masked", "history items excluded"), ("unmasked", "history items NOT excluded")):
            group = [s for s in summary if s["dataset"] == dataset and s["protocol"] == protocol]
            group.sort(key=lambda s: statistics.mean(s["values"]["ndcg@10"]))
            lines += [
                f"### {dataset}, {words}",
                "",
                "| model | seeds | " + " | ".join(METRICS) + " | fit s | predict s |",
            ]
            lines += ["|---|---:|" + "---:|" * (len(METRICS) + 2)]
            for s in group:
                cells = [_mean_spread(s["values"][m]) for m in METRICS]
                name = f"**{s['model']}**" if s["model"] in OURS_ROWS else s["model"]
                lines.append(
                    f"| {name} | {s['seeds']} | "
                    + " | ".join(cells)
                    + f" | {s['fit_seconds']:.0f} | {s['predict_seconds']:.1f} |"
                )
            lines += ["", _verdict(group), ""]
            lines += _settings(rows, dataset, protocol)
            lines += _machines(group, rows, dataset, protocol)
    return "\n".join([*lines, end])


def _settings(rows: list[dict[str, Any]], dataset: str, protocol: str) -> list[str]:
    """A line naming the settings our rows used beyond the library defaults, where they had any."""
    used = {r.get("settings", "") for r in rows if r["dataset"] == dataset and r["model"] == TUNED}
    used = {u for u in used if u}
    if not used or protocol != "masked":
        return []
    return [f"{TUNED} on {dataset} (settings chosen on its validation targets): {'; '.join(sorted(used))}.", ""]


def _machines(group: list[dict[str, Any]], rows: list[dict[str, Any]], dataset: str, protocol: str) -> list[str]:
    """Where a table's rows come from more than one CPU, a line naming which rows ran where."""
    where: dict[str, list[str]] = {}
    for s in group:
        cpus = {
            r.get("cpu", "?")
            for r in rows
            if (r["dataset"], r["protocol"], r["model"]) == (dataset, protocol, s["model"])
        }
        where.setdefault(", ".join(sorted(cpus)), []).append(s["model"])
    if len(where) < 2:
        return []
    return ["Measured on: " + "; ".join(f"{cpu}: {', '.join(models)}" for cpu, models in where.items()) + ".", ""]


def _verdict(group: list[dict[str, Any]]) -> str:
    mine = next((s for s in group if s["model"] == OURS), None)
    peers = [s for s in group if s["model"] not in OURS_ROWS]
    if mine is None or not peers:
        return "(ours or the peers missing from this run)"
    best = max(peers, key=lambda s: statistics.mean(s["values"]["ndcg@10"]))
    a, b = statistics.mean(mine["values"]["ndcg@10"]), statistics.mean(best["values"]["ndcg@10"])
    line = f"Ours {a:.4f} against the best peer ({best['model']}) {b:.4f}: {100 * (a / b - 1):+.1f}% NDCG@10"
    alone = next((s for s in group if s["model"] == ENCODER_ALONE), None)
    if alone is not None:
        c = statistics.mean(alone["values"]["ndcg@10"])
        line += f"; against our encoder alone (same fitted models) {c:.4f}: {100 * (a / c - 1):+.1f}%"
    seen = next((s for s in group if s["model"] == OURS_SEEN), None)
    if seen is not None:
        d = statistics.mean(seen["values"]["ndcg@10"])
        line += f". With the ranker trained with seen items {d:.4f}: {100 * (d / b - 1):+.1f}% against the best peer"
    return line + "."


def _provenance(rows: list[dict[str, Any]], info: dict[str, Any]) -> str:
    commands = sorted({r.get("command", "?") for r in rows})
    commits = sorted({str(r.get("commit")) for r in rows})
    cpus = sorted({r.get("cpu", info["cpu"]) for r in rows})
    return (
        f"Machine{'s' if len(cpus) > 1 else ''}: {', '.join(cpus)}, {info['cores']} cores, "
        f"torch threads {info['torch_threads']}. "
        f"Commands: {', '.join(f'`{c}`' for c in commands)}. Commits: {', '.join(commits)}. "
        "Full-catalogue ranking; ours: mean ± standard deviation over seeds; peers: seed 0. "
        "Fit seconds include the validation-based tuning or early stopping of each model."
    )


def plot(payload: dict[str, Any], profile: str, path: Path) -> None:
    """NDCG@10 (history excluded) per model and dataset; error bars: the spread over our seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = [s for s in summarise([r for r in payload["rows"] if r.get("profile") == profile])]
    summary = [s for s in summary if s["protocol"] == "masked"]
    datasets = list(dict.fromkeys(s["dataset"] for s in summary))
    fig, axes = plt.subplots(1, len(datasets), figsize=(4 * len(datasets), 3.6), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        group = sorted(
            (s for s in summary if s["dataset"] == dataset), key=lambda s: statistics.mean(s["values"]["ndcg@10"])
        )
        means = [statistics.mean(s["values"]["ndcg@10"]) for s in group]
        spread = [statistics.stdev(s["values"]["ndcg@10"]) if s["seeds"] > 1 else 0 for s in group]
        colours = ["#d62" if s["model"] == OURS else "#e9a" if s["model"] == ENCODER_ALONE else "#69c" for s in group]
        ax.barh([s["model"] for s in group], means, xerr=spread, color=colours)
        ax.set_title(dataset, fontsize=9)
        ax.set_xlabel("NDCG@10, full catalogue, history excluded", fontsize=8)
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def publish(payload: dict[str, Any], profile: str) -> None:
    """Redraw the profile's README block and plot from ``payload``."""
    write_block(f"Quality against peers ({profile} profile)", *markers(profile), render(payload, profile))
    plot(payload, profile, HERE / "results" / f"quality-{profile}.png")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="fast")
    parser.add_argument("--datasets", nargs="+", default=None, help="default: the profile's")
    parser.add_argument("--models", nargs="+", default=None, help=f"row names, e.g. '{OURS}' 'implicit ALS'")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--cache-dir", default=None, help="item-embedding cache")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="our seeds (default: the profile's)")
    parser.add_argument(
        "--import-recbole",
        type=Path,
        default=None,
        help="add the runs of recbole_peer.py's own command line (results/recbole.json) to the profile's rows, "
        "then redraw; nothing else runs",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    profile = PROFILES[args.profile]
    if args.seeds:
        profile = dataclasses.replace(profile, seeds=tuple(args.seeds))
    info = {
        "profile": args.profile,
        "command": " ".join(["python benchmarks/quality.py", *(sys.argv[1:] if argv is None else argv)]),
        "commit": _git_commit(str(HERE.parent)),
    }

    def keep(rows: list[dict[str, Any]]) -> None:
        publish(merge(rows, info), args.profile)

    if args.import_recbole:
        publish(merge(recbole_cli_rows(args.import_recbole), {"profile": args.profile}), args.profile)
        return
    for name in args.datasets or profile.datasets:
        run_dataset(name, profile, set(args.models) if args.models else None, args.data_dir, args.cache_dir, keep)


if __name__ == "__main__":
    main()
