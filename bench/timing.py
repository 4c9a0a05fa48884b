"""Timing helpers the bench scripts share: the load average, and best-of wall times.

Light on purpose (no numba, no tbhcli): a script that times a cold start imports it freely.
"""

import os
import time
from collections.abc import Callable


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def best_of(job: Callable[[], object], repeats: int = 5) -> float:
    """Best wall time of `job` over `repeats` calls, in seconds (no warm-up: the first call
    counts, as a cold start must)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        job()
        times.append(time.perf_counter() - start)
    return min(times)


def best_seconds(stages: dict, repeats: int) -> dict[str, float]:
    """Best wall time of each callable over `repeats` interleaved rounds, after one warm-up."""
    for run in stages.values():
        run()  # compile and warm up
    best = dict.fromkeys(stages, float("inf"))
    for _ in range(repeats):
        for name, run in stages.items():
            started = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - started)
    return best
