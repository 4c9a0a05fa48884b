"""The GPU-only checks of bench/gpu_check.sh: nvJPEG against Pillow, GPU codes against CPU codes,
and `tbh index --dask` on a GPU worker against plain `tbh index`, on the same synthetic JPEGs.

    .venv/bin/python bench/gpu_check.py [--images 4096] [--size 224]

Fails (exit 1) when CUDA is missing or onnxruntime falls back to CPU. Prints:
- decode-only img/s: Pillow in `cores` worker processes (what `tbh index` uses) and nvJPEG in
  batches of 256 (what GPU Dask workers use), and which one wins;
- the bit mismatch rate of CUDA codes against CPU codes on the same Pillow pixels (goal ~0) and
  of nvJPEG+CUDA codes against Pillow+CPU codes, each with the |logit| (torch, CPU) of the bits
  that differ against the median |logit|: only bits with logits near 0 should flip;
- end to end: plain `tbh index --device cuda` and `--dask` on one local GPU worker with 4 task
  threads (nvJPEG decoding), against the goal of 2,000 img/s at 224 px for efficientnet-lite0.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from index_throughput import export_lsh, write_jpegs

from tbhcli.deploy.export import build_hasher
from tbhcli.deploy.runtime import CUDA, create_session, run_codes
from tbhcli.hashing.runs import load_run
from tbhcli.imaging import nvjpeg
from tbhcli.imaging.decode import decode_batches
from tbhcli.indexing.index import index

BATCH = 256


def rate(n: int, began: float) -> float:
    return n / (time.perf_counter() - began)


def codes_of(session, pixels: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [run_codes(session, pixels[i : i + BATCH]) for i in range(0, len(pixels), BATCH)]
    )


def mismatch(name: str, a: np.ndarray, b: np.ndarray, logits: np.ndarray) -> None:
    """Bits that differ between packed codes a and b, and how close to 0 their logits are."""
    differ = np.unpackbits(a, axis=1) != np.unpackbits(b, axis=1)  # (N, M)
    near = np.abs(logits[differ])
    median = np.median(np.abs(logits))
    worst = f"max |logit| of flipped bits {near.max():.2e}" if near.size else "no bit flipped"
    print(
        f"{name}: {differ.mean():.2e} of bits differ ({differ.sum()}); {worst}, "
        f"median |logit| {median:.2e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--bits", type=int, default=64)
    args = parser.parse_args()
    if not nvjpeg.available():
        sys.exit("no CUDA GPU visible to torch: this check needs one")
    cores = len(os.sched_getaffinity(0))
    print(f"GPU {torch.cuda.get_device_name(0)}, {cores} cores, torch {torch.__version__}")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = write_jpegs(work / "images", args.images)
        model = export_lsh(work, "efficientnet-lite0", args.size, args.bits)
        gpu, provider = create_session(model, "cuda")  # raises if CUDA falls back to CPU
        cpu, _ = create_session(model, "cpu")
        print(
            f"onnxruntime providers: cuda session {gpu.get_providers()}, "
            f"cpu session {cpu.get_providers()}"
        )
        assert provider == CUDA

        began = time.perf_counter()
        pillow = np.concatenate([b.pixels for b in decode_batches(files, args.size, BATCH, cores)])
        pillow_rate = rate(len(files), began)
        nvjpeg.decode_files(files[:BATCH], args.size)  # warm-up: CUDA context, nvJPEG handles
        began = time.perf_counter()
        parts = [
            nvjpeg.decode_files(files[i : i + BATCH], args.size)[0]
            for i in range(0, len(files), BATCH)
        ]
        gpu_rate = rate(len(files), began)
        decoded = np.concatenate(parts)
        winner = "nvJPEG" if gpu_rate > pillow_rate else "Pillow"
        print(
            f"decode only: Pillow x {cores} processes {pillow_rate:8.1f} img/s, "
            f"nvJPEG {gpu_rate:8.1f} img/s -> {winner} wins"
        )

        n = min(1024, len(files))
        hasher = build_hasher(load_run(work / "runs" / "bench"), "images")
        with torch.no_grad():
            logits = torch.cat(
                [hasher.logits(torch.from_numpy(pillow[i : i + 64])) for i in range(0, n, 64)]
            ).numpy()
        reference = codes_of(cpu, pillow[:n])
        mismatch(
            "CUDA vs CPU codes, same Pillow pixels", codes_of(gpu, pillow[:n]), reference, logits
        )
        mismatch("nvJPEG+CUDA vs Pillow+CPU codes", codes_of(gpu, decoded[:n]), reference, logits)
        print(
            "nvJPEG vs Pillow pixels: mean |diff| "
            f"{np.abs(decoded.astype(int) - pillow).mean():.3f} levels"
        )

        plain = index(
            work / "images", store=work / "plain.zarr", model=model, device="cuda", workers=cores
        )
        print(
            f"end to end, plain tbh index (Pillow x {cores}, CUDA): {plain.images_per_s:8.1f} img/s"
        )
        from distributed import LocalCluster

        with LocalCluster(n_workers=1, threads_per_worker=4, dashboard_address=None) as cluster:
            on_gpu = index(
                work / "images",
                store=work / "dask.zarr",
                model=model,
                device="cuda",
                dask=cluster.scheduler_address,
                task_size=512,
            )
        print(
            "end to end, --dask on 1 GPU worker x 4 threads (nvJPEG, CUDA): "
            f"{on_gpu.images_per_s:8.1f} img/s"
        )
        best = max(plain.images_per_s, on_gpu.images_per_s)
        print(f"best end to end at {args.size} px: {best:.0f} img/s (goal on one H100: >= 2,000)")


if __name__ == "__main__":
    main()
