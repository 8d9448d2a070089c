"""The RecBole export (benchmarks/recbole_peer.py) reproduces our split exactly: RecBole trains on our train events,
validates on our valid targets and is tested on our test targets, with our train+valid events as the history."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.data import Dataset
from recsys.errors import ConfigError
from recsys.evaluation import make_split

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import recbole_peer


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    """String ids, users of 1 to 9 events (those under 3 stay wholly in train), tied timestamps."""
    rng = np.random.default_rng(7)
    rows = []
    for u in range(12):
        n = 1 + u % 9
        for pos, item in enumerate(rng.choice(20, size=n, replace=False)):
            rows.append((f"u{u}", f"i{item}", 100 + pos // 2))  # pairs of events share a timestamp
    frame = pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp"], orient="row")
    items = pl.DataFrame({"item_id": [f"i{i}" for i in range(25)], "text": [f"item {i}" for i in range(25)]})
    return Dataset.from_frames(frame, items, name="tiny")


def read_part(export: recbole_peer.RecboleExport, part: str) -> list[tuple[str, tuple[str, ...], str]]:
    """``(user_id, item list, item_id)`` rows of ``NAME.part.inter`` in our ids, in file order."""
    frame = pl.read_csv(export.data_path / export.name / f"{export.name}.{part}.inter", separator="\t")
    assert frame.columns == ["user_id:token", "item_id_list:token_seq", "item_id:token"]
    user = dict(zip(export.users["token"], export.users["user_id"], strict=True))
    item = dict(zip(export.items["token"], export.items["item_id"], strict=True))
    return [
        (user[u], tuple(item[int(t)] for t in lst.split(" ")), item[i])
        for u, lst, i in frame.iter_rows()  # type: ignore[misc]
    ]


def sequences(frame: pl.DataFrame) -> dict[str, list[str]]:
    return {u: list(g["item_id"]) for (u,), g in frame.group_by("user_id", maintain_order=True)}


@pytest.mark.parametrize("max_len", [100, 2])
def test_export_reproduces_the_split(dataset: Dataset, tmp_path: Path, max_len: int) -> None:
    export = recbole_peer.export_split(dataset, "loo", tmp_path, max_seq_len=max_len)
    split = make_split(dataset, "loo")
    train, history = sequences(split.train), sequences(split.history_for_test())
    expected_train = [(u, tuple(s[max(0, i - max_len) : i]), s[i]) for u, s in train.items() for i in range(1, len(s))]
    assert read_part(export, "train") == expected_train
    expected_valid = [(u, tuple(train[u][-max_len:]), i) for u, i in split.valid.select("user_id", "item_id").rows()]
    assert read_part(export, "valid") == expected_valid
    expected_test = [(u, tuple(history[u][-max_len:]), i) for u, i in split.test.select("user_id", "item_id").rows()]
    assert read_part(export, "test") == expected_test
    assert len(expected_test) == split.test["user_id"].n_unique() > 0


def test_history_file_is_train_plus_valid_and_catalogue_is_complete(dataset: Dataset, tmp_path: Path) -> None:
    export = recbole_peer.export_split(dataset, "loo", tmp_path, max_seq_len=3)
    folder = export.data_path / export.name
    item = dict(zip(export.items["token"], export.items["item_id"], strict=True))
    user = dict(zip(export.users["token"], export.users["user_id"], strict=True))
    lines = (folder / f"{export.name}.history.tsv").read_text().splitlines()
    masked = {user[int(u)]: {item[int(t)] for t in items.split(" ")} for u, items in (ln.split("\t") for ln in lines)}
    history = make_split(dataset, "loo").history_for_test()
    test_users = set(make_split(dataset, "loo").test["user_id"])
    assert masked == {u: set(s) for u, s in sequences(history).items() if u in test_users}
    catalogue = pl.read_csv(folder / f"{export.name}.item")
    assert catalogue["item_id:token"].to_list() == list(range(dataset.items.height))


def test_bad_max_seq_len_is_a_config_error(dataset: Dataset, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_seq_len"):
        recbole_peer.export_split(dataset, "loo", tmp_path, max_seq_len=0)


@pytest.mark.slow
def test_untrained_full_sort_timing_runs_in_recbole_venv() -> None:
    """Needs benchmarks/.venv-recbole (created on first use, several minutes)."""
    result = recbole_peer.time_full_sort(n_items=500, n_users=40, batch_users=16)
    assert result["n_items_recbole"] == 500
    assert result["users_per_s_masked"] > 0
