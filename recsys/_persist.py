"""The saved-model directory: JSON, Parquet, safetensors, FAISS's index file and LightGBM's text model.

Nothing is ever pickled. ``manifest.json`` lists every file with its sha256; loading refuses a directory
with a missing, extra or altered file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import typing
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import polars as pl
import scipy.sparse as sp
from safetensors.numpy import load_file, save_file

from recsys.errors import ConfigError, ModelFormatError

__all__ = ["FORMAT", "config_from_dict", "read_model_dir", "write_model_dir"]

FORMAT = "recsys-model/1"
T = TypeVar("T")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    names = ["textmemory-recsys", "torch", "transformers", "faiss-cpu", "polars", "lightgbm", "numpy"]
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def config_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a (nested) frozen dataclass config from :func:`dataclasses.asdict` output."""
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__} config must be a JSON object; got {type(data).__name__}.")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} setting(s) {unknown}; allowed: {sorted(known)}.")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            kwargs[name] = config_from_dict(hint, value)  # type: ignore[arg-type]
        elif isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def sparse_to_arrays(matrix: sp.csr_matrix, prefix: str) -> dict[str, np.ndarray]:
    return {
        f"{prefix}.data": np.ascontiguousarray(matrix.data, dtype=np.float32),
        f"{prefix}.indices": np.ascontiguousarray(matrix.indices, dtype=np.int64),
        f"{prefix}.indptr": np.ascontiguousarray(matrix.indptr, dtype=np.int64),
        f"{prefix}.shape": np.asarray(matrix.shape, dtype=np.int64),
    }


def arrays_to_sparse(arrays: dict[str, np.ndarray], prefix: str) -> sp.csr_matrix:
    shape = tuple(int(x) for x in arrays[f"{prefix}.shape"])
    return sp.csr_matrix(
        (arrays[f"{prefix}.data"], arrays[f"{prefix}.indices"], arrays[f"{prefix}.indptr"]), shape=shape
    )


def write_model_dir(
    directory: str | Path,
    *,
    config: dict[str, Any],
    frames: dict[str, pl.DataFrame],
    arrays: dict[str, dict[str, np.ndarray]],
    texts: dict[str, str],
    writers: dict[str, typing.Callable[[str], None]],
    extra: dict[str, Any],
    savers: typing.Sequence[typing.Callable[[Path], None]] = (),
) -> Path:
    """Write every part to a temporary sibling folder, add the manifest, then swap it in atomically.

    ``frames`` -> ``NAME.parquet``; ``arrays`` -> ``NAME.safetensors``; ``texts`` -> ``NAME`` as UTF-8;
    ``writers`` are called with a path to write their own file (for example FAISS's index); ``savers`` with the
    folder, to write their own files there (for example ``MemoryStates.save``). Every file gets its sha256 in the
    manifest. The swap renames the old directory aside, then the new one into place: a reader sees the old model,
    the new one, or (for the instant between the two renames) none, never a mixture; a crash in that instant
    leaves the old model in ``.NAME.old``.
    """
    target = Path(directory).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    for name, frame in frames.items():
        frame.write_parquet(tmp / f"{name}.parquet", compression="zstd")
    for name, tensors in arrays.items():
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp / f"{name}.safetensors"))
    for name, text in texts.items():
        (tmp / name).write_text(text, encoding="utf-8")
    for name, write in writers.items():
        write(str(tmp / name))
    for save in savers:
        save(tmp)
    files = {p.name: _sha256(p) for p in sorted(tmp.iterdir())}
    manifest = {"format": FORMAT, "versions": _versions(), "files": files, **extra}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)
    return target


def read_model_dir(directory: str | Path) -> tuple[Path, dict[str, Any]]:
    """Check the manifest and every checksum; return the folder and the manifest.

    Raises
    ------
    ModelFormatError
        No manifest, an unknown format, a missing, extra or altered file.
    """
    folder = Path(directory)
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise ModelFormatError(f"{str(folder)!r} has no manifest.json; it is not a model written by `recsys fit`.")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT:
        raise ModelFormatError(f"{str(folder)!r} has format {manifest.get('format')!r}; this version reads {FORMAT!r}.")
    listed = manifest.get("files", {})
    present = {p.name for p in folder.iterdir()} - {"manifest.json"}
    if present != set(listed):
        raise ModelFormatError(
            f"{str(folder)!r} does not match its manifest: missing {sorted(set(listed) - present)}, "
            f"unexpected {sorted(present - set(listed))}. Refit or restore the directory."
        )
    for name, digest in listed.items():
        if _sha256(folder / name) != digest:
            raise ModelFormatError(f"{name} in {str(folder)!r} fails its sha256 check; the file was altered.")
    return folder, manifest


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    return load_file(str(path))
