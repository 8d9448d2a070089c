"""Feature groups, ranker and ranking-stage settings, paired: the shipped pipeline against the same pipeline with
groups added or removed, other LightGBM settings, or other candidate quotas.

For each dataset and seed, the full-profile pipeline (``quality.ours``: the memory encoder, cross-fitted as
shipped) is fitted once on train + valid; then only its ranker is retrained for each variant
(``Recommender.with_features``: same encoders, same folds, same candidates), and every variant is scored on
the test targets, history items excluded, full catalogue. The encoders are shared, so a difference between rows
comes from the ranker's features alone (and LightGBM's early stopping on them), not from encoder training noise.

Raw results: ``results/feature_groups.json`` (rows keyed by dataset, seed and variant; a later run replaces its
own rows); table: ``README.md`` (between the ``feature-groups`` markers).

    python benchmarks/feature_groups.py --datasets amazon-scientific-unisrec ml-100k --add learned [--seeds 0]
    python benchmarks/feature_groups.py --add --ranker n_estimators=1000   # a ranker setting instead
    python benchmarks/feature_groups.py --add --set n_cooccurrence_candidates=100   # a ranking-stage setting
    python benchmarks/feature_groups.py --add --ranker truncation_level=100 --targets valid   # choose on valid
    python benchmarks/feature_groups.py --add --set memory_crossfit=5   # other fold encoders, same serving one
    python benchmarks/feature_groups.py --add --set features.relative.ranks=false   # a feature block setting
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from recsys.datasets import load_dataset
from recsys.evaluation import make_split
from recsys.features.ranking import GROUPS, FeatureConfig
from recsys.pipeline import SOURCE_GROUPS
from recsys.schema import USER_ID

sys.path.insert(0, str(Path(__file__).resolve().parent))
from foundation import machine, write_block
from quality import KS, PROFILES, SPLITS, _metrics, ours

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "feature_groups.json"
START, END = "<!-- feature-groups:start -->", "<!-- feature-groups:end -->"
logger = logging.getLogger("feature_groups")


Variant = tuple[tuple[str, ...], dict[str, Any], dict[str, Any]]
NEEDS = {quota: group for quota, group in SOURCE_GROUPS.values()}
"""Candidate quota (a ``RecommenderConfig`` field) -> the feature group its source needs."""
"""Enabled groups, ranker settings changed, ranking-stage (``RecommenderConfig``) settings changed."""


FEATURE_PREFIX = "features."
"""A ``--set`` key ``features.<block>.<field>`` changes one feature block's setting (``FeatureConfig``), e.g.
``features.relative.ranks=false``; the other keys are ranking-stage ``RecommenderConfig`` settings."""


def feature_config(config: FeatureConfig, settings: dict[str, Any]) -> FeatureConfig:
    """``config`` with each ``features.<block>.<field>`` setting of ``settings`` applied.

    Raises
    ------
    ValueError
        A key does not name a block config of :class:`FeatureConfig` and one of its fields.
    """
    for key, value in settings.items():
        block, _, name = key.removeprefix(FEATURE_PREFIX).partition(".")
        current: Any = getattr(config, block, None)
        if isinstance(current, type) or not dataclasses.is_dataclass(current):
            current = None
        if current is None or name not in {f.name for f in dataclasses.fields(current)}:
            raise ValueError(f"--set {key}: FeatureConfig has no block setting {block}.{name}")
        config = dataclasses.replace(config, **{block: dataclasses.replace(current, **{name: value})})
    return config


def _value(text: str) -> Any:
    """A ``KEY=VALUE`` setting's value: JSON (numbers, true, null, quoted strings), else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def variants(
    shipped: tuple[str, ...],
    add: list[str],
    drop: list[str],
    ranker: list[str],
    stage: list[str] | None = None,
    combined: bool = True,
    together: Sequence[str] = (),
    alone: bool = True,
) -> dict[str, Variant]:
    """Variant name -> :data:`Variant`: the shipped set, then each added group alone, each removed group alone,
    all additions together when there are several, each ``key=value`` ranker setting alone (shipped groups),
    each ``key=value`` ranking-stage setting alone (``stage``; a candidate quota whose feature group is not
    shipped gets that group too, :data:`recsys.pipeline.SOURCE_GROUPS`), and with settings and more than one change,
    everything together (unless ``combined`` is off or a key is given twice: ``n_cutoffs=3 n_cutoffs=8`` are two
    values to compare); ``together``: groups added as one variant only (none alone), e.g. to confirm on more seeds
    a combination already screened; with settings, the everything-together variant has them too. ``alone`` off:
    only the shipped set and the everything-together variant (to confirm a combination of settings already
    screened one by one, e.g. a dataset's tuned settings plus one more)."""
    out: dict[str, Variant] = {"shipped": (shipped, {}, {})}
    for group in add:
        out[f"+ {group}"] = ((*shipped, group), {}, {})
    for group in drop:
        out[f"- {group}"] = (tuple(g for g in shipped if g != group), {}, {})
    if len(add) > 1:
        out["+ " + " + ".join(add)] = ((*shipped, *add), {}, {})
    if together:
        out["+ " + " + ".join(together)] = ((*shipped, *together), {}, {})
    settings: dict[str, Any] = {}
    for setting in ranker:
        key, _, value = setting.partition("=")
        settings[key] = _value(value)
        out[f"ranker {key}={value}"] = (shipped, {key: settings[key]}, {})
    stages = _stage_variants(shipped, stage or [], out)
    distinct = len(settings) == len(ranker) and len(stages) == len(stage or [])  # two values of a key: no mix
    changes = len(add) + bool(together) + len(ranker) + len(stage or [])
    if combined and (ranker or stage) and distinct and changes > 1:  # everything together
        name, variant = _everything(shipped, [*add, *together], ranker, stage or [], settings, stages)
        if not alone:
            return {"shipped": out["shipped"], name: variant}
        if variant not in out.values():  # not already a variant (one quota that adds its group)
            out[name] = variant
    elif not alone:
        raise ValueError(
            "only the combined variant asked for, but there is none: it needs settings (--ranker or --set), "
            "more than one change and no --no-combined"
        )
    return out


def _stage_variants(shipped: tuple[str, ...], stage: list[str], out: dict[str, Variant]) -> dict[str, Any]:
    """Add each ranking-stage setting alone to ``out`` (a candidate quota brings the feature group it needs);
    return the settings as a dict."""
    stages: dict[str, Any] = {}
    for setting in stage:
        key, _, value = setting.partition("=")
        stages[key] = _value(value)
        needed = NEEDS.get(key)
        if needed is not None and needed not in shipped and stages[key]:
            out[f"set {key}={value} + {needed}"] = ((*shipped, needed), {}, {key: stages[key]})
        else:
            out[f"set {key}={value}"] = (shipped, {}, {key: stages[key]})
    return stages


def _everything(
    shipped: tuple[str, ...],
    joined: list[str],
    ranker: list[str],
    stage: list[str],
    settings: dict[str, Any],
    stages: dict[str, Any],
) -> tuple[str, Variant]:
    """The everything-together variant's name and value: ``joined`` groups, every setting, and the feature group
    each candidate quota needs."""
    parts = ["+ " + " + ".join(joined)] if joined else []
    parts += [*(f"ranker {s}" for s in ranker), *(f"set {s}" for s in stage)]
    groups = (*shipped, *joined)
    wanted = [NEEDS[k] for k, v in stages.items() if k in NEEDS and v and NEEDS[k] not in groups]
    groups += tuple(dict.fromkeys(wanted))
    return " + ".join(parts), (groups, settings, stages)


def run(
    name: str,
    seed: int,
    add: list[str],
    drop: list[str],
    ranker: list[str],
    cache_dir: str | None,
    stage: list[str] | None = None,
    targets: str = "test",
    combined: bool = True,
    together: Sequence[str] = (),
    alone: bool = True,
) -> list[dict[str, Any]]:
    """Fit the shipped pipeline once, retrain its ranker per variant, score each on the ``targets`` events.

    ``"test"``: fitted on train + valid, scored on the test events. ``"valid"``: fitted on train alone (the
    test events unused) and scored on the validation events, to choose a setting without looking at test.
    """
    dataset = load_dataset(name)
    split = make_split(dataset, SPLITS[name])  # type: ignore[arg-type]
    if targets == "valid":
        truth, history, extra = split.valid, split.history_for_valid(), None
    else:
        truth, history, extra = split.test, split.history_for_test(), split.valid
    users = truth[USER_ID].unique().sort()
    history = history.filter(pl.col(USER_ID).is_in(users.implode()))
    started = time.perf_counter()
    model = ours(PROFILES["full"], seed, cache_dir).fit(split.train, dataset.items, valid=extra)
    fit_seconds = time.perf_counter() - started
    logger.info("%s seed %d: fitted in %.0f s", name, seed, fit_seconds)
    rows: list[dict[str, Any]] = []
    tried = variants(model.config.features.groups, add, drop, ranker, stage, combined, together, alone)
    for variant, (groups, settings, stages) in tried.items():
        started = time.perf_counter()
        config = dataclasses.replace(model.config.ranker, **settings)
        blocks = {k: v for k, v in stages.items() if k.startswith(FEATURE_PREFIX)}
        features = feature_config(dataclasses.replace(model.config.features, groups=groups), blocks)
        ranking = {k: v for k, v in stages.items() if k not in blocks}
        twin = model if variant == "shipped" else model.with_features(features, config, **ranking)
        ranker_seconds = time.perf_counter() - started
        recs = twin.recommend(users, k=max(KS), history=history)
        metrics = _metrics(recs, truth, dataset.items.height)
        trees = twin.ranker_.n_trees  # type: ignore[union-attr]  # over every member of an ensemble
        logger.info("%s seed %d %s: NDCG@10 %.4f (%d trees)", name, seed, variant, metrics["ndcg@10"], trees)
        baseline = rows[0]["metrics"]["ndcg@10"] if rows else metrics["ndcg@10"]  # "shipped" comes first
        rows.append(
            {
                "dataset": name,
                "seed": seed,
                "targets": targets,
                "variant": variant,
                "groups": list(groups),
                "ranker": settings,
                "settings": stages,
                "metrics": metrics,
                "shipped_ndcg@10": baseline,  # the paired baseline: this run's shipped model
                "trees": trees,
                "pipeline_fit_seconds": fit_seconds,
                "ranker_fit_seconds": ranker_seconds if variant != "shipped" else None,
                "users": users.len(),
            }
        )
    return rows


def _key(row: dict[str, Any]) -> tuple[str, str, int, str]:
    """A row's identity: dataset, targets (rows from before ``--targets`` are test rows), seed, variant."""
    return row["dataset"], row.get("targets", "test"), row["seed"], row["variant"]


def merge_rows(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The results after a run: its rows replace those with the same key (:func:`_key`). Where the run has a
    shipped row, the dataset's shipped rows from other commits (every seed, for the pipeline shipped then)
    stay as ``shipped at <commit>``, so the table never averages two versions of the pipeline and the earlier
    variants keep the baseline they were paired with (``shipped_ndcg@10``)."""
    done = {_key(r) for r in new}
    fresh = {(r["dataset"], r.get("targets", "test"), r["commit"]) for r in new if r["variant"] == "shipped"}
    superseded = {key[:2] for key in fresh}
    out: dict[tuple[str, str, int, str], dict[str, Any]] = {}
    for r in old:
        if r["variant"] == "shipped" and _key(r)[:2] in superseded and (*_key(r)[:2], r["commit"]) not in fresh:
            r = r | {"variant": f"shipped at {r['commit'].removesuffix('-dirty')}"}
        elif _key(r) in done:
            continue
        out[_key(r)] = r
    return list(out.values()) + new


def _run_of(row: dict[str, Any]) -> str:
    """The commit of the run that measured ``row`` (``-dirty`` dropped), as in ``shipped at <commit>``."""
    return str(row["commit"]).removesuffix("-dirty")


def _blocks(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """``rows`` (one dataset and targets) grouped by the run's shipped model each variant was paired with: today's
    shipped row and its variants first, then each earlier ``shipped at <commit>`` row with its own. A variant whose
    run's shipped row is gone (replaced before ``shipped at`` rows were kept) gets a synthetic header row
    (:func:`_line`) carrying the baseline stored with its pairs, so it never reads as paired with today's row."""
    heads: dict[str, str] = {}  # run commit -> its shipped row's variant name
    for r in rows:
        if r["variant"] == "shipped":  # today's row heads its run even beside a same-commit ``shipped at`` row
            heads[_run_of(r)] = "shipped"
        elif r["variant"].startswith("shipped at "):
            heads.setdefault(_run_of(r), r["variant"])
    today = next((c for c, v in heads.items() if v == "shipped"), None)
    order = dict.fromkeys([*([today] if today else []), *(_run_of(r) for r in rows)])
    out = []
    for commit in order:
        mine = [r for r in rows if _run_of(r) == commit]
        head = heads.get(commit)
        shipped = [r for r in mine if r["variant"] == head] if head else [_orphan_head(commit, mine)]
        out.append(shipped + [r for r in mine if r["variant"] != head])
    return out


def _orphan_head(commit: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A header row for variants whose run's shipped row was replaced: the NDCG@10 they were paired with."""
    return {"variant": f"shipped at {commit} (row since replaced)", "orphan": True, "rows": rows}


def _line(variant: str, mine: list[dict[str, Any]], base: dict[int, float]) -> str:
    """One table row: the mean over ``mine`` (one row per seed), and the paired change per seed."""
    if mine[0].get("orphan"):
        paired = {r["seed"]: r["shipped_ndcg@10"] for r in mine[0]["rows"] if r.get("shipped_ndcg@10") is not None}
        ndcg = f"{statistics.mean(paired.values()):.4f}" if paired else "-"
        return f"| {variant} | {len(paired) or '-'} | {ndcg} | - | - | - | - |"
    mean = {k: statistics.mean(r["metrics"][k] for r in mine) for k in ("ndcg@10", "recall@10", "ndcg@50")}
    pairs = [(r["metrics"]["ndcg@10"], r.get("shipped_ndcg@10", base.get(r["seed"]))) for r in mine]
    deltas = [value - shipped for value, shipped in pairs if shipped is not None]
    change = "-" if variant.startswith("shipped") else ", ".join(f"{d:+.4f}" for d in deltas)
    trees = "/".join(str(r["trees"]) for r in mine)
    return (
        f"| {variant} | {len(mine)} | {mean['ndcg@10']:.4f} | {mean['recall@10']:.4f} | "
        f"{mean['ndcg@50']:.4f} | {change} | {trees} |"
    )


def render(payload: dict[str, Any]) -> str:
    m = payload["machine"]
    cpus = sorted({r.get("cpu", m["cpu"]) for r in payload["results"]})
    lines = [START, "", f"Machines: {', '.join(cpus)}, {m['cores']} cores. Commands and commits: under each table.", ""]
    for name, targets in dict.fromkeys(_key(r)[:2] for r in payload["results"]):
        rows = [r for r in payload["results"] if _key(r)[:2] == (name, targets)]
        title = name if targets == "test" else f"{name}, validation targets (fitted without the test events)"
        lines += [
            f"### {title}",
            "",
            "| variant | seeds | NDCG@10 | Recall@10 | NDCG@50 | change in NDCG@10 (paired, per seed) "
            "| trees (an ensemble: all members') |",
            "|---|---:|---:|---:|---:|---|---:|",
        ]
        for block in _blocks(rows):
            head = block[0]["variant"]  # the block's shipped row: each variant's fallback baseline, per seed
            base = {r["seed"]: r["metrics"]["ndcg@10"] for r in block if r["variant"] == head and "metrics" in r}
            for variant in dict.fromkeys(r["variant"] for r in block):
                lines.append(_line(variant, [r for r in block if r["variant"] == variant], base))
        runs = sorted({(r["command"], r["commit"], r.get("cpu", m["cpu"])) for r in rows})
        lines += ["", "; ".join(f"`{c}` at `{k}` ({cpu})" for c, k, cpu in runs), ""]
    lines.append(END)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", choices=sorted(SPLITS), default=["amazon-scientific-unisrec"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--add", nargs="*", choices=GROUPS, default=[], help="groups to add, one by one (or none)")
    parser.add_argument("--drop", nargs="*", choices=GROUPS, default=[], help="groups to remove, one by one")
    parser.add_argument(
        "--together", nargs="*", choices=GROUPS, default=[], help="groups to add as one variant only (none alone)"
    )
    parser.add_argument(
        "--ranker", nargs="*", default=[], metavar="KEY=VALUE", help="RankerConfig settings to try, one by one"
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="ranking-stage RecommenderConfig settings to try, one by one (recsys.pipeline.ranking_settings: "
        "RANKING_SETTINGS, and n_cutoffs and memory_crossfit with a cross-fitted encoder), or a feature block's "
        "setting as features.<block>.<field>, e.g. features.relative.ranks=false",
    )
    parser.add_argument(
        "--targets",
        choices=["test", "valid"],
        default="test",
        help="test: fit on train + valid, score the test events; valid: fit on train, score the validation events "
        "(choose settings here, then confirm on test)",
    )
    parser.add_argument(
        "--no-combined",
        action="store_true",
        help="skip the variant with every change together (each change alone only)",
    )
    parser.add_argument(
        "--only-combined",
        action="store_true",
        help="the shipped set and the everything-together variant only (no change alone)",
    )
    parser.add_argument("--cache-dir", default=None, help="text embedding cache (default: the library's)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from recsys.evaluation._harness import _git_commit

    command = ("python benchmarks/feature_groups.py " + " ".join(sys.argv[1:])).strip()
    commit = _git_commit(str(HERE.parent))
    for name in args.datasets:
        for seed in args.seeds:
            combined = not args.no_combined
            options = (args.cache_dir, args.set, args.targets, combined, args.together, not args.only_combined)
            rows = run(name, seed, args.add, args.drop, args.ranker, *options)
            rows = [r | {"command": command, "commit": commit, "cpu": machine()["cpu"]} for r in rows]
            old = json.loads(RESULTS.read_text())["results"] if RESULTS.exists() else []
            payload = {"machine": machine(), "results": merge_rows(old, rows)}
            RESULTS.parent.mkdir(exist_ok=True)
            RESULTS.write_text(json.dumps(payload, indent=2))
            write_block("Feature groups, paired", START, END, render(payload))


if __name__ == "__main__":
    main()
