"""Tests of ``recsys.datasets``: the registry, data-folder resolution and every loader on the real files."""

from __future__ import annotations

import logging
import shutil
from importlib import resources
from pathlib import Path

import polars as pl
import pytest
from conftest import require_data

from recsys.data import DataConfig, Dataset, DataWarning
from recsys.datasets import DATA_DIR_ENV, available_datasets, load_dataset, load_mind
from recsys.errors import ConfigError, DataError, DatasetNotFoundError

NAMES = [
    "amazon-scientific-lcrec",
    "amazon-scientific-unisrec",
    "jester5k",
    "lastfm-llara",
    "mind-small-fragment",
    "ml-100k",
    "ml-latest-small",
]
UNISREC = "amazon-scientific-unisrec"
UNISREC_FILES = [f"{UNISREC}/Scientific.{s}.inter" for s in ("train", "valid", "test")] + [
    f"{UNISREC}/Scientific.text",
    f"{UNISREC}/Scientific.item2index",
]


@pytest.fixture
def no_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty working directory with no RECSYS_DATA_DIR, so no data folder can be found."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.chdir(work)
    return work


def sizes(dataset: Dataset) -> tuple[int, int, int]:
    return dataset.interactions["user_id"].n_unique(), dataset.items.height, dataset.interactions.height


def text_of(dataset: Dataset, item_id: object) -> str:
    return dataset.items.filter(pl.col("item_id") == item_id)["text"].item()


# -- registry and data-folder resolution ------------------------------------------------------------


def test_available_datasets_lists_every_loader() -> None:
    assert available_datasets() == NAMES


def test_unknown_name_lists_the_available_names() -> None:
    with pytest.raises(ConfigError, match="no-such-set") as err:
        load_dataset("no-such-set")
    assert all(name in str(err.value) for name in NAMES)


def test_unknown_option_lists_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match="with_tags"):
        load_dataset("ml-latest-small", with_tagz=True)


def test_missing_file_names_every_path_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("ml-100k", data_dir=tmp_path)
    message = str(err.value)
    assert str(tmp_path / "ml-100k" / "ml-100k.inter") in message
    assert str(tmp_path / "ml-100k" / "ml-100k.item") in message
    assert "data_dir" in message and DATA_DIR_ENV in message
    assert isinstance(err.value, FileNotFoundError)


def test_missing_file_lists_both_default_folders(no_data: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("jester5k")
    message = str(err.value)
    assert str(no_data / "shared" / "data" / "jester5k" / "jokes.tsv") in message
    assert str(no_data / ".." / "shared" / "data" / "jester5k" / "jokes.tsv") in message
    assert DATA_DIR_ENV in message


def test_environment_variable_is_searched(no_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(no_data / "elsewhere"))
    with pytest.raises(DatasetNotFoundError, match="elsewhere"):
        load_dataset("lastfm-llara")


@pytest.mark.realdata
def test_environment_variable_finds_the_data(no_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = require_data("ml-100k/ml-100k.inter", "ml-100k/ml-100k.item")
    monkeypatch.setenv(DATA_DIR_ENV, str(data))
    assert sizes(load_dataset("ml-100k")) == (943, 1682, 100_000)


def test_load_mind_missing_folder_names_the_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"news\.tsv"):
        load_mind(tmp_path / "nowhere")


# -- ml-latest-small, embedded ----------------------------------------------------------------------


def test_ml_latest_small_needs_no_data_folder(no_data: Path) -> None:
    dataset = load_dataset("ml-latest-small")
    assert sizes(dataset) == (610, 9742, 100_836)
    assert dataset.has_time and not dataset.has_published_split
    assert dataset.interactions.schema["item_id"] == pl.Int64
    assert dataset.interactions.schema["weight"] == pl.Float32
    assert dataset.interactions["weight"].min() == 0.5 and dataset.interactions["weight"].max() == 5.0
    assert text_of(dataset, 1) == "Toy Story (1995). Adventure, Animation, Children, Comedy, Fantasy"


def test_ml_latest_small_with_tags_adds_unique_tags(no_data: Path) -> None:
    dataset = load_dataset("ml-latest-small", with_tags=True)
    assert sizes(dataset) == (610, 9742, 100_836)
    tags = dataset.items.filter(pl.col("item_id") == 1)["tags"].item().to_list()
    assert "pixar" in tags and len({t.lower() for t in tags}) == len(tags)
    assert text_of(dataset, 1).endswith(", ".join(tags))


def test_embedded_files_ship_with_the_licence() -> None:
    folder = resources.files("recsys.datasets") / "embedded" / "ml-latest-small"
    for name in ("ratings.parquet", "movies.parquet", "tags.parquet", "README.txt"):
        assert (folder / name).is_file(), name
    assert "usage license" in (folder / "README.txt").read_text(encoding="utf-8").lower()


@pytest.mark.realdata
def test_embedded_files_equal_a_fresh_build(tmp_path: Path) -> None:
    """Guards that the shipped Parquet files are exactly the GroupLens CSVs (rebuild and compare)."""
    from recsys.datasets._build_embedded import EMBEDDED_DIR, build

    names = ("ratings.csv", "movies.csv", "tags.csv", "README.txt")
    data = require_data(*(f"ml-latest-small/{n}" for n in names))
    counts = build(data / "ml-latest-small", tmp_path)
    assert counts == {"ratings": 100_836, "movies": 9742, "tags": 3683}
    for table in counts:
        fresh = pl.read_parquet(tmp_path / f"{table}.parquet")
        assert fresh.equals(pl.read_parquet(EMBEDDED_DIR / f"{table}.parquet")), table


# -- datasets read from the data folder -------------------------------------------------------------


@pytest.mark.realdata
def test_ml_100k() -> None:
    data = require_data("ml-100k/ml-100k.inter", "ml-100k/ml-100k.item")
    dataset = load_dataset("ml-100k", data_dir=data)
    assert sizes(dataset) == (943, 1682, 100_000)
    assert dataset.has_time
    assert dataset.interactions["weight"].unique().sort().to_list() == [1, 2, 3, 4, 5]
    assert text_of(dataset, 1) == "Toy Story. 1995. Animation, Children's, Comedy"


def read_benchmark(path: Path) -> pl.DataFrame:
    """An independent reader of a RecBole benchmark file: ``user_id, hist (list[i64]), target``."""
    raw = pl.read_csv(path, separator="\t", quote_char=None, infer_schema=False)
    return raw.select(
        pl.col("user_id:token").cast(pl.Int64).alias("user_id"),
        pl.col("item_id_list:token_seq").str.split(" ").cast(pl.List(pl.Int64)).alias("hist"),
        pl.col("item_id:token").cast(pl.Int64).alias("target"),
    )


def mismatches(sequences: pl.DataFrame, rows: pl.DataFrame, back: int) -> pl.DataFrame:
    """Rows whose target is not event ``n - back`` or whose history is not the (<= 50) events before it."""
    p = pl.col("n") - back
    joined = rows.join(sequences, on="user_id", how="left")
    return joined.filter(
        (pl.col("items").list.get(p, null_on_oob=True) != pl.col("target")).fill_null(True)
        | (pl.col("items").list.slice(0, p).list.tail(50) != pl.col("hist"))
        | (pl.col("splits").list.get(p) != ("test" if back == 1 else "valid"))
    )


@pytest.mark.realdata
def test_unisrec_keeps_the_published_split_exactly() -> None:
    data = require_data(*UNISREC_FILES)
    dataset = load_dataset(UNISREC, data_dir=data)
    assert sizes(dataset) == (8442, 4385, 59_427)
    assert not dataset.has_time and dataset.has_published_split
    assert dataset.interactions["split"].value_counts().sort("split").rows() == [
        ("test", 8442),
        ("train", 42_543),
        ("valid", 8442),
    ]
    sequences = dataset.interactions.group_by("user_id").agg(
        pl.col("item_id").alias("items"), pl.col("split").alias("splits"), pl.len().alias("n")
    )
    test = read_benchmark(data / UNISREC / "Scientific.test.inter")
    valid = read_benchmark(data / UNISREC / "Scientific.valid.inter")
    assert test.height == valid.height == 8442
    assert mismatches(sequences, test, back=1).height == 0
    assert mismatches(sequences, valid, back=2).height == 0
    assert sequences.filter(pl.col("splits").list.slice(0, pl.col("n") - 2).list.contains("valid")).height == 0


@pytest.mark.realdata
def test_unisrec_recovers_histories_truncated_to_50() -> None:
    dataset = load_dataset(UNISREC, data_dir=require_data(*UNISREC_FILES))
    lengths = dataset.interactions.group_by("user_id").len().filter(pl.col("len") > 51).sort("user_id")
    assert lengths.rows() == [(247, 80), (1412, 60), (1570, 56)]


@pytest.mark.realdata
def test_unisrec_reads_brand_and_category_path_out_of_the_text() -> None:
    """Every text is ``title. category path. brand.``; a brand may hold dots, a category path may be empty."""
    items = load_dataset(UNISREC, data_dir=require_data(*UNISREC_FILES)).items
    assert items.schema["brand"] == pl.String and items.schema["categories"] == pl.List(pl.String)
    assert items["brand"].null_count() == 12 and items["brand"].n_unique() == 1561  # 1,560 brands and null
    assert items["categories"].list.len().value_counts().sort("categories").rows() == [(0, 134), (1, 4251)]
    row = items.filter(pl.col("text").str.starts_with("Gorilla Original Gorilla Glue")).row(0, named=True)
    assert row["brand"] == "Gorilla"
    assert row["categories"] == ["Industrial & Scientific Tapes, Adhesives & Sealants Urethane Adhesives"]
    assert items.filter(pl.col("brand") == "Mr. Heater").height > 0
    rebuilt = items.select(
        pl.format("{}. {}. ", pl.col("categories").list.first().fill_null(""), pl.col("brand").fill_null(""))
    ).to_series()
    assert (items["text"].str.strip_chars().str.len_chars() > 0).all()
    assert items["text"].str.ends_with(rebuilt.str.strip_chars_end()).mean() > 0.99  # the tail is what was read


@pytest.mark.realdata
def test_unisrec_rejects_a_valid_row_that_disagrees_with_the_test_row(tmp_path: Path) -> None:
    data = require_data(*UNISREC_FILES)
    shutil.copytree(data / UNISREC, tmp_path / UNISREC)
    path = tmp_path / UNISREC / "Scientific.valid.inter"
    lines = path.read_text().splitlines()
    user, hist, target = lines[1].split("\t")
    lines[1] = "\t".join([user, hist, str((int(target) + 1) % 4385)])
    path.chmod(0o644)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="valid history is not the test history"):
        load_dataset(UNISREC, data_dir=tmp_path)


@pytest.mark.realdata
def test_lcrec() -> None:
    data = require_data("amazon-scientific-lcrec/Scientific.inter.json", "amazon-scientific-lcrec/Scientific.item.json")
    dataset = load_dataset("amazon-scientific-lcrec", data_dir=data)
    assert sizes(dataset) == (8317, 4344, 58_492)
    assert not dataset.has_time
    empty = dataset.items.filter(pl.col("description").str.strip_chars() == "")
    assert empty.height == 123 and (empty["text"].str.len_chars() > 0).all()


@pytest.mark.realdata
def test_lastfm_pseudo_users() -> None:
    names = ("train_data.jsonl", "val_data.jsonl", "test_data.jsonl", "id2name.txt")
    data = require_data(*(f"lastfm-llara/{n}" for n in names))
    dataset = load_dataset("lastfm-llara", data_dir=data)
    inter = dataset.interactions.with_columns(pl.col("user_id").str.extract(r"^(\w+)-\d+$").alias("kind"))
    users = dict(inter.group_by("kind").agg(pl.col("user_id").n_unique()).rows())
    assert users == {"train": 976, "valid": 122, "test": 122}
    assert dataset.items.height == 4606
    assert inter.filter(pl.col("kind") == "train").height == 50_800  # one event per training line
    last = inter.group_by("user_id").agg(pl.col("split").last(), pl.col("split").n_unique().alias("n"))
    assert dict(last.group_by("split").len().rows()) == {"train": 976, "valid": 122, "test": 122}
    val = pl.read_ndjson(data / "lastfm-llara" / "val_data.jsonl").with_row_index("i")
    expected = val.select(
        pl.format("valid-{}", "i").alias("user_id"),
        pl.col("seq").list.concat(pl.concat_list("next")).alias("want"),
    )
    got = inter.group_by("user_id").agg(pl.col("item_id").alias("got"))
    assert expected.join(got, on="user_id").filter(pl.col("want") != pl.col("got")).height == 0


@pytest.mark.realdata
def test_jester5k() -> None:
    data = require_data("jester5k/ratings.tsv.gz", "jester5k/jokes.tsv")
    dataset = load_dataset("jester5k", data_dir=data)
    assert sizes(dataset) == (5000, 100, 363_209)
    assert dataset.interactions.schema["user_id"] == pl.String and not dataset.has_time
    weights = dataset.interactions["weight"]
    assert weights.min() >= -10 and weights.max() <= 10


@pytest.mark.realdata
def test_mind_fragment_reports_dropped_unknown_items() -> None:
    data = require_data("mind-small-fragment/news.tsv", "mind-small-fragment/behaviors.tsv")
    with pytest.warns(DataWarning, match="unknown item"):
        dataset = load_dataset("mind-small-fragment", data_dir=data)
    assert dataset.report.dropped["unknown item (not in the items table)"] > 0
    assert dataset.items.height == 2000 and dataset.has_time
    assert set(dataset.interactions["event"].unique()) == {"history", "click"}
    behaviors = pl.read_csv(
        data / "mind-small-fragment" / "behaviors.tsv",
        separator="\t",
        has_header=False,
        quote_char=None,
        new_columns=["impression", "user_id", "time", "history", "impressions"],
    )
    catalogue = dataset.items["item_id"].implode()
    histories = behaviors.select("user_id", pl.col("history").str.split(" ")).unique().explode("history")
    known = histories.filter(pl.col("history").is_in(catalogue))
    events = dataset.interactions.filter(pl.col("event") == "history")
    assert events.height == known.height  # each user's history once, although repeated on every impression
    with pytest.raises(DataError, match="unknown item"):
        load_mind(data / "mind-small-fragment", on_invalid="raise")


def test_load_mind_on_a_tiny_folder(tmp_path: Path) -> None:
    """History placed one second apart before the first impression, repeated history rows deduplicated."""
    news = ["N1\tnews\tpolitics\tTitle one\tAbs\turl\t[]\t[]", "N2\tsports\tgolf\tTitle two\t\turl\t[]\t[]"]
    behaviors = [
        "1\tU1\t11/12/2019 2:14:46 PM\tN1\tN2-1 N1-0",
        "2\tU1\t11/12/2019 3:00:00 PM\tN1\tN2-0",
        "3\tU2\t11/13/2019 9:00:00 AM\t\tN1-1",
    ]
    (tmp_path / "news.tsv").write_text("\n".join(news) + "\n")
    (tmp_path / "behaviors.tsv").write_text("\n".join(behaviors) + "\n")
    dataset = load_mind(tmp_path, name="tiny")
    rows = dataset.interactions.select("user_id", "item_id", "event").rows()
    assert rows == [("U1", "N1", "history"), ("U1", "N2", "click"), ("U2", "N1", "click")]
    times = dataset.interactions["timestamp"].to_list()
    assert times[1] - times[0] == 1
    assert text_of(dataset, "N2") == "Title two. sports. golf"


# -- properties every loader shares -----------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["ml-latest-small", UNISREC, "lastfm-llara"])
def test_fingerprint_is_stable_and_logged(name: str, caplog: pytest.LogCaptureFixture) -> None:
    data = require_data(*UNISREC_FILES, "lastfm-llara/train_data.jsonl")
    with caplog.at_level(logging.INFO, logger="recsys.datasets"):
        first = load_dataset(name, data_dir=data).fingerprint()
    assert first == load_dataset(name, data_dir=data).fingerprint()
    assert str(first) in caplog.text


def test_split_column_survives_validation() -> None:
    """The published split is kept by ``Dataset.from_frames`` (loaders rely on it)."""
    interactions = pl.DataFrame(
        {
            "user_id": [1, 1, 1],
            "item_id": [1, 2, 1],
            "timestamp": [0, 1, 2],
            "split": ["train", "valid", "test"],
        }
    )
    items = pl.DataFrame({"item_id": [1, 2], "text": ["a", "b"]})
    dataset = Dataset.from_frames(interactions, items, DataConfig(order_is_time=False))
    assert dataset.interactions["split"].to_list() == ["train", "valid", "test"]
