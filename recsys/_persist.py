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
import struct
import tempfile
import typing
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import polars as pl
from safetensors.numpy import save_file

from recsys.errors import ConfigError, ModelFormatError

__all__ = ["FORMAT", "config_from_dict", "load_arrays", "read_model_dir", "write_model_dir"]

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


_DTYPES = {
    "BOOL": np.bool_,
    "U8": np.uint8,
    "I8": np.int8,
    "U16": np.uint16,
    "I16": np.int16,
    "F16": np.float16,
    "U32": np.uint32,
    "I32": np.int32,
    "F32": np.float32,
    "U64": np.uint64,
    "I64": np.int64,
    "F64": np.float64,
}


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file as a numpy array, each read straight into its own buffer.

    The result holds the file's bytes once: ``safetensors.numpy.load_file`` reads the whole file into one
    buffer and copies each tensor out of it (twice the file at its peak), and ``safe_open`` maps the file,
    whose touched pages count towards the resident size beside the copies. The format (an
    8-byte little-endian header length, a JSON header of ``dtype``, ``shape`` and ``data_offsets`` per
    tensor, then the data) is read here directly.

    Raises
    ------
    ModelFormatError
        The file is shorter than its header says, or the header is not a safetensors header.
    """
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb", buffering=0) as f:
        try:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length)) if 0 < length <= size - 8 else None
        except (struct.error, UnicodeDecodeError, json.JSONDecodeError):
            header = None
        if not isinstance(header, dict):
            raise ModelFormatError(
                f"{str(path)!r} is not a safetensors file (unreadable header); save the model again."
            )
        header.pop("__metadata__", None)
        out: dict[str, np.ndarray] = {}
        for name, info in header.items():
            try:
                dtype, shape = np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<"), tuple(int(d) for d in info["shape"])
                begin, end = (int(x) for x in info["data_offsets"])
            except (KeyError, TypeError, ValueError) as err:
                raise ModelFormatError(f"{str(path)!r}: tensor {name!r} has an unreadable entry {info!r}.") from err
            array = np.empty(shape, dtype)
            if end - begin != array.nbytes or 8 + length + end > size:
                raise ModelFormatError(
                    f"{str(path)!r}: tensor {name!r} ({info['dtype']}{list(shape)}) does not match its "
                    f"{end - begin} bytes at {begin} in a {size}-byte file; the file is truncated or altered."
                )
            f.seek(8 + length + begin)
            buffer, done = array.reshape(-1).view(np.uint8).data, 0
            while done < array.nbytes:
                read = f.readinto(buffer[done:])
                if not read:
                    raise ModelFormatError(f"{str(path)!r} ended inside tensor {name!r}; the file is truncated.")
                done += read
            out[name] = array
    return out
