"""Daily updates without retraining: known answers for states, new items, save/load, bad input and the CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.data import DataConfig, DataWarning
from recsys.errors import ConfigError, DataError, ModelFormatError, SchemaError
from recsys.features.popularity import item_popularity
from recsys.features.ranking import FeatureConfig, RankingFeatures
from recsys.models.memory_encoder import MemoryEncoder, MemoryEncoderConfig, MemoryStates
from recsys.models.memory_net import MemoryNetConfig
from recsys.models.ranker import RankerConfig
from recsys.models.text_encoder import TextEncoderConfig
from recsys.pipeline import Recommender, RecommenderConfig
from recsys.update import update_recommender

# topic_interactions (conftest): users 0..8, four events each at times 100 * user + 0..3; items 0..17, six per topic
NEW_ITEMS = pl.DataFrame({"item_id": [100, 101], "text": ["puppy training guide book", "a guide to model rockets"]})
NEW_EVENTS = pl.DataFrame(
    {
        "user_id": [0, 0, 0, 900, 900],  # user 0 is known (4 events -> 7: crosses a segment boundary); 900 is new
        "item_id": [100, 1, 2, 101, 7],
        "timestamp": [10, 11, 11, 5000, 5001],
    }
)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("embeddings"))


def _config(cache_dir: str, **changes: object) -> RecommenderConfig:
    config = RecommenderConfig(
        text=TextEncoderConfig(cache_dir=cache_dir, show_progress=False),
        n_candidates=12,
        n_transition_candidates=6,
        ranker=RankerConfig(min_child_samples=2, n_estimators=30),
        show_progress=False,
    )
    return dataclasses.replace(config, **changes)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def memory_model(topic_interactions: pl.DataFrame, topic_items: pl.DataFrame, cache_dir: str) -> Recommender:
    """A tiny memory-encoder pipeline (segments of 4 events, 2 memory slots, 2 epochs; one encoder, trained on
    each user's first 3 events, instead of cross-fitting three: the update does not depend on how it was trained)."""
    memory = MemoryEncoderConfig(
        net=MemoryNetConfig(dim=32, n_heads=2, segment_len=4, n_memory=2), epochs=2, show_progress=False
    )
    config = _config(cache_dir, user_encoder="memory", memory=memory, memory_crossfit=0, memory_holdout=1)
    return Recommender(config).fit(topic_interactions, topic_items.drop("topic"))


@pytest.fixture(scope="module")
def zero_shot(topic_interactions: pl.DataFrame, topic_items: pl.DataFrame, cache_dir: str) -> Recommender:
    """A zero-shot pipeline whose ranker sees only the interest match (so its answers are known: on these toy
    rotations a ranker with every feature group learns the transitions alone, and ties everything else)."""
    config = _config(
        cache_dir, features=FeatureConfig(groups=("interest",)), n_transition_candidates=0, n_popularity_candidates=0
    )
    return Recommender(config).fit(topic_interactions, topic_items.drop("topic"))


@pytest.fixture(scope="module")
def updated(memory_model: Recommender) -> Recommender:
    return memory_model.update(NEW_EVENTS, NEW_ITEMS)


def _rows(states: MemoryStates, users: list[int]) -> list[int]:
    positions = {u: i for i, u in enumerate(states.user_ids.to_list())}
    return [positions[u] for u in users]


def _tails(states: MemoryStates) -> list[list[int]]:
    return [states.tail.items_of(u).tolist() for u in range(states.tail.n_users)]


# ------------------------------------------------------------------------------------------------ states
def test_a_memory_model_fitted_without_cross_fitting_retrains_its_ranker(memory_model: Recommender):
    """``with_features`` on ``memory_crossfit=0`` (the fast benchmark profile's setting) keeps the encoder and
    retrains the ranker; it cannot start cross-fitting (the encoder would then be trained differently)."""
    twin = memory_model.with_features(train_with_seen=True)
    assert twin.user_encoder_ is memory_model.user_encoder_ and twin.config.train_with_seen
    assert twin.recommend([0], k=3).height == 3
    with pytest.raises(ConfigError, match="memory_crossfit"):
        memory_model.with_features(memory_crossfit=2)


def test_stored_states_are_the_encoded_histories(memory_model: Recommender, zero_shot: Recommender):
    """The query vector of a fitted user comes from its stored state: the same vector as encoding its history."""
    encoder = memory_model.user_encoder_
    assert isinstance(encoder, MemoryEncoder)
    histories = memory_model._histories_of(memory_model.interactions_)
    assert np.array_equal(encoder.states(histories).embeddings, encoder.encode(histories))
    states = memory_model.states_
    assert states is not None and states.user_ids.to_list() == histories.user_ids.to_list()
    assert np.abs(states.embeddings - encoder.encode(histories)).max() <= 1e-5
    served = memory_model.candidates([0, 4, 8])  # from the stored states
    inline = memory_model.candidates([0, 4, 8], history=memory_model.interactions_)  # encoded again
    assert served.select("user_id", "item_id").equals(inline.select("user_id", "item_id"))
    assert np.allclose(served["retrieval_score"].to_numpy(), inline["retrieval_score"].to_numpy(), atol=1e-5)
    assert zero_shot.states_ is None, "zero-shot models keep their cheap mean and have no states"


def test_update_equals_encoding_old_and_new_events_again(updated: Recommender):
    encoder = updated.user_encoder_
    assert isinstance(encoder, MemoryEncoder) and updated.states_ is not None
    full = encoder.states(updated._histories_of(updated.interactions_))  # every event read again
    mine, theirs = _rows(updated.states_, [0, 900]), _rows(full, [0, 900])
    assert np.abs(updated.states_.embeddings[mine] - full.embeddings[theirs]).max() <= 1e-4
    assert np.abs(updated.states_.memory[mine] - full.memory[theirs]).max() <= 1e-4
    assert updated.states_.committed[mine].tolist() == [4, 0]  # user 0: 7 events = one segment + a tail of 3
    assert updated.states_.tail.lengths[mine].tolist() == [3, 2]
    queries = updated._stored_queries(pl.Series("user_id", [0, 900]), None)
    assert np.abs(queries - full.embeddings[theirs]).max() <= 1e-4


def test_only_the_affected_users_states_change(memory_model: Recommender, updated: Recommender):
    before, after = memory_model.states_, updated.states_
    assert before is not None and after is not None
    others = [u for u in before.user_ids.to_list() if u != 0]
    old, new = _rows(before, others), _rows(after, others)
    for name in ("memory", "committed", "prev_time", "embeddings"):
        assert np.array_equal(getattr(before, name)[old], getattr(after, name)[new]), name
    assert [_tails(before)[i] for i in old] == [_tails(after)[i] for i in new]
    [u0_before], [u0_after] = _rows(before, [0]), _rows(after, [0])
    assert not np.array_equal(before.embeddings[u0_before], after.embeddings[u0_after])
    assert after.user_ids.to_list() == [*before.user_ids.to_list(), 900]  # new users are appended


def test_update_returns_a_new_model_and_leaves_the_old_one(memory_model: Recommender, updated: Recommender):
    assert updated is not memory_model
    assert memory_model.interactions_.height == 36 and updated.interactions_.height == 41
    assert memory_model.vector_index_.n_items_ == 18 and updated.vector_index_.n_items_ == 20
    assert memory_model.item_vectors_.shape == (18, 32) and updated.item_vectors_.shape == (20, 32)
    assert len(memory_model.states_.user_ids) == 9
    assert updated.folds_ == {}
    assert updated.recommend([0, 900], k=3).height == 6


def test_statistics_are_refitted_and_weights_kept(memory_model: Recommender, updated: Recommender):
    events = updated.interactions_
    assert np.array_equal(updated.popularity_, item_popularity(events, updated.index_))
    assert updated.popularity_[18:].tolist() == [1.0, 1.0]  # items 100 and 101: one event each
    refit = RankingFeatures(updated.config.features).fit(updated._context(events))
    state, expected = updated.features_.state(), refit.state()
    assert state.keys() == expected.keys()
    assert all(np.array_equal(state[k], expected[k]) for k in state)
    assert updated.ranker_.to_texts() == memory_model.ranker_.to_texts(), "the ranker is not retrained"
    old, new = memory_model.user_encoder_.to_arrays(), updated.user_encoder_.to_arrays()
    for name, value in old.items():
        if name not in ("text", "net.items.residual.weight"):
            assert np.array_equal(value, new[name]), name
    assert np.array_equal(new["net.items.residual.weight"][18:], np.zeros((2, 32), np.float32))
    # the extended encoder gives the fitted items their old vectors and the new items their text projection
    assert np.abs(updated.user_encoder_.item_vectors() - updated.item_vectors_).max() <= 1e-5
    assert np.array_equal(updated.item_vectors_[:18], memory_model.item_vectors_)


# --------------------------------------------------------------------------------------------- new items
def test_a_new_item_is_retrieved_for_a_reader_of_its_twin(zero_shot: Recommender):
    """A new user who read 'puppy training guide' gets the new 'puppy training guide book' first: with the
    zero-shot encoder the user vector is that item's text vector, so the new item is the nearest unseen one."""
    twin = zero_shot.update(pl.DataFrame({"user_id": [901], "item_id": [1], "timestamp": [7]}), NEW_ITEMS)
    candidates = twin.candidates([901])
    assert candidates.filter(pl.col("retrieval_rank") == 1)["item_id"].to_list() == [100]
    assert 100 in twin.recommend([901], k=3)["item_id"].to_list()  # the ranker keeps it in the top 3
    idx, _ = twin.vector_index_.search(twin.item_vectors_[18:], 1)  # the index holds the new vectors
    assert idx[:, 0].tolist() == [18, 19]


def test_a_new_item_is_a_candidate_with_the_memory_encoder(memory_model: Recommender):
    twin = memory_model.update(pl.DataFrame({"user_id": [901], "item_id": [1], "timestamp": [7]}), NEW_ITEMS)
    top = twin.candidates([901]).filter(pl.col("retrieval_rank") <= 3)["item_id"].to_list()
    assert 100 in top


def test_items_only_and_known_items_are_skipped(memory_model: Recommender, topic_items: pl.DataFrame):
    catalogue = pl.concat([topic_items.select("item_id", "text"), NEW_ITEMS])  # the full catalogue, every day
    twin, report = update_recommender(memory_model, items=catalogue)
    assert (report.n_new_items, report.n_events, report.n_users) == (2, 0, 0)
    assert twin.items_["item_id"].to_list() == [*range(18), 100, 101]
    assert twin.states_ is memory_model.states_  # no events: no state moves
    _, again = update_recommender(twin, items=catalogue)
    assert again.n_new_items == 0


# ------------------------------------------------------------------------------------------ save / load
def test_saved_model_after_update_equals_the_updated_one(updated: Recommender, tmp_path: Path):
    loaded = Recommender.load(updated.save(tmp_path / "model"))
    assert loaded.recommend(None, k=3).equals(updated.recommend(None, k=3))
    for name in ("memory", "committed", "prev_time", "embeddings"):
        assert np.array_equal(getattr(loaded.states_, name), getattr(updated.states_, name)), name
    assert loaded.states_.user_ids.equals(updated.states_.user_ids)
    assert _tails(loaded.states_) == _tails(updated.states_)
    assert np.array_equal(loaded.item_vectors_, updated.item_vectors_)
    assert loaded.vector_index_.n_items_ == 20
    assert loaded.interactions_.equals(updated.interactions_)


def _rewrite_manifest(folder: Path) -> None:
    """Make the manifest list exactly the files present, with their sha256 (a consistent but altered model)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    names = sorted(p.name for p in folder.iterdir() if p.name != "manifest.json")
    manifest["files"] = {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in names}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_serving_stored_states_never_imports_torch(memory_model: Recommender, tmp_path: Path):
    """A fresh process that loads a saved memory-encoder model and serves its fitted users (from their stored
    states) never imports torch; a user given by a history builds the encoder, and gets the in-memory model's
    answer."""
    path = memory_model.save(tmp_path / "model")
    users = memory_model.interactions_["user_id"].unique(maintain_order=True).head(5).to_list()
    history = memory_model.interactions_.filter(pl.col("user_id") == users[0]).with_columns(pl.lit(-1).alias("user_id"))
    history.write_parquet(history_file := tmp_path / "history.parquet")
    script = f"""
import sys
import polars as pl
from recsys.pipeline import Recommender
model = Recommender.load({str(path)!r})
recs = model.recommend(pl.Series("user_id", {users!r}), k=5)
print(recs.height, "torch" in sys.modules, model.user_encoder_.built)
inline = model.recommend(pl.Series("user_id", [-1]), k=5, history=pl.read_parquet({str(history_file)!r}))
print(inline["item_id"].to_list(), "torch" in sys.modules, model.user_encoder_.built)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == f"{5 * len(users)} False False"
    expected = memory_model.recommend(pl.Series("user_id", [-1]), k=5, history=history)["item_id"].to_list()
    assert out[1] == f"{expected} True True"


def test_load_refuses_missing_or_corrupt_states(memory_model: Recommender, tmp_path: Path):
    path = memory_model.save(tmp_path / "model")
    states_file = path / "memory_states.safetensors"
    assert {"memory_states.safetensors", "memory_users.parquet"} <= set(
        json.loads((path / "manifest.json").read_text())["files"]
    )
    original = states_file.read_bytes()
    states_file.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(ModelFormatError, match=r"memory_states\.safetensors.*sha256"):
        Recommender.load(path)
    states_file.unlink()
    with pytest.raises(ModelFormatError, match=r"missing \['memory_states.safetensors'\]"):
        Recommender.load(path)
    (path / "memory_users.parquet").unlink()
    _rewrite_manifest(path)  # an older model: no states at all
    with pytest.raises(ModelFormatError, match="without its memory states"):
        Recommender.load(path)
    states_file.write_bytes(b"not a safetensors file")
    memory_model.states_.save(tmp_path / "ok")
    (path / "memory_users.parquet").write_bytes((tmp_path / "ok" / "memory_users.parquet").read_bytes())
    _rewrite_manifest(path)
    with pytest.raises(ModelFormatError, match="unreadable"):
        Recommender.load(path)
    encoder = memory_model.user_encoder_
    encoder.states(memory_model._histories_of(memory_model.interactions_.head(20))).save(path)  # other users
    _rewrite_manifest(path)
    with pytest.raises(ModelFormatError, match="do not match the model's events"):
        Recommender.load(path)


# ------------------------------------------------------------------------------------------- bad input
def _events(**columns: list[object]) -> pl.DataFrame:
    return pl.DataFrame(columns)


@pytest.mark.parametrize(
    ("events", "items", "error", "match"),
    [
        (_events(user_id=[0], item_id=[4242], timestamp=[50]), None, DataError, r"unknown item.*item_id.*4242"),
        (_events(user_id=[0], item_id=[100], timestamp=[50]), None, DataError, r"item_id.*100.*add these items"),
        (
            None,
            pl.DataFrame({"item_id": [4242], "text": [None]}, schema_overrides={"text": pl.String}),
            DataError,
            "text",
        ),
        (_events(user_id=[0], item_id=[1]), None, SchemaError, "timestamp"),
        (_events(user_id=[3], item_id=[1], timestamp=[5]), None, DataError, r"older.*user 3.*5 < 303"),
        (_events(user_id=[0], item_id=[3], timestamp=[3]), None, DataError, "already in the model"),
        (_events(user_id=["0"], item_id=[1], timestamp=[50]), None, SchemaError, "user_id.*String"),
        (_events(user_id=[0], item_id=[1.5], timestamp=[50]), None, SchemaError, "item_id"),
        (None, pl.DataFrame({"item_id": [0], "text": ["a different text"]}), DataError, r"another text.*\[0\]"),
        (None, pl.DataFrame({"id": [5000], "text": ["x"]}), SchemaError, "item_id"),
    ],
)
def test_bad_updates_are_typed_errors(
    zero_shot: Recommender, events: pl.DataFrame | None, items: pl.DataFrame | None, error: type, match: str
):
    with pytest.raises(error, match=match):
        zero_shot.update(events, items)


def test_nothing_to_update_weights_and_changed_text_policy(zero_shot: Recommender):
    with pytest.raises(ConfigError, match="nothing to update"):
        zero_shot.update()
    with pytest.raises(ConfigError, match="on_changed_text"):
        zero_shot.update(items=NEW_ITEMS, on_changed_text="replace")  # type: ignore[arg-type]
    weighted = _events(user_id=[0], item_id=[1], timestamp=[50], rating=[4.0])
    with pytest.raises(SchemaError, match="without a 'weight' column"):
        zero_shot.update(weighted, data=DataConfig(weight_column="rating"))
    changed = pl.DataFrame({"item_id": [0, 100], "text": ["a different text", "puppy training guide book"]})
    with pytest.warns(DataWarning, match="kept the model's text of 1"):
        twin = zero_shot.update(items=changed, on_changed_text="keep")
    assert twin.items_["text"][0] == zero_shot.items_["text"][0] and twin.items_.height == 19


def test_events_at_the_last_time_are_appended_and_a_replay_is_refused(zero_shot: Recommender):
    once = zero_shot.update(_events(user_id=[0], item_id=[4], timestamp=[3]))  # user 0's last time is 3
    assert once.interactions_.filter(pl.col("user_id") == 0)["item_id"].to_list()[-1] == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match="applied before"):
            once.update(_events(user_id=[0], item_id=[4], timestamp=[3]))


# ------------------------------------------------------------------------------------------------- CLI
def _cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {"RECSYS_CACHE_DIR": str(home), "PATH": "/usr/bin:/bin", "HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "recsys.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_cli_update_round_trip(memory_model: Recommender, updated: Recommender, tmp_path: Path):
    model = memory_model.save(tmp_path / "model")
    NEW_EVENTS.write_csv(tmp_path / "events.csv")
    NEW_ITEMS.write_csv(tmp_path / "items.csv")
    manifest = (model / "manifest.json").read_bytes()
    args = ("update", "--model", str(model), "--interactions", str(tmp_path / "events.csv"))
    done = _cli(*args, "--items", str(tmp_path / "items.csv"), "--out", str(tmp_path / "next"), home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "5 new event(s) for 2 user(s) (1 new), 2 new item(s)" in done.stdout
    assert (model / "manifest.json").read_bytes() == manifest, "--out leaves the model alone"
    loaded = Recommender.load(tmp_path / "next")
    assert loaded.interactions_.equals(updated.interactions_)
    assert np.abs(loaded.item_vectors_ - updated.item_vectors_).max() <= 1e-5
    assert np.abs(loaded.states_.embeddings - updated.states_.embeddings).max() <= 1e-5
    # in place (the default), then the same events again: refused with exit 2 and one line, the model intact
    done = _cli(*args, "--items", str(tmp_path / "items.csv"), home=tmp_path)
    assert done.returncode == 0, done.stderr
    replaced = (model / "manifest.json").read_bytes()
    assert replaced != manifest and Recommender.load(model).index_.height == 20
    again = _cli(*args, home=tmp_path)
    assert again.returncode == 2 and "already in the model" in again.stderr and "Traceback" not in again.stderr
    assert (model / "manifest.json").read_bytes() == replaced


def test_cli_update_help(tmp_path: Path):
    done = _cli("update", "--help", home=tmp_path)
    assert done.returncode == 0
    for option in ("--model", "--interactions", "--items", "--out", "--keep-changed-text", "atomically", "Example"):
        assert option in done.stdout
