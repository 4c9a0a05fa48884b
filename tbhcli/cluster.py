"""Connecting to Dask: a scheduler address, or "local" for a LocalCluster on this machine.

Shared by the verbs that take `--dask` (search and evaluate scan blocks, `tbh index` encodes
files). Dask is imported only here and only when a cluster is asked for.
"""

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from tbhcli.errors import TbhError

CONNECT_TIMEOUT_S = 10  # how long to try a scheduler address before telling the user


@contextmanager
def dask_client(address: str, workers: int | None = None) -> Iterator:
    """A distributed.Client on `address`, or on a fresh LocalCluster for "local" (closed after).

    The local cluster has `workers` (default: one per core) single-threaded worker processes, so
    each task owns one core. `workers` sizes only a local cluster: a remote one is what it is.
    """
    from distributed import Client, LocalCluster

    if address == "local":
        with warnings.catch_warnings():
            # "Port 8787 is already in use": the scheduler's status page, which tbh never uses
            warnings.filterwarnings("ignore", message="Port .* is already in use")
            cluster = LocalCluster(
                n_workers=workers or os.cpu_count() or 1,
                threads_per_worker=1,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
        with cluster, Client(cluster) as client:
            yield client
        return
    if workers is not None:
        raise TbhError(
            f"--workers sizes a local cluster; the cluster at {address} has its own workers "
            "(drop --workers, or use --dask local)."
        )
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        raise TbhError(
            f"cannot reach the Dask scheduler at {address} ({exc}); "
            "start one with `dask scheduler` or use --dask local."
        ) from None
    with client:
        yield client
