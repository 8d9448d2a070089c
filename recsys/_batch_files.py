"""The files of a batch output directory: atomic writes, commit records, the lock, the identity check.

See :mod:`recsys.batch` for the layout and the commit protocol. Nothing here knows about recommendations:
a shard arrives as Parquet bytes plus the counts its commit record keeps.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recsys.errors import ConfigError

__all__ = [
    "JOB",
    "RECORDS",
    "SUCCESS",
    "check_identity",
    "clear",
    "commit_shard",
    "committed",
    "json_bytes",
    "locked",
    "remove_stale",
    "sha256",
    "write_atomic",
]

SUCCESS, JOB, RECORDS, LOCK, TMP_SUFFIX = "_SUCCESS", "_JOB.json", "_shards", ".lock", ".tmp"
OVERWRITE_FIX = "pass --overwrite (run(..., overwrite=True)) to replace it, or choose a new --out directory"


def sha256(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def shard_name(i: int) -> str:
    """``part-00007.parquet`` for shard 7."""
    return f"part-{i:05d}.parquet"


def json_bytes(data: dict[str, Any]) -> bytes:
    """Canonical JSON (sorted keys), so equal objects give equal bytes and equal hashes."""
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, rename it over ``path``, fsync the folder.

    Readers see the old file or the new one, never a part of it; a kill leaves at most a ``.*.tmp`` file.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            if hasattr(os, "fchmod"):  # mkstemp makes 0600; outputs are meant to be read by others
                os.fchmod(handle.fileno(), 0o644)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object at ``path``, or None when it is absent or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _file_sha256(path: Path) -> str | None:
    try:
        return sha256(path.read_bytes())
    except OSError:
        return None


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder/.lock`` (the OS releases it when the process dies)."""
    try:
        import fcntl
    except ImportError:  # no flock on this platform: run unlocked
        yield
        return
    with (folder / LOCK).open("a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise ConfigError(
                f"another batch job is writing to {str(folder)!r}; wait for it to finish or choose another --out."
            ) from err
        yield


def _is_temp(name: str) -> bool:
    return name.startswith(".") and name.endswith(TMP_SUFFIX)


def remove_stale(folder: Path) -> int:
    """Delete the temporary files a killed job left behind; return how many."""
    stale = [p for d in (folder, folder / RECORDS) if d.is_dir() for p in d.iterdir() if _is_temp(p.name)]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def clear(folder: Path) -> None:
    """Remove every file a batch job writes (``--overwrite``); other files are left alone."""
    (folder / SUCCESS).unlink(missing_ok=True)  # first: the folder stops claiming to be complete
    for path in folder.glob("part-*.parquet"):
        path.unlink()
    shutil.rmtree(folder / RECORDS, ignore_errors=True)
    (folder / JOB).unlink(missing_ok=True)
    _fsync_dir(folder)


def check_identity(folder: Path, job: dict[str, Any]) -> None:
    """Refuse a folder that holds another job's output (``_JOB.json`` or ``_SUCCESS`` differ from ``job``),
    or files that are not a batch output.

    Raises
    ------
    ConfigError
        Names the settings that differ, both values, and the fix.
    """
    previous = _read_json(folder / JOB) or (_read_json(folder / SUCCESS) or {}).get("job")
    if previous is None:
        foreign = sorted(p.name for p in folder.iterdir() if p.name != LOCK and not _is_temp(p.name))
        if foreign:
            raise ConfigError(
                f"--out {str(folder)!r} is not empty and holds no batch job (for example {foreign[:5]}); "
                f"{OVERWRITE_FIX} (--overwrite removes only batch files)."
            )
        return
    differ = sorted(key for key in set(job) | set(previous) if job.get(key) != previous.get(key))
    if differ:
        first = differ[0]
        raise ConfigError(
            f"--out {str(folder)!r} holds the output of a different batch job ({', '.join(differ)} differ; "
            f"{first}: {previous.get(first)!r} there, {job.get(first)!r} now); {OVERWRITE_FIX}."
        )


def _record_path(out: Path, i: int) -> Path:
    return out / RECORDS / f"part-{i:05d}.json"


def committed(out: Path, i: int, key: str) -> dict[str, Any] | None:
    """Shard ``i``'s commit record if it names job ``key`` and the shard file matches its sha256, else None."""
    record = _read_json(_record_path(out, i))
    if record is None or record.get("job") != key:
        return None
    return record if _file_sha256(out / shard_name(i)) == record.get("sha256") else None


def commit_shard(out: Path, i: int, data: bytes, key: str, counts: dict[str, int]) -> dict[str, Any]:
    """Write shard ``i`` (Parquet ``data``: temporary file, fsync, rename), then its commit record (``job`` key,
    ``file``, ``sha256`` and ``counts``) the same way; return the record."""
    write_atomic(out / shard_name(i), data)
    record = {"job": key, "file": shard_name(i), "sha256": sha256(data), **counts}
    write_atomic(_record_path(out, i), json_bytes(record))
    return record
