"""Where Dask work runs: the :class:`DaskConfig` and :func:`connect` (a local cluster, or an existing scheduler).

Dask is an optional dependency (``pip install "textmemory-recsys[dask]"``); it is imported only when a cluster is
used, so ``import recsys.distributed`` works without it.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from recsys.errors import ConfigError

__all__ = ["DaskConfig", "connect", "parse_scheduler", "require_dask"]

logger = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "textmemory-recsys[dask]" (in a checkout: pip install -e ".[dask]")'
_LOCAL = re.compile(r"local:(\d+)")
_ADDRESS = re.compile(r"(?:(?:tcp|tls|ucx|ws|wss|inproc)://\S+|[A-Za-z0-9_.\-\[\]:]+:\d+)")
SCHEDULER_HELP = (
    "local:N (a local cluster of N one-thread worker processes), a scheduler address such as "
    "tcp://10.0.0.5:8786 or 10.0.0.5:8786, or a scheduler file ending in .json"
)


def parse_scheduler(scheduler: str) -> tuple[str, int | str]:
    """``("local", n_workers)``, ``("address", address)`` or ``("file", path)`` for a ``--scheduler`` value.

    Raises
    ------
    ConfigError
        Not one of the forms of :data:`SCHEDULER_HELP`, or ``local:0``.
    """
    if not isinstance(scheduler, str) or not scheduler.strip():
        raise ConfigError(f"scheduler={scheduler!r} is empty; give {SCHEDULER_HELP}.")
    value = scheduler.strip()
    local = _LOCAL.fullmatch(value)
    if local:
        n = int(local.group(1))
        if n < 1:
            raise ConfigError(f"scheduler={scheduler!r} asks for {n} workers; use local:N with N >= 1, e.g. local:2.")
        return "local", n
    if value.endswith(".json"):
        return "file", value
    if value.startswith("local") or not _ADDRESS.fullmatch(value):
        raise ConfigError(f"scheduler={scheduler!r} is not understood; give {SCHEDULER_HELP}.")
    return "address", value


@dataclass(frozen=True)
class DaskConfig:
    """Where and how Dask work runs.

    Parameters
    ----------
    scheduler:
        ``"local:N"`` starts a ``LocalCluster`` of ``N`` worker processes with one thread each for the duration of
        the call; an address (``"tcp://host:8786"``) or a scheduler file (``"scheduler.json"``) joins a running
        cluster (Kubernetes, YARN, HPC, ``dask scheduler`` by hand).
    partitions:
        Batch jobs: the number of user partitions (= output shards); default: enough that each holds about the
        users the memory budget allows (see :func:`recsys.batch.users_per_shard`). Ranker training: the number of
        training partitions; default: one per worker.
    retries:
        Times a failed task is retried (an exception in it); tasks lost with a worker are rescheduled by Dask
        itself (up to ``distributed.scheduler.allowed-failures`` times).
    hash_seed:
        Seed of the user-id hash that assigns users (batch) and queries (training) to partitions.
    connect_timeout_s:
        Seconds to wait for the scheduler.
    show_progress:
        A progress bar on the client as shards complete.
    """

    scheduler: str = "local:2"
    partitions: int | None = None
    retries: int = 3
    hash_seed: int = 0
    connect_timeout_s: float = 30.0
    show_progress: bool = True

    def __post_init__(self) -> None:
        parse_scheduler(self.scheduler)
        if self.partitions is not None and (isinstance(self.partitions, bool) or self.partitions < 1):
            raise ConfigError(f"DaskConfig.partitions={self.partitions!r} must be a positive integer or None.")
        if self.retries < 0:
            raise ConfigError(f"DaskConfig.retries={self.retries} must be >= 0.")
        if not self.connect_timeout_s > 0:
            raise ConfigError(f"DaskConfig.connect_timeout_s={self.connect_timeout_s} must be > 0 (seconds).")


def require_dask() -> None:
    """Import check for the optional extra.

    Raises
    ------
    ConfigError
        Dask, distributed or pandas is not installed; says how to install them.
    """
    try:
        import dask.array  # noqa: F401
        import distributed  # noqa: F401
        import pandas  # noqa: F401
    except ImportError as err:
        raise ConfigError(
            f"running on Dask needs the optional dask extra ({err.name} is missing): {INSTALL_HINT}."
        ) from err


@contextlib.contextmanager
def connect(config: DaskConfig) -> Iterator[Any]:
    """A ``distributed.Client`` for ``config.scheduler``, closed afterwards (a ``local:N`` cluster is shut down).

    Raises
    ------
    ConfigError
        Dask is not installed, or the scheduler cannot be reached within ``connect_timeout_s``.
    """
    require_dask()
    from distributed import Client, LocalCluster

    kind, target = parse_scheduler(config.scheduler)
    with contextlib.ExitStack() as stack:
        if kind == "local":
            logger.info("starting a local Dask cluster of %d worker process(es)", target)
            cluster = LocalCluster(
                n_workers=int(target), threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
            )
            stack.enter_context(cluster)
            target, kind = cluster.scheduler_address, "address"
        try:
            if kind == "file":
                client = Client(scheduler_file=str(target), timeout=config.connect_timeout_s, set_as_default=False)
            else:
                client = Client(str(target), timeout=config.connect_timeout_s, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as err:
            raise ConfigError(
                f"cannot reach the Dask scheduler at {config.scheduler!r} within {config.connect_timeout_s:g} s "
                f"({err}); check the address and that the scheduler is running, or use local:N."
            ) from err
        stack.enter_context(client)
        yield client


def worker_addresses(client: Any) -> list[str]:
    """The addresses of the cluster's workers, sorted."""
    return sorted(client.nthreads())
