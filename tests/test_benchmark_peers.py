"""The implicit ALS/BPR peer and the quality suite's bookkeeping (benchmarks/implicit_peer.py, quality.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.errors import ConfigError, NotFittedError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from implicit_peer import ImplicitConfig, ImplicitRecommender
from quality import METRICS, _mean_spread, merge, summarise


def _blocks(n_users: int = 200, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Two disjoint tastes: even users take items 0-9, odd users items 10-19 (each user 7 of their 10)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        base = 0 if u % 2 == 0 else 10
        for t, i in enumerate(rng.choice(10, 7, replace=False)):
            rows.append((u, base + int(i), t))
    events = pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp"], orient="row")
    items = pl.DataFrame({"item_id": np.arange(20), "text": [f"item {i}" for i in range(20)]})
    return events, items


@pytest.mark.parametrize("kind", ["als", "bpr"])
def test_implicit_peer_recommends_within_the_users_block(kind: str) -> None:
    events, items = _blocks()
    config = ImplicitConfig(kind=kind, factors=2, factor_grid=(), iterations=50 if kind == "bpr" else 15)
    model = ImplicitRecommender(config).fit(events, items)
    recs = model.recommend(list(range(200)), k=3, history=events)
    assert recs.columns == ["user_id", "item_id", "score", "rank"]
    assert recs.group_by("user_id").len()["len"].to_list() == [3] * 200
    assert recs.join(events, on=["user_id", "item_id"], how="semi").height == 0  # history excluded
    in_block = (pl.col("user_id") % 2 == 0) == (pl.col("item_id") < 10)
    assert recs.select(in_block.all()).item()  # exactly the 3 unseen items of each user's block
    assert recs.filter(pl.col("user_id") < 2)["rank"].to_list() == [1, 2, 3, 1, 2, 3]


def test_implicit_peer_picks_factors_on_valid_and_refits_with_them() -> None:
    events, items = _blocks()
    last = pl.col("timestamp") == pl.col("timestamp").max().over("user_id")
    model = ImplicitRecommender(ImplicitConfig(kind="als", factor_grid=(2, 4), iterations=5))
    model.fit(events.filter(~last), items, valid=events.filter(last))
    assert model.factors_ in (2, 4)
    assert model.users_.height == 200  # refitted on train + valid


def test_implicit_peer_unknown_users_get_no_rows_and_unfitted_raises() -> None:
    events, items = _blocks()
    with pytest.raises(NotFittedError):
        ImplicitRecommender().recommend([0])
    model = ImplicitRecommender(ImplicitConfig(factors=4, factor_grid=())).fit(events, items)
    assert model.recommend([999], k=3, history=events).height == 0
    with pytest.raises(ConfigError, match="kind"):
        ImplicitConfig(kind="svd")  # type: ignore[arg-type]


def test_quality_summary_means_over_seeds_and_merge_replaces_by_key(tmp_path, monkeypatch) -> None:
    import quality

    def row(seed: int, ndcg: float) -> dict:
        metrics = dict.fromkeys(quality.METRICS, 0.0) | {"ndcg@10": ndcg}
        return {"dataset": "d", "model": "m", "seed": seed, "protocol": "masked", "metrics": metrics,
                "fit_seconds": 1.0, "predict_seconds": 2.0}  # fmt: skip

    monkeypatch.setattr(quality, "RESULTS", tmp_path / "quality.json")
    merge([row(0, 0.1), row(1, 0.3)], {"profile": "full", "commit": "c"})
    payload = merge([row(1, 0.2)], {"profile": "full", "commit": "c"})  # seed 1 re-run replaces the old row
    assert len(payload["rows"]) == 2
    (summary,) = summarise(payload["rows"])
    assert summary["seeds"] == 2
    assert summary["values"]["ndcg@10"] == [0.1, 0.2]
    assert _mean_spread([0.1, 0.2]) == "0.1500 ± 0.0707"
    assert _mean_spread([0.25]) == "0.2500"
    capped = row(0, 0.4) | {"model": "m (3-epoch cap)"}  # a re-run that stopped at its cap replaces the old run
    payload = merge([capped], {"profile": "full", "commit": "c"})
    assert sorted((r["model"], r["seed"]) for r in payload["rows"]) == [("m", 1), ("m (3-epoch cap)", 0)]
    short = row(0, 0.5) | {"model": "m, 20-item lists (1-epoch cap)"}  # so does one over shorter lists
    payload = merge([short], {"profile": "full", "commit": "c"})
    assert sorted((r["model"], r["seed"]) for r in payload["rows"]) == [("m", 1), ("m, 20-item lists (1-epoch cap)", 0)]
    assert {r["cpu"] for r in payload["rows"]} == {quality.machine()["cpu"]}  # each row records its machine
    env = payload["rows"][0]["environment"]  # and its software, for comparing rows measured in other sessions
    assert {"lightgbm", "polars", "numpy", "scipy"} <= set(env["versions"]) and isinstance(env["cpu_flags"], list)


def test_quality_table_names_the_machine_of_each_row_when_they_differ() -> None:
    from quality import render

    def row(model: str, cpu: str, ndcg: float) -> dict:
        metrics = dict.fromkeys(METRICS, 0.0) | {"ndcg@10": ndcg}
        out = {"dataset": "d", "model": model, "seed": 0, "protocol": "masked", "metrics": metrics, "cpu": cpu}
        return out | {"fit_seconds": 1.0, "predict_seconds": 2.0, "profile": "full", "command": "q", "commit": "c"}

    info = {"cpu": "now", "cores": 2, "torch_threads": 2}
    text = render({"rows": [row("ours (pipeline-memory)", "B", 0.2), row("p", "A", 0.1)], "machine": info}, "full")
    assert "Machines: A, B, 2 cores" in text and "Measured on: A: p; B: ours (pipeline-memory)." in text
    one = render({"rows": [row("ours (pipeline-memory)", "A", 0.2), row("p", "A", 0.1)], "machine": info}, "full")
    assert "Machine: A, 2 cores" in one and "Measured on" not in one


def test_dataset_settings_reach_our_pipeline_and_the_table_in_the_full_profile_only() -> None:
    """``DATASET_SETTINGS`` add their groups and settings to our pipeline for that dataset (full profile), the
    other datasets and the fast profile keep the library defaults, and the table names what our rows used."""
    import quality
    from quality import PROFILES, dataset_settings, describe_settings, ours, render

    full, fast = PROFILES["full"], PROFILES["fast"]
    settings = {"groups": ("lexical",), "n_lexical_candidates": 7}
    original = dict(quality.DATASET_SETTINGS)
    quality.DATASET_SETTINGS.clear()
    quality.DATASET_SETTINGS["d"] = settings
    try:
        tuned, plain = ours(full, 0, None, "d").config, ours(full, 0, None, "other").config
        assert "lexical" in tuned.features.groups and tuned.n_lexical_candidates == 7
        assert "lexical" not in plain.features.groups and plain.n_lexical_candidates == 0
        assert dataset_settings(fast, "d") == {} and dataset_settings(full, None) == {}
        assert ours(fast, 0, None, "d").config.n_lexical_candidates == 0
    finally:
        quality.DATASET_SETTINGS.clear()
        quality.DATASET_SETTINGS.update(original)
    described = describe_settings(settings)
    assert described == "+ lexical, n_lexical_candidates=7"
    metrics = dict.fromkeys(METRICS, 0.0)
    row = {"dataset": "d", "model": "ours (pipeline-memory, tuned)", "seed": 0, "protocol": "masked"}
    row["metrics"] = metrics
    row |= {"cpu": "A", "fit_seconds": 1.0, "predict_seconds": 2.0, "profile": "full", "command": "q", "commit": "c"}
    info = {"cpu": "A", "cores": 2, "torch_threads": 2}
    text = render({"rows": [row | {"settings": described}], "machine": info}, "full")
    line = "ours (pipeline-memory, tuned) on d (settings chosen on its validation targets): + lexical, n_lexical"
    assert line in text and "(ours or the peers missing" in text  # the tuned row is no peer (and not ours)
    assert "settings chosen" not in render({"rows": [row], "machine": info}, "full")


def test_the_encoder_alone_row_is_no_peer_but_is_compared_with_ours() -> None:
    """``ours (encoder alone)`` (the same fitted pipeline's first stage) is never "the best peer"; the table's
    verdict and the headline compare ours with it against the issue's 10% bar."""
    from quality import render
    from run import _quality_lines

    def row(model: str, ndcg: float) -> dict:
        metrics = dict.fromkeys(METRICS, 0.0) | {"ndcg@10": ndcg}
        out = {"dataset": "d", "model": model, "seed": 0, "protocol": "masked", "metrics": metrics, "cpu": "A"}
        return out | {"fit_seconds": 1.0, "predict_seconds": 2.0, "profile": "full", "command": "q", "commit": "c"}

    rows = [row("ours (pipeline-memory)", 0.2), row("ours (encoder alone)", 0.19), row("p", 0.1)]
    text = render({"rows": rows, "machine": {"cpu": "A", "cores": 2, "torch_threads": 2}}, "full")
    assert "against the best peer (p) 0.1000: +100.0%" in text
    assert "against our encoder alone (same fitted models) 0.1900: +5.3%" in text
    peer, alone = _quality_lines({"rows": rows}, "full")
    assert "best peer p 0.1000 | 2.00x | yes |" in peer
    assert alone.startswith("| d: NDCG@10 >= 1.10x our encoder alone |") and alone.endswith("| 1.05x | no |")


def test_the_row_trained_with_seen_items_is_no_peer_and_is_named_in_the_unmasked_verdict() -> None:
    from quality import render

    def row(model: str, protocol: str, ndcg: float) -> dict:
        metrics = dict.fromkeys(METRICS, 0.0) | {"ndcg@10": ndcg}
        out = {"dataset": "d", "model": model, "seed": 0, "protocol": protocol, "metrics": metrics, "cpu": "A"}
        return out | {"fit_seconds": 1.0, "predict_seconds": 2.0, "profile": "full", "command": "q", "commit": "c"}

    rows = [row("ours (pipeline-memory)", p, 0.05) for p in ("masked", "unmasked")]
    rows += [row("p", p, 0.06) for p in ("masked", "unmasked")]
    rows += [row("ours (ranker trained with seen items)", "unmasked", 0.09)]  # never a peer, though the best
    text = render({"rows": rows, "machine": {"cpu": "A", "cores": 2, "torch_threads": 2}}, "full")
    masked, unmasked = text.split("### d, history items NOT excluded")
    assert "seen items" not in masked
    verdict = "best peer (p) 0.0600: -16.7% NDCG@10. With the ranker trained with seen items 0.0900: +50.0%"
    assert verdict in unmasked


def test_recbole_cli_rows_keep_their_command_and_name_a_capped_run(tmp_path) -> None:
    from quality import recbole_cli_rows

    metrics = {"ndcg@10": 0.08, "recall@10": 0.15, "coverage@10": 0.3}
    run = {
        "dataset": "ml-100k", "settings": {"model": "SASRec", "seed": 0, "epochs": 6}, "epochs_run": 6,
        "metrics_masked": metrics, "metrics_unmasked": metrics | {"ndcg@10": 0.05}, "fit_seconds": 10.0,
        "inference_seconds_masked": 1.0, "inference_seconds_unmasked": 2.0, "n_test_users": 943,
        "users_per_s_masked": 943.0, "users_per_s_unmasked": 471.5, "command": "python x", "commit": "abc",
    }  # fmt: skip
    path = tmp_path / "recbole.json"
    short = run | {"settings": run["settings"] | {"max_seq_len": 20}}  # RecBole's lists cut below its 50
    path.write_text(json.dumps({"runs": {"a": run, "b": run | {"epochs_run": 4, "cpu": "AMD"}, "c": short}}))
    rows = recbole_cli_rows(path)
    assert [r["model"] for r in rows] == (
        ["RecBole SASRec (6-epoch cap)"] * 2
        + ["RecBole SASRec"] * 2
        + ["RecBole SASRec, 20-item lists (6-epoch cap)"] * 2
    )
    assert rows[0]["cpu"] == "CPU not recorded" and rows[2]["cpu"] == rows[3]["cpu"] == "AMD"  # never this machine's
    assert [r["metrics"]["ndcg@10"] for r in rows[:2]] == [0.08, 0.05]
    assert "coverage@10" not in rows[0]["metrics"]
    assert rows[1]["predict_seconds"] == 2.0 and rows[0]["command"] == "python x"


def test_throughput_table_shows_the_same_run_ratio_the_candidate_sweep_and_the_stages() -> None:
    from throughput import render

    same = {"model": "RecBole SASRec (untrained)", "users_per_second": 4000.0, "n_items": 1682}
    row = {
        "dataset": "ml-100k", "profile": "full", "users": 943, "users_per_second": 190.0, "thread_speedup": 1.05,
        "peak_rss_mib": 740.0, "recbole": None, "ours_in_memory": None, "ratio_to_recbole": None,
        "ours_stored_states": {"users_per_second": 800.0}, "recbole_same_run": same,
        "stored_ratio_to_recbole_same_run": 0.2,
        "candidate_sweep": [{"quotas": [20, 10, 2], "users_per_second": 1500.0, "ndcg@10": 0.1328, "recall@10": 0.25}],
        "stages": {"seconds": {"candidates": 0.4, "features": 0.7, "ranker": 1.7, "other": 0.1, "total": 2.9},
                   "users": 943, "rows_per_user": 228.2, "trees": 373, "ranker_ns_per_tree_row": 21.1},
        "command": "python benchmarks/throughput.py --profile full", "commit": "def",
    }  # fmt: skip
    old = {**row, "dataset": "ml-latest-small", "stages": None}
    del old["command"], old["commit"]  # a row measured before rows kept their own: the payload's
    payload = {"command": "c", "commit": "abc", "machine": {"cpu": "x", "cores": 2}, "repeats": 3, "rows": [row, old]}
    table = render(payload)
    assert "| ml-100k | full | 943 | 190 | 1.05x | 740 | - | 800 | - | - | - | 4000 | 0.20x |" in table
    assert "| 20, 10, 2 | 1500 | 0.1328 | 0.2500 |" in table
    assert "| ml-100k | full | 325 | 228 | 373 | 0.40 | 0.70 | 1.70 | 0.10 | 21.1 |" in table  # 943 users / 2.9 s
    assert "`python benchmarks/throughput.py --profile full` at `def`: ml-100k (full)" in table
    assert "`c` at `abc`: ml-latest-small (full)" in table
    assert "The two-stage ranker (" not in table  # no row timed it: no table of its own


def test_throughput_cascade_table_and_headline_row_pair_it_with_the_plain_ensemble() -> None:
    from run import _throughput_lines
    from throughput import render

    own = {
        "quotas": [200, 100, 20],
        "own": True,
        "cascade_top": None,
        "users_per_second": 600.0,
        "ndcg@10": 0.1434,
        "recall@10": 0.2598,
    }
    on = {**own, "own": False, "cascade_top": 50, "users_per_second": 900.0, "ndcg@10": 0.1431}
    same = {"model": "RecBole SASRec (untrained)", "users_per_second": 3000.0, "n_items": 1682}
    row = {
        "dataset": "ml-100k", "profile": "full", "users": 943, "users_per_second": 200.0, "thread_speedup": 1.1,
        "peak_rss_mib": 800.0, "recbole": None, "ours_in_memory": None, "ratio_to_recbole": None,
        "ours_stored_states": {"users_per_second": 600.0}, "recbole_same_run": same,
        "stored_ratio_to_recbole_same_run": 0.2, "candidate_sweep": [own, on], "stages": None,
        "cascade": {"top": 50, "stored_states": on, "batch": {"users_per_second": 250.0}, "stored_speedup": 1.5,
                    "batch_speedup": 1.25, "stored_ratio_to_recbole_same_run": 0.3},
    }  # fmt: skip
    payload = {"command": "c", "commit": "abc", "machine": {"cpu": "x", "cores": 2}, "repeats": 2, "rows": [row]}
    table = render(payload)
    assert (
        "| ml-100k | full | 50 | 600 -> 900 | 1.50x | 0.1434 -> 0.1431 | 0.2598 -> 0.2598 | 200 -> 250 | 1.25x "
        "| 0.30x |" in table
    )
    assert "| 200, 100, 20 | 600 | 0.1434 | 0.2598 |" in table and "| 200, 100, 20 | 900 |" not in table
    lines = _throughput_lines(payload, "full")
    assert lines[1] == (
        "| ml-100k: users/s >= RecBole's, two-stage ranker (`--cascade-top 50`) | same run: ours 900 users/s "
        "from stored states (1.50x off), NDCG@10 0.1431; batch job 250 users/s (1.25x off) | 0.30x | no |"
    )


def test_throughput_quota_table_pairs_each_quota_with_its_two_stage_point() -> None:
    """Where every quota was also served by the two-stage ranker, each quota row carries that point's users/s,
    NDCG@10 and its ratio to RecBole's same-run speed (1,500 / 3,000 users/s: 0.50x)."""
    from throughput import render

    def point(quotas: list[int], top: int | None, speed: float, ndcg: float) -> dict:
        own = quotas == [200, 100, 20] and top is None
        return {"quotas": quotas, "own": own, "cascade_top": top, "users_per_second": speed, "ndcg@10": ndcg,
                "recall@10": 0.25}  # fmt: skip

    sweep = [point([50, 25, 5], None, 1000.0, 0.1400), point([200, 100, 20], None, 600.0, 0.1434)]
    sweep += [point([50, 25, 5], 50, 1500.0, 0.1401), point([200, 100, 20], 50, 900.0, 0.1431)]
    row = {
        "dataset": "ml-100k", "profile": "full", "users": 943, "users_per_second": 200.0, "thread_speedup": 1.1,
        "peak_rss_mib": 800.0, "recbole": None, "ours_in_memory": None, "ratio_to_recbole": None,
        "ours_stored_states": {"users_per_second": 600.0}, "stored_ratio_to_recbole_same_run": 0.2,
        "recbole_same_run": {"model": "RecBole SASRec (untrained)", "users_per_second": 3000.0, "n_items": 1682},
        "candidate_sweep": sweep, "stages": None,
        "cascade": {"top": 50, "stored_states": sweep[3], "batch": {"users_per_second": 250.0},
                    "stored_speedup": 1.5, "batch_speedup": 1.25, "stored_ratio_to_recbole_same_run": 0.3},
    }  # fmt: skip
    table = render({"command": "c", "commit": "abc", "machine": {"cpu": "x", "cores": 2}, "repeats": 2, "rows": [row]})
    assert "| 50, 25, 5 | 1000 | 0.1400 | 0.2500 | 1500 | 0.1401 | 0.50x |" in table
    assert "| 200, 100, 20 | 600 | 0.1434 | 0.2500 | 900 | 0.1431 | 0.30x |" in table
    assert "two-stage: `cascade_top` 50" in table
    from run import _throughput_lines

    lines = _throughput_lines({"rows": [row]}, "full")
    assert lines[2] == (  # after the plain and the default two-stage rows: the fastest quotas, 1,500 / 3,000
        "| ml-100k: users/s >= RecBole's, two-stage ranker, fewer candidates (`--quotas 50,25,5`) | same run: ours "
        "1500 users/s from stored states, NDCG@10 0.1401 against 0.1431 at the default quotas | 0.50x | no |"
    )


def test_headline_names_the_fastest_quotas_that_keep_the_default_quality() -> None:
    """Beside the fastest quota point (20/10/2 here, -0.0030 NDCG@10), the fastest one within 0.001 NDCG@10 of
    the default quotas' point: 50/25/5 (-0.0008), not 100/50/10 (slower); 4,000 / 3,200 users/s = 1.25x."""
    from run import _same_quality_quotas_line

    def point(quotas: list[int], speed: float, ndcg: float) -> dict:
        return {"quotas": quotas, "own": False, "cascade_top": 50, "users_per_second": speed, "ndcg@10": ndcg}

    default = point([200, 100, 20], 1600.0, 0.1080)
    sweep = [
        point([20, 10, 2], 5000.0, 0.1050),
        point([50, 25, 5], 4000.0, 0.1072),
        point([100, 50, 10], 3000.0, 0.1085),
    ]
    row = {"dataset": "unisrec", "candidate_sweep": [*sweep, default], "recbole_same_run": {"users_per_second": 3200.0}}
    assert _same_quality_quotas_line(row, default) == [
        "| unisrec: users/s >= RecBole's, two-stage ranker, the fastest quotas within 0.001 NDCG@10 of the "
        "default's (`--quotas 50,25,5`) | same run: ours 4000 users/s from stored states, NDCG@10 0.1072 against "
        "0.1080 at the default quotas | 1.25x | yes |"
    ]
    sweep[0]["ndcg@10"] = 0.1079  # the fastest point keeps the quality: its own row says so, no second row
    assert _same_quality_quotas_line(row, default) == []
    for p in sweep:
        p["ndcg@10"] = 0.1000  # every smaller quota costs more than the tolerance: nothing to report
    assert _same_quality_quotas_line(row, default) == []


def test_headline_speed_rows_name_the_run_that_measured_them() -> None:
    from run import _speed_lines

    def retrieval(items: int, overhead: float) -> dict:
        return {"items": items, "overhead_k100": {"overhead": overhead, "identical_results": True}}

    speed = {"profile": "fast", "retrieval": [retrieval(10**5, 0.05), retrieval(10**4, 0.02)]}
    full = {"commit": "abc123", "retrieval": [retrieval(10**5, -0.04)]}
    lines = _speed_lines(speed, full)
    assert lines == [  # 10^4 from the fast run; 10^5 replaced by the full retrieval run, which it names
        "| 10,000 items: FaissIndex overhead <= 10% over raw FAISS (speed suite, `fast` run) | +2.0% "
        "(identical results: True) | 1.02x | yes |",
        "| 100,000 items: FaissIndex overhead <= 10% over raw FAISS (speed suite, `full` retrieval run at "
        "`abc123`) | -4.0% (identical results: True) | 0.96x | yes |",
    ]


def test_headline_scale_rows_judge_speed_and_memory_at_the_largest_size() -> None:
    from run import _scale_lines

    row = {"items": 10**6, "users": 10**6, "users_per_second": 220.0, "batch_peak_rss_mib": 18 * 1024.0,
           "fit_peak_rss_mib": 17.5 * 1024}  # fmt: skip
    recbole = {"timing": {"SASRec/1000000": {"users_per_s_masked": 200.0, "commit": "abc123", "n_users": 1000}}}
    speed, memory = _scale_lines({"results": [{**row, "items": 10**5}, row]}, recbole)
    assert speed == (  # the peer's rate names the run that timed it
        "| 1,000,000 items: batch users/s >= 5x RecBole's | ours 220 users/s at 1,000,000 items x 1,000,000 users, "
        "SASRec (untrained) 200 (timed on 1,000 users at `abc123`); batch job peak RSS 18.0 GiB | 1.10x | no |"
    )
    assert memory == (
        "| 1,000,000 items x 1,000,000 users: the batch job completes within 20 GiB (peak RSS / 20 GiB) | batch job "
        "peak RSS 18.0 GiB at the default 512 MiB budget, fit process 17.5 GiB | 0.90x | yes |"
    )
    smaller = _scale_lines({"results": [{**row, "items": 10**5}]}, recbole)
    assert len(smaller) == 1 and "(largest run; the target is at 10^6)" in smaller[0]  # no verdict below 10^6


def test_stage_timer_sees_every_scored_row_and_leaves_recommend_as_shipped(tmp_path) -> None:
    """Timing the stages changes nothing in the recommendations, counts the rows the ranker scores (every
    candidate of every user) and takes its wrappers off again."""
    from conftest import TOPICS
    from polars.testing import assert_frame_equal
    from throughput import stage_split, stage_timer

    from recsys.models.ranker import RankerConfig
    from recsys.models.text_encoder import TextEncoderConfig
    from recsys.pipeline import Recommender, RecommenderConfig

    texts = [x for xs in TOPICS.values() for x in xs]
    items = pl.DataFrame({"item_id": np.arange(len(texts)), "text": texts})
    per_topic = len(texts) // len(TOPICS)
    events = [
        (10 * t + u, t * per_topic + (u + step) % per_topic, step)
        for t in range(len(TOPICS))
        for u in range(8)
        for step in range(4)
    ]
    interactions = pl.DataFrame(events, schema=["user_id", "item_id", "timestamp"], orient="row")
    config = RecommenderConfig(
        text=TextEncoderConfig(cache_dir=str(tmp_path), show_progress=False),
        n_candidates=8,
        n_transition_candidates=4,
        ranker=RankerConfig(min_child_samples=2, n_estimators=20),
        show_progress=False,
    )
    model = Recommender(config).fit(interactions, items)
    users = interactions["user_id"].unique().sort()
    before = model.recommend(users, k=3)
    with stage_timer(model) as totals:
        after = model.recommend(users, k=3)
    assert_frame_equal(after, before)
    assert totals["rows"] == model.candidates(users).height > users.len()
    assert min(totals["candidates"], totals["features"], totals["ranker"]) > 0
    assert "_candidates" not in vars(model) and "transform" not in vars(model.features_)
    assert "_serving_scores" not in vars(model)  # the wrappers are gone

    split = stage_split(model, users, repeats=2)
    assert split["rows_per_user"] == totals["rows"] / users.len()
    assert split["trees"] == model.ranker_.n_trees > 0
    seconds = split["seconds"]
    assert seconds["total"] == pytest.approx(sum(seconds[s] for s in ("candidates", "features", "ranker", "other")))


def test_run_child_reports_the_childs_own_peak_not_the_parents() -> None:
    """A child of a 400 MB parent that allocates 100 MB reports about 100 MB (plus the interpreter), not 400+;
    a failing child raises with the tail of its stderr."""
    import subprocess

    from foundation import run_child

    ballast = np.ones(400 * 2**20 // 8)  # 400 MiB held by this process while the child runs
    _, peak = run_child([sys.executable, "-c", "import time; a = bytearray(100 * 2**20); time.sleep(0.3)"], quiet=True)
    assert 100 <= peak < 250, peak
    assert ballast.sum() > 0
    with pytest.raises(subprocess.CalledProcessError) as failed:
        run_child([sys.executable, "-c", "import sys; sys.stderr.write('went wrong'); sys.exit(3)"], quiet=True)
    assert failed.value.returncode == 3 and "went wrong" in failed.value.stderr


def test_run_child_reports_progress_while_the_child_runs() -> None:
    from foundation import run_child

    calls: list[tuple[float, float | None]] = []
    seconds, _ = run_child(
        [sys.executable, "-c", "import time; time.sleep(0.5)"],
        quiet=True,
        progress=lambda s, peak: calls.append((s, peak)),
        every=0.1,
    )
    assert len(calls) >= 2 and all(0 < s <= seconds for s, _ in calls)
    assert [s for s, _ in calls] == sorted(s for s, _ in calls)


def test_scale_marks_a_stage_busy_from_its_own_load_or_else_the_batch_jobs() -> None:
    from scale import busy

    row = {"load_average": [2.7, 9.1], "fit_load_average": [1.1, 1.7], "encode_load_average": None}
    assert not busy(row, "fit_seconds", cores=2)  # its own reading: 1.7 <= 3
    assert busy(row, "encode_seconds", cores=2)  # no reading of its own: the batch job's 9.1 > 3
    assert busy(row, "batch_seconds", cores=2)
    assert not busy(row, "batch_seconds", cores=8)  # 9.1 <= 12
    assert not busy({}, "batch_seconds", cores=2)  # no reading at all: not marked
    chunks = {"encode_load_average": [0.4, 2.3], "encode_chunks": [{"load": 0.6}, {"load": 3.1}]}
    assert busy(chunks, "encode_seconds", cores=2)  # one chunk started beside other work
    assert not busy({**chunks, "encode_chunks": [{"load": 0.6}]}, "encode_seconds", cores=2)


def test_scale_counts_an_interrupted_batch_attempt_to_its_last_shard(tmp_path) -> None:
    import os

    from scale import settle_interrupted

    records = tmp_path / "_shards"
    records.mkdir()
    for name, when in (("old", 900.0), ("a", 1010.0), ("b", 1042.5)):
        (records / name).write_text("{}")
        os.utime(records / name, (when, when))
    attempts = [
        {"at": 500.0, "seconds": 80.0, "finished": True},  # a finished attempt keeps its own time
        {"at": 1000.0},  # killed: counted to its last shard (1042.5)
        {"at": 2000.0},  # killed before any shard: nothing counted
    ]
    settle_interrupted(attempts, records)
    assert [a["seconds"] for a in attempts] == [80.0, 42.5, 0.0]
    assert [a["finished"] for a in attempts] == [True, False, False]


def test_feature_group_set_reaches_a_feature_blocks_setting() -> None:
    """``--set features.relative.ranks=false`` turns the relative block's ranks off and leaves everything else;
    a key naming no block setting is an error, not a silent no-op."""
    from feature_groups import feature_config, variants

    from recsys.features.ranking import FeatureConfig

    shipped = FeatureConfig()
    changed = feature_config(shipped, {"features.relative.ranks": False})
    assert changed.relative.ranks is False and shipped.relative.ranks is True
    assert changed.relative.columns == shipped.relative.columns and changed.groups == shipped.groups
    tried = variants(shipped.groups, [], [], [], ["features.relative.ranks=false"], combined=False)
    assert tried["set features.relative.ranks=false"] == (shipped.groups, {}, {"features.relative.ranks": False})
    for key in ("features.relative.rank", "features.groups.x", "features.nothing.ranks"):
        with pytest.raises(ValueError, match="no block setting"):
            feature_config(shipped, {key: False})


def test_feature_group_variants_try_each_stage_setting_alone_then_everything() -> None:
    from feature_groups import variants

    shipped = ("interest", "cooccurrence")
    out = variants(shipped, ["learned"], [], ["num_leaves=31"], ["n_cooccurrence_candidates=100"])
    assert out["shipped"] == (shipped, {}, {})
    assert out["set n_cooccurrence_candidates=100"] == (shipped, {}, {"n_cooccurrence_candidates": 100})
    together = out["+ learned + ranker num_leaves=31 + set n_cooccurrence_candidates=100"]
    assert together == ((*shipped, "learned"), {"num_leaves": 31}, {"n_cooccurrence_candidates": 100})
    assert variants((), [], [], [], ["cutoff_statistics=per_cutoff"])["set cutoff_statistics=per_cutoff"] == (
        (),
        {},
        {"cutoff_statistics": "per_cutoff"},
    )
    both = variants(("cooccurrence",), [], [], [], ["cutoff_statistics=per_cutoff", "n_cooccurrence_candidates=100"])
    assert list(both) == [
        "shipped",
        "set cutoff_statistics=per_cutoff",
        "set n_cooccurrence_candidates=100",
        "set cutoff_statistics=per_cutoff + set n_cooccurrence_candidates=100",
    ]
    assert both[list(both)[-1]][2] == {"cutoff_statistics": "per_cutoff", "n_cooccurrence_candidates": 100}
    # a candidate quota whose feature group is not shipped is tried with that group (alone and together)
    ease = variants(("interest",), [], [], [], ["n_ease_candidates=50", "n_cutoffs=8"])
    assert ease["set n_ease_candidates=50 + collaborative"] == (
        ("interest", "collaborative"),
        {},
        {"n_ease_candidates": 50},
    )
    assert ease["set n_ease_candidates=50 + set n_cutoffs=8"][0] == ("interest", "collaborative")
    assert variants(("interest",), [], [], [], ["n_ease_candidates=0"])["set n_ease_candidates=0"][0] == ("interest",)
    same = variants(("interest",), ["collaborative"], [], [], ["n_ease_candidates=50"])  # together = the quota's row
    assert list(same) == ["shipped", "+ collaborative", "set n_ease_candidates=50 + collaborative"]
    values = variants((), [], [], ["num_leaves=7"], ["n_cutoffs=3", "n_cutoffs=8"])  # one key twice: no mix
    assert list(values) == ["shipped", "ranker num_leaves=7", "set n_cutoffs=3", "set n_cutoffs=8"]
    assert values["set n_cutoffs=3"][2] == {"n_cutoffs": 3} and values["set n_cutoffs=8"][2] == {"n_cutoffs": 8}
    pair = variants(("interest",), [], [], [], None, True, ["lexical", "brand"])  # together only, neither alone
    assert pair == {"shipped": (("interest",), {}, {}), "+ lexical + brand": (("interest", "lexical", "brand"), {}, {})}
    sources = variants(
        ("similarity",), [], [], [], ["n_similar_candidates=50", "n_lexical_candidates=50"], True, ["brand"]
    )
    assert list(sources) == [
        "shipped",
        "+ brand",
        "set n_similar_candidates=50",
        "set n_lexical_candidates=50 + lexical",  # the quota brings its group
        "+ brand + set n_similar_candidates=50 + set n_lexical_candidates=50",  # together with the settings
    ]
    assert sources["+ brand + set n_similar_candidates=50 + set n_lexical_candidates=50"][0] == (
        "similarity",
        "brand",
        "lexical",
    )
    tuned = variants(
        ("collaborative",),
        [],
        [],
        [],
        ["n_similar_candidates=50", "n_ease_candidates=50"],
        True,
        ["brand"],
        alone=False,
    )
    assert list(tuned) == ["shipped", "+ brand + set n_similar_candidates=50 + set n_ease_candidates=50"]
    assert tuned["+ brand + set n_similar_candidates=50 + set n_ease_candidates=50"] == (
        ("collaborative", "brand", "similarity"),
        {},
        {"n_similar_candidates": 50, "n_ease_candidates": 50},
    )
    with pytest.raises(ValueError, match="no --no-combined"):
        variants(("interest",), [], [], [], ["n_ease_candidates=50"], True, (), alone=False)  # one change: no mix
    alone = variants((), [], [], ["base_feature=retrieval_score"], ["memory_crossfit=5"], combined=False)
    assert list(alone) == ["shipped", "ranker base_feature=retrieval_score", "set memory_crossfit=5"]
    assert alone["ranker base_feature=retrieval_score"][1] == {"base_feature": "retrieval_score"}


def test_feature_group_table_keeps_validation_rows_apart_from_test_rows() -> None:
    from feature_groups import render

    def row(targets: str | None, variant: str, ndcg: float) -> dict[str, object]:
        metrics = {"ndcg@10": ndcg, "recall@10": 0.2, "ndcg@50": 0.3}
        out = {"dataset": "ml-100k", "seed": 0, "variant": variant, "metrics": metrics, "trees": 40}
        out |= {"command": "c", "commit": "k", "cpu": "cpu"}
        return out if targets is None else out | {"targets": targets}

    rows = [row(None, "shipped", 0.14), row(None, "ranker a=1", 0.15)]  # rows from before --targets: test
    rows += [row("valid", "shipped", 0.10), row("valid", "ranker a=1", 0.09)]
    text = render({"machine": {"cpu": "cpu", "cores": 2}, "results": rows})
    test_part, valid_part = text.split("### ml-100k, validation targets")
    assert "### ml-100k\n" in test_part and "| ranker a=1 | 1 | 0.1500 |" in test_part and "+0.0100" in test_part
    assert "| ranker a=1 | 1 | 0.0900 |" in valid_part and "-0.0100" in valid_part and "0.15" not in valid_part


def test_feature_group_rows_keep_the_baseline_they_were_paired_with() -> None:
    """A later run's shipped rows replace none of the earlier pairing: the earlier shipped rows (every seed)
    stay as ``shipped at <commit>`` and each variant's change is against its own run's shipped model."""
    from feature_groups import merge_rows, render

    def row(seed: int, variant: str, ndcg: float, commit: str, shipped: float | None) -> dict[str, object]:
        metrics = {"ndcg@10": ndcg, "recall@10": 0.2, "ndcg@50": 0.3}
        out = {"dataset": "d", "seed": seed, "variant": variant, "metrics": metrics, "trees": 40, "cpu": "cpu"}
        out |= {"command": "c", "commit": commit, "targets": "test"}
        return out if shipped is None else out | {"shipped_ndcg@10": shipped}

    old = [row(0, "shipped", 0.10, "a", 0.10), row(1, "shipped", 0.12, "a-dirty", 0.12)]
    old += [row(0, "x", 0.11, "a", None), row(0, "y", 0.13, "a", 0.10)]  # x: a row from before shipped_ndcg@10
    new = [row(0, "shipped", 0.20, "b", 0.20), row(0, "y", 0.19, "b", 0.20)]
    merged = merge_rows(old, new)
    assert sorted((r["variant"], r["seed"]) for r in merged) == [
        ("shipped", 0), ("shipped at a", 0), ("shipped at a", 1), ("x", 0), ("y", 0)
    ]  # fmt: skip
    text = render({"machine": {"cpu": "cpu", "cores": 2}, "results": merged})
    assert "| shipped | 1 | 0.2000 |" in text and "| shipped at a | 2 | 0.1100 |" in text
    assert "| y | 1 | 0.1900 | 0.2000 | 0.3000 | -0.0100 |" in text
    assert "| x | 1 | 0.1100 | 0.2000 | 0.3000 | +0.0100 |" in text  # no stored baseline: its run's shipped row
    assert text.index("| shipped |") < text.index("| y | 1 | 0.1900") < text.index("| shipped at a |")
    assert text.index("| shipped at a |") < text.index("| x |")  # each variant under the row it was paired with
    again = merge_rows(merged, [row(0, "shipped", 0.21, "b", 0.21)])  # the same commit re-run: replaced
    assert sorted(r["variant"] for r in again) == ["shipped", "shipped at a", "shipped at a", "x", "y"]


def test_feature_group_table_heads_variants_whose_shipped_row_is_gone() -> None:
    """Rows of a run whose shipped row was replaced before ``shipped at`` rows were kept print under a header that
    carries the baseline stored with their pairs, not under today's shipped row."""
    from feature_groups import render

    def row(seed: int, variant: str, ndcg: float, commit: str, shipped: float) -> dict[str, object]:
        metrics = {"ndcg@10": ndcg, "recall@10": 0.2, "ndcg@50": 0.3}
        out = {"dataset": "d", "seed": seed, "variant": variant, "metrics": metrics, "trees": 40, "cpu": "cpu"}
        return out | {"command": "c", "commit": commit, "targets": "test", "shipped_ndcg@10": shipped}

    rows = [row(0, "old", 0.13, "o-dirty", 0.12), row(1, "old", 0.15, "o", 0.14)]  # its shipped rows are gone
    rows += [row(0, "shipped", 0.20, "n", 0.20), row(0, "new", 0.22, "n", 0.20)]
    text = render({"machine": {"cpu": "cpu", "cores": 2}, "results": rows})
    lines = [line for line in text.splitlines() if line.startswith("| ") and "variant" not in line]
    assert lines == [
        "| shipped | 1 | 0.2000 | 0.2000 | 0.3000 | - | 40 |",
        "| new | 1 | 0.2200 | 0.2000 | 0.3000 | +0.0200 | 40 |",
        "| shipped at o (row since replaced) | 2 | 0.1300 | - | - | - | - |",
        "| old | 2 | 0.1400 | 0.2000 | 0.3000 | +0.0100, +0.0100 | 40/40 |",
    ]


def test_benchmark_outputs_do_not_make_a_checkout_dirty(tmp_path: Path) -> None:
    """A run's commit stays clean when only benchmark outputs changed (a second run after a first one), and
    turns ``-dirty`` when code changed."""
    from recsys.evaluation._harness import _git_commit

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    files = {"code.py": "x = 1\n", "benchmarks/README.md": "table\n", "benchmarks/results/r.json": "{}\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    clean = _git_commit.__wrapped__(str(tmp_path))
    (tmp_path / "benchmarks" / "README.md").write_text("new table\n")
    (tmp_path / "benchmarks" / "results" / "r.json").write_text('{"a": 1}\n')
    assert _git_commit.__wrapped__(str(tmp_path / "benchmarks")) == clean and not clean.endswith("-dirty")
    (tmp_path / "code.py").write_text("x = 2\n")
    assert _git_commit.__wrapped__(str(tmp_path)) == f"{clean}-dirty"


def test_in_memory_speeds_read_the_saved_seeds_pipeline_row_whatever_the_row_order(tmp_path: Path) -> None:
    """A rerun of seed 0 appends its rows after seed 1's: the throughput row still reads seed 0's full pipeline
    (the model the quality suite saved), never the encoder alone or another seed."""
    import quality
    from throughput import OURS, in_memory_speeds

    def row(model: str, seed: int, speed: float, protocol: str = "masked") -> dict[str, object]:
        return {"dataset": "d", "profile": "full", "protocol": protocol, "model": model, "seed": seed,
                "users_per_second": speed, "users": 10, "metrics": {"ndcg@10": speed / 1000}}  # fmt: skip

    rows = [
        row("ours (encoder alone)", 0, 1.0),
        row(OURS, 1, 2.0),
        row("RecBole SASRec (5-epoch cap)", 0, 3.0),
        row(OURS, 0, 4.0, protocol="unmasked"),
        row(OURS, 0, 5.0),
    ]
    path = tmp_path / "quality.json"
    path.write_text(json.dumps({"rows": rows}))
    speeds = in_memory_speeds("d", "full", path)
    assert OURS == quality.OURS
    assert (speeds["ours"]["seed"], speeds["ours"]["users_per_second"]) == (0, 5.0)
    assert speeds["recbole"]["users_per_second"] == 3.0
    assert in_memory_speeds("other", "full", path) == {}
