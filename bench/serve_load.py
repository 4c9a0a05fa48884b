"""Load test of `tbh serve`: concurrent clients against a real server on 127.0.0.1.

    .venv/bin/python bench/serve_load.py --workspace /tmp/serve-ws  # built there on first use
    .venv/bin/python bench/serve_load.py --workspace demo           # the demo's store and model
    .venv/bin/python bench/serve_load.py --requests 2000 --clients 20

A workspace without codes.zarr (by default a temporary one) is built the demo's way: the MNIST
digits as PNGs, EfficientNet-Lite0 features at 64 px, a 32-bit ITQ run (minutes faster than
TBH; the per-query cost is the backbone's, the same for any hasher), exported and indexed.

Then it starts `tbh serve --port 0` as a subprocess and, for each kind of query
(by store row: JSON `{"row": n}`; by upload: a digit PNG as multipart), sends --requests requests
from --clients concurrent clients (httpx, one asyncio loop), after a warm-up. It prints p50/p99
latency, requests/s, errors, and the server's RSS at start and end of each phase. The reference,
measured in the same run: the same queries answered by `SearchService` in this process, one at a
time, without HTTP; the ratio says what HTTP and concurrency add or win.
"""

import argparse
import asyncio
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

from tbhcli.apps.demo_data import write_mnist_images
from tbhcli.apps.serve.service import SearchService, Upload
from tbhcli.deploy.export import export
from tbhcli.imaging.embed import features
from tbhcli.indexing.index import index
from tbhcli.training.fit import train


def build_workspace(root: Path, digits: int) -> Path:
    """`digits` demo digits (a tenth kept as queries) indexed with a 32-bit ITQ model."""
    images, _ = write_mnist_images(root, n_queries=digits // 10, n=digits)
    feats = features(images, root / "features.npy", image_size=64)
    run = train(feats, bits=32, method="itq", out=root / "runs" / "itq-32", force=True)
    model = export(run, out=root / "onnx" / "itq-32.onnx")
    index(images, store=root / "codes.zarr", model=model, device="cpu")
    return root


def start_server(workspace: Path) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "tbhcli.cli", "serve", "--port", "0", "--device", "cpu"]
    server = subprocess.Popen(command, cwd=workspace, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in server.stderr:  # lines before the URL (warnings) are skipped
        seen.append(line)
        if url := re.search(r"http://127\.0\.0\.1:\d+/", line):
            return server, url[0]
    server.kill()
    raise SystemExit("the server did not start:\n" + "".join(seen))


async def load(endpoint: str, requests: list[dict], clients: int) -> tuple[np.ndarray, int, float]:
    """POST every request (httpx keyword arguments) to `endpoint` from `clients` concurrent
    clients; returns (latencies in s, errors, wall seconds)."""
    latencies, errors, queue = [], 0, list(reversed(requests))

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors
        while queue:
            kwargs = queue.pop()
            start = time.perf_counter()
            response = await http.post(endpoint, **kwargs)
            latencies.append(time.perf_counter() - start)
            if response.status_code != 200 or not response.json()[0]["neighbours"]:
                errors += 1

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - start
    return np.array(latencies), errors, wall


def reference(service: SearchService, kind: str, items: list, n: int) -> tuple[float, float]:
    """(queries/s, CPU ms per query) of the service called directly, one at a time, no HTTP."""
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        if kind == "row":
            service.by_rows([items[i % len(items)]])
        else:
            service.by_images([items[i % len(items)]])
    return n / (time.perf_counter() - start), (time.process_time() - cpu) * 1000 / n


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, help="A workspace with codes.zarr and onnx/.")
    parser.add_argument("--digits", type=int, default=5000, help="Digits in a built workspace.")
    parser.add_argument("--requests", type=int, default=2000, help="Requests per kind.")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        ws = args.workspace or Path(tmp)
        if not (ws / "codes.zarr").exists():
            build_workspace(ws, args.digits)
        service = SearchService(ws / "codes.zarr", device="cpu")
        rows = len(service.db)
        uploads = [Upload(p.name, p.read_bytes()) for p in sorted(ws.glob("queries/*/*.png"))]
        if not uploads:  # a workspace without query images: upload indexed ones
            root = service.db.root
            uploads = [Upload(p, (root / p).read_bytes()) for p in service.db.paths[:200].tolist()]
        rng = np.random.default_rng(0)
        picks = rng.integers(0, rows, args.requests).tolist()
        pngs = [uploads[i] for i in rng.integers(0, len(uploads), args.requests)]
        top = f"query?top={args.top}"
        kinds = {
            "row": [{"json": {"row": i}} for i in picks],
            "upload": [{"files": {"image": (u.name, u.data, "image/png")}} for u in pngs],
        }
        direct = {
            "row": reference(service, "row", picks, 300),
            "upload": reference(service, "upload", pngs, 300),
        }
        del service

        server, url = start_server(ws)
        process = psutil.Process(server.pid)
        print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; store of "
              f"{rows:,} rows, {args.clients} clients, top {args.top}; load average before: "
              f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")  # fmt: skip
        print(f"server RSS after start: {process.memory_info().rss / 2**20:.0f} MiB")
        print(
            "kind    requests errors p50 ms p99 ms  req/s direct req/s ratio  "
            "CPU ms/req: server client direct  RSS MiB"
        )
        me = psutil.Process()
        try:
            for kind, requests in kinds.items():
                asyncio.run(load(url + top, requests[:100], args.clients))  # warm-up
                rss_start = process.memory_info().rss / 2**20
                server_cpu, client_cpu = cpu_seconds(process), cpu_seconds(me)
                latencies, errors, wall = asyncio.run(load(url + top, requests, args.clients))
                server_cpu = (cpu_seconds(process) - server_cpu) * 1000 / len(requests)
                client_cpu = (cpu_seconds(me) - client_cpu) * 1000 / len(requests)
                rss_end = process.memory_info().rss / 2**20
                rate = len(requests) / wall
                p50, p99 = np.percentile(latencies * 1000, [50, 99])
                direct_rate, direct_cpu = direct[kind]
                print(
                    f"{kind:<7} {len(requests):>8} {errors:>6} {p50:>6.1f} {p99:>6.1f} "
                    f"{rate:>6.0f} {direct_rate:>12.0f} {rate / direct_rate:>5.2f}  "
                    f"{server_cpu:>17.1f} {client_cpu:>6.1f} {direct_cpu:>6.1f}  "
                    f"{rss_start:.0f} -> {rss_end:.0f}"
                )
        finally:
            server.send_signal(2)
            server.wait(timeout=30)
        print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
