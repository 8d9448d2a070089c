"""The command line: fit -> recommend on user files, error messages and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from conftest import TOPICS

RECSYS = [sys.executable, "-m", "recsys.cli"]


def run(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {"RECSYS_CACHE_DIR": str(cache), "PATH": "/usr/bin:/bin", "HOME": str(cache)}
    return subprocess.run([*RECSYS, *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    rows = [(i, text, topic) for i, (topic, text) in enumerate((t, x) for t, xs in TOPICS.items() for x in xs)]
    items = pl.DataFrame(rows, schema={"item_id": pl.Int64, "title": pl.String, "topic": pl.String}, orient="row")
    events = [
        (t * 10 + u, int(items.filter(pl.col("topic") == topic)["item_id"][(u + s) % 6]), 100 * s, 4.0)
        for t, topic in enumerate(TOPICS)
        for u in range(10)
        for s in range(4)
    ]
    inter = pl.DataFrame(
        events, schema={"user_id": pl.Int64, "item_id": pl.Int64, "ts": pl.Int64, "rating": pl.Float64}, orient="row"
    )
    items.write_csv(folder / "items.csv")
    inter.write_parquet(folder / "events.parquet")
    pl.DataFrame({"user_id": [0, 10, 777]}).write_csv(folder / "users.csv")
    return folder


def test_help_lists_every_command(tmp_path: Path):
    result = run("--help", cache=tmp_path)
    assert result.returncode == 0
    for command in ("quickstart", "fit", "recommend", "evaluate", "datasets", "importance"):
        assert command in result.stdout


def test_fit_then_recommend(files: Path, tmp_path: Path):
    model = tmp_path / "model"
    fit = run(
        "fit",
        "--interactions",
        str(files / "events.parquet"),
        "--items",
        str(files / "items.csv"),
        "--text-field",
        "title",
        "--text-field",
        "topic",
        "--order-column",
        "ts",
        "--weight-column",
        "rating",
        "--n-candidates",
        "10",
        "--out",
        str(model),
        cache=tmp_path,
    )
    assert fit.returncode == 0, fit.stderr
    assert (model / "manifest.json").exists()
    out = tmp_path / "recs.parquet"
    rec = run(
        "recommend",
        "--model",
        str(model),
        "--users",
        str(files / "users.csv"),
        "--k",
        "3",
        "--out",
        str(out),
        cache=tmp_path,
    )
    assert rec.returncode == 0, rec.stderr
    recs = pl.read_parquet(out)
    assert recs.columns == ["user_id", "item_id", "score", "rank"]
    assert sorted(recs["user_id"].unique().to_list()) == [0, 10, 777]
    assert recs.height == 9
    # the batch job's process imports LightGBM without scikit-learn and pandas (see _import_lightgbm_lean)
    code = (
        "import sys; from recsys.cli import app; "
        f"app(['recommend', '--model', {str(model)!r}, '--out', {str(tmp_path / 'job')!r}], standalone_mode=False); "
        "print(sorted(m for m in ('sklearn', 'pandas', 'lightgbm') if m in sys.modules))"
    )
    job = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert job.returncode == 0, job.stderr
    assert job.stdout.strip().splitlines()[-1] == "['lightgbm']"
    assert pl.read_parquet(tmp_path / "job" / "part-*.parquet")["user_id"].n_unique() == len(TOPICS) * 10
    explained = tmp_path / "explained.parquet"
    args = ("recommend", "--model", str(model), "--users", str(files / "users.csv"), "--k", "2", "--explain")
    rec = run(*args, "--show", "2", "--out", str(explained), cache=tmp_path)
    assert rec.returncode == 0, rec.stderr
    assert "because you had:" in rec.stdout
    assert {"because_ids", "because", "reasons"} <= set(pl.read_parquet(explained).columns)
    importance = run("importance", "--model", str(model), cache=tmp_path)
    assert importance.returncode == 0, importance.stderr
    assert "retrieval_score" in importance.stdout


def test_bad_column_is_one_line_and_exit_2(files: Path, tmp_path: Path):
    result = run(
        "fit",
        "--interactions",
        str(files / "events.parquet"),
        "--items",
        str(files / "items.csv"),
        "--text-field",
        "description",
        "--out",
        str(tmp_path / "m"),
        cache=tmp_path,
    )
    assert result.returncode == 2
    assert "description" in result.stderr and "Traceback" not in result.stderr


def test_fit_index_kind_is_saved_and_a_bad_kind_is_exit_2(files: Path, tmp_path: Path):
    base = ("fit", "--interactions", str(files / "events.parquet"), "--items", str(files / "items.csv"))
    base += ("--text-field", "title", "--order-column", "ts")
    fit = run(*base, "--index", "hnsw", "--out", str(tmp_path / "m"), cache=tmp_path)
    assert fit.returncode == 0, fit.stderr
    assert json.loads((tmp_path / "m" / "config.json").read_text())["index"]["kind"] == "hnsw"
    bad = run(*base, "--index", "lsh", "--out", str(tmp_path / "m2"), cache=tmp_path)
    assert bad.returncode == 2
    assert "lsh" in bad.stderr and "Traceback" not in bad.stderr


def test_missing_file_exit_3(tmp_path: Path):
    result = run(
        "fit",
        "--interactions",
        str(tmp_path / "nope.csv"),
        "--items",
        str(tmp_path / "nope.csv"),
        "--out",
        str(tmp_path / "m"),
        cache=tmp_path,
    )
    assert result.returncode == 3
    assert "nope.csv" in result.stderr


def test_not_a_model_dir_exit_4(tmp_path: Path):
    result = run("recommend", "--model", str(tmp_path), "--out", str(tmp_path / "r.parquet"), cache=tmp_path)
    assert result.returncode == 4
    assert "manifest.json" in result.stderr


def test_lean_lightgbm_import_leaves_its_integrations_importable():
    code = (
        "import sys; from recsys.cli import _import_lightgbm_lean; _import_lightgbm_lean(); "
        "import lightgbm; print(lightgbm.compat.SKLEARN_INSTALLED, 'sklearn' in sys.modules); "
        "import sklearn, pandas; print(sklearn.__name__, pandas.__name__)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False", "sklearn", "pandas"]


def test_lean_lightgbm_import_is_a_no_op_once_lightgbm_is_imported():
    import lightgbm

    from recsys.cli import _import_lightgbm_lean

    before = dict(sys.modules)
    _import_lightgbm_lean()
    assert sys.modules == before
    assert lightgbm.compat.SKLEARN_INSTALLED  # this process's LightGBM keeps its scikit-learn API
