"""Approximate FAISS indexes (IVF, HNSW): recall against the exact index, exactness at full probe, settings,
save/load (alone and inside a saved Recommender) and small catalogues."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import TOPICS

from recsys.errors import ConfigError, ModelFormatError
from recsys.models.ranker import RankerConfig
from recsys.models.text_encoder import TextEncoderConfig
from recsys.pipeline import Recommender, RecommenderConfig
from recsys.retrieval import ExactIndex, FaissIndex, IndexConfig

IVF = IndexConfig(kind="ivf", nprobe=8)
HNSW = IndexConfig(kind="hnsw", hnsw_m=16, ef_construction=80, ef_search=64)


def clustered(rng: np.random.Generator, n: int, dim: int = 32, n_clusters: int = 100) -> np.ndarray:
    """Unit vectors around ``n_clusters`` random centres (float32, shape (n, dim))."""
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, n_clusters, n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """5,000 clustered items, 300 queries near items, and the exact top 10 of each query."""
    rng = np.random.default_rng(11)
    items = clustered(rng, 5000)
    queries = items[rng.choice(5000, 300, replace=False)] + 0.3 * rng.standard_normal((300, 32)).astype(np.float32)
    exact, _ = FaissIndex().fit(items).search(queries, 10)
    return items, queries, exact


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact, strict=True)]))


@pytest.mark.parametrize("config", [IVF, HNSW], ids=["ivf", "hnsw"])
def test_recall_at_10_against_flat(config: IndexConfig, data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    items, queries, exact = data
    index = FaissIndex(config).fit(items)
    assert index.kind_ == config.kind
    assert recall(index.search(queries, 10)[0], exact) >= 0.9


def test_ivf_defaults_derive_nlist_from_the_catalogue(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    items, _, _ = data
    assert FaissIndex(IVF).fit(items).index_.nlist == 128  # min(5000 // 39, 4 * sqrt(5000))
    assert IndexConfig().resolved_nlist(100_000) == 1265 and IndexConfig().resolved_nlist(10**6) == 4000
    assert IndexConfig().resolved_nlist(10) == 1


def test_ivf_probing_every_cell_is_exact(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    items, queries, _ = data
    config = IndexConfig(kind="ivf", nlist=20, nprobe=20)
    idx, scores = FaissIndex(config).fit(items).search(queries, 10)
    exact_idx, exact_scores = ExactIndex().fit(items).search(queries, 10)
    np.testing.assert_array_equal(idx, exact_idx)
    np.testing.assert_allclose(scores, exact_scores, atol=1e-5)


def test_more_probes_never_lower_recall(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    items, queries, exact = data
    configs = [IndexConfig(kind="ivf", nlist=64, nprobe=p) for p in (1, 4, 16)]
    recalls = [recall(FaissIndex(c).fit(items).search(queries, 10)[0], exact) for c in configs]
    assert recalls == sorted(recalls) and recalls[0] < recalls[-1]


@pytest.mark.parametrize("config", [IVF, HNSW], ids=["ivf", "hnsw"])
def test_save_load_round_trip_keeps_search_settings(
    config: IndexConfig, data: tuple[np.ndarray, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    items, queries, _ = data
    index = FaissIndex(config).fit(items)
    before = index.search(queries, 10)
    index.save(tmp_path / "ann.faiss")
    loaded = FaissIndex.load(tmp_path / "ann.faiss", config)
    assert loaded.kind_ == config.kind
    np.testing.assert_array_equal(loaded.search(queries, 10)[0], before[0])
    np.testing.assert_array_equal(loaded.search(queries, 10)[1], before[1])
    if config.kind == "ivf":
        assert loaded.index_.nprobe == 8
        wider = FaissIndex.load(tmp_path / "ann.faiss", dataclasses.replace(config, nprobe=100))
        assert wider.index_.nprobe == 100  # the config's search setting wins over the file's
    else:
        assert loaded.index_.hnsw.efSearch == 64


def test_ivf_is_seeded(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    items, queries, _ = data
    one = FaissIndex(IVF).fit(items).search(queries, 10)
    two = FaissIndex(IVF).fit(items).search(queries, 10)
    np.testing.assert_array_equal(one[0], two[0])


@pytest.mark.parametrize("n_items", [0, 1, 3, 40])
@pytest.mark.parametrize("kind", ["ivf", "hnsw", "auto"])
def test_small_catalogues_are_searched_exactly(n_items: int, kind: str) -> None:
    rng = np.random.default_rng(n_items)
    items, queries = clustered(rng, n_items, dim=8), clustered(rng, 5, dim=8)
    config = IndexConfig(kind=kind, nprobe=1000)  # type: ignore[arg-type]
    idx, scores = FaissIndex(config).fit(items).search(queries, 5)
    exact_idx, exact_scores = ExactIndex().fit(items).search(queries, 5)
    np.testing.assert_array_equal(idx, exact_idx)
    np.testing.assert_allclose(scores, exact_scores, atol=1e-5)


def test_nlist_above_the_items_is_clamped_with_a_warning() -> None:
    items = clustered(np.random.default_rng(0), 10, dim=8)
    with pytest.warns(UserWarning, match="nlist=50 exceeds the 10 items"):
        index = FaissIndex(IndexConfig(kind="ivf", nlist=50)).fit(items)
    assert index.index_.nlist == 10


def test_auto_is_flat_below_the_threshold_and_ivf_above(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    items, _, _ = data
    assert FaissIndex(IndexConfig(kind="auto")).fit(items).kind_ == "flat"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert FaissIndex(IndexConfig(kind="auto", auto_min_items=1000)).fit(items).kind_ == "ivf"


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"kind": "lsh"}, "kind"),
        ({"nlist": 0}, "nlist"),
        ({"nlist": 2.5}, "nlist"),
        ({"nprobe": 0}, "nprobe"),
        ({"nprobe": True}, "nprobe"),
        ({"max_train_points": 0}, "max_train_points"),
        ({"nlist": 100, "max_train_points": 50}, "max_train_points"),
        ({"hnsw_m": 1}, "hnsw_m"),
        ({"ef_construction": 0}, "ef_construction"),
        ({"ef_search": -1}, "ef_search"),
        ({"auto_min_items": 0}, "auto_min_items"),
        ({"seed": -1}, "seed"),
        ({"n_threads": -2}, "n_threads"),
        ({"batch_size": "big"}, "batch_size"),
    ],
)
def test_bad_settings_are_config_errors_naming_the_field(settings: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=rf"IndexConfig\.{field}="):
        IndexConfig(**settings)  # type: ignore[arg-type]


def test_loading_an_index_kind_we_do_not_build_is_refused(tmp_path: Path) -> None:
    import faiss

    faiss.write_index(faiss.IndexFlatL2(4), str(tmp_path / "l2.faiss"))
    with pytest.raises(ModelFormatError, match="IndexFlatL2"):
        FaissIndex.load(tmp_path / "l2.faiss")


def test_recommender_with_an_ivf_index_survives_save_and_load(tmp_path: Path) -> None:
    """Regression: the IndexConfig fields must round-trip through config.json and nprobe must be re-applied."""
    rows = [(i, text) for i, text in enumerate(x for xs in TOPICS.values() for x in xs)]
    items = pl.DataFrame(rows, schema={"item_id": pl.Int64, "text": pl.String}, orient="row")
    events = [(u, (u * 7 + s) % items.height, s) for u in range(30) for s in range(5)]
    interactions = pl.DataFrame(
        events, schema={"user_id": pl.Int64, "item_id": pl.Int64, "timestamp": pl.Int64}, orient="row"
    )
    index = IndexConfig(kind="ivf", nlist=3, nprobe=2, max_train_points=18, seed=3)
    config = RecommenderConfig(
        text=TextEncoderConfig(cache_dir=str(tmp_path / "cache"), show_progress=False),
        index=index,
        n_candidates=8,
        n_transition_candidates=4,
        ranker=RankerConfig(min_child_samples=2, n_estimators=10),
        ranker_folds=0,
        show_progress=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Recommender(config).fit(interactions, items)
    loaded = Recommender.load(model.save(tmp_path / "model"))
    assert loaded.config.index == index
    assert json.loads((tmp_path / "model" / "config.json").read_text())["index"]["nprobe"] == 2
    assert loaded.vector_index_ is not None and loaded.vector_index_.kind_ == "ivf"
    assert loaded.vector_index_.index_.nprobe == 2
    assert loaded.recommend(None, k=3).equals(model.recommend(None, k=3))
