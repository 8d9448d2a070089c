"""Tests of the saved-model files: ``load_arrays`` reads what safetensors writes, and refuses damaged files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from recsys._persist import load_arrays
from recsys.errors import ModelFormatError

ARRAYS = {
    "f32": np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
    "f16": np.array([1.5, -2.25], dtype=np.float16),
    "f64": np.array([np.pi]),
    "i64": np.array([-(2**40), 0, 2**40], dtype=np.int64),
    "i32": np.array([[-1], [2**31 - 1]], dtype=np.int32),
    "u8": np.array([0, 255], dtype=np.uint8),
    "bool": np.array([True, False, True]),
    "empty": np.zeros((0, 5), dtype=np.float32),
    "scalar": np.array(3, dtype=np.int64),
}


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "arrays.safetensors"
    save_file(ARRAYS, str(path), metadata={"note": "kept out of the arrays"})
    return path


def test_load_arrays_reads_every_dtype_and_shape_as_safetensors_does(saved: Path) -> None:
    loaded, reference = load_arrays(saved), load_file(str(saved))
    assert loaded.keys() == ARRAYS.keys() == reference.keys()
    for name, array in ARRAYS.items():
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape, name
        np.testing.assert_array_equal(loaded[name], array)
        np.testing.assert_array_equal(loaded[name], reference[name])
        assert loaded[name].flags.writeable and loaded[name].flags.c_contiguous


def test_load_arrays_refuses_a_truncated_file(saved: Path) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[:-3])
    with pytest.raises(ModelFormatError, match="truncated or altered"):
        load_arrays(saved)


@pytest.mark.parametrize(
    "head", [b"", b"\x01\x00", (10**9).to_bytes(8, "little") + b"{}", (2).to_bytes(8, "little") + b"[]"]
)
def test_load_arrays_refuses_what_is_not_a_safetensors_file(tmp_path: Path, head: bytes) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(head)
    with pytest.raises(ModelFormatError, match="not a safetensors file"):
        load_arrays(path)


def test_load_arrays_names_the_tensor_with_an_unknown_dtype(tmp_path: Path) -> None:
    header = b'{"x":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}}'
    path = tmp_path / "odd.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(8))
    with pytest.raises(ModelFormatError, match="'x'"):
        load_arrays(path)
