"""Throughput of `tbh index` against its two stages measured alone, in the same run.

    .venv/bin/python bench/index_throughput.py --images 2000 --size 224
    .venv/bin/python bench/index_throughput.py --images 2000 --size 64
    .venv/bin/python bench/index_throughput.py --images 2000 --backbone tiny --size 32

Writes N synthetic 256x256 JPEGs to a temporary folder, exports an LSH run on the backbone, then
measures images/s of (1) decoding only (the same worker pool `tbh index` uses), (2) inference only
(onnxruntime on already-decoded batches), (3) the full `tbh index` into a fresh store. Since
decoding and inference overlap, the goal is full >= 0.8 x min(decode, inference).
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tbhcli.deploy.export import export
from tbhcli.deploy.runtime import create_session, describe_provider, run_codes
from tbhcli.hashing.baselines import LinearHash
from tbhcli.hashing.runs import save_run
from tbhcli.imaging.backbones import load_backbone
from tbhcli.imaging.decode import decode_batches
from tbhcli.imaging.images import default_workers
from tbhcli.indexing.index import index


def write_jpegs(folder: Path, n: int, side: int = 256, seed: int = 0) -> list[Path]:
    """N photo-like JPEGs (smooth gradients + noise, ~20 KB each) in 10 class folders."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, side, dtype=np.float32)
    files = []
    for i in range(n):
        colour = rng.uniform(0, 255, 3).astype(np.float32)
        base = ramp[:, None, None] * colour + ramp[None, :, None] * (255 - colour)  # (S, S, 3)
        pixels = np.clip(base / 2 + rng.normal(0, 20, (side, side, 3)), 0, 255).astype(np.uint8)
        path = folder / f"class{i % 10}" / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, quality=90)
        files.append(path)
    return files


def export_lsh(
    workdir: Path, backbone: str, size: int, bits: int, weights: Path | None = None
) -> Path:
    dim = load_backbone(backbone, weights).feature_dim
    encoder = LinearHash(dim, bits)
    encoder.projection.copy_(torch.randn(dim, bits, generator=torch.Generator().manual_seed(0)))
    config = {
        "method": "lsh",
        "bits": bits,
        "feature_dim": dim,
        "backbone": backbone,
        "image_size": size,
        "seed": 0,
    }
    save_run(workdir / "runs" / "bench", config, encoder)
    out = workdir / "onnx" / "bench.onnx"
    return export(workdir / "runs" / "bench", out=out, backbone_weights=weights)


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--backbone", default="efficientnet-lite0")
    parser.add_argument("--size", type=int, default=224, help="model input side (px)")
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backbone-weights", type=Path, default=None, help="a local state dict")
    args = parser.parse_args()
    workers = args.workers or default_workers()

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        files = write_jpegs(workdir / "images", args.images)
        model = export_lsh(workdir, args.backbone, args.size, args.bits, args.backbone_weights)

        start = time.perf_counter()
        decoded = sum(len(b.ok) for b in decode_batches(files, args.size, args.batch_size, workers))
        decode = rate(decoded, time.perf_counter() - start)

        session, provider = create_session(model, args.device)
        batch = next(decode_batches(files[: args.batch_size], args.size, args.batch_size, 0))
        run_codes(session, batch.pixels)  # warm-up (CUDA kernels, allocations)
        start, done = time.perf_counter(), 0
        while done < args.images:
            done += len(run_codes(session, batch.pixels))
        infer = rate(done, time.perf_counter() - start)

        report = index(
            workdir / "images",
            store=workdir / "codes.zarr",
            model=model,
            batch_size=args.batch_size,
            workers=workers,
            device=args.device,
        )
        assert report.rows == args.images
        full = report.images_per_s

    slower = min(decode, infer)
    print(
        f"{args.images} JPEGs 256 px -> {args.backbone} @ {args.size} px, {args.bits} bits, "
        f"batch {args.batch_size}, {workers} decode workers, {describe_provider(provider)}"
    )
    print(f"decode only      {decode:8.1f} images/s")
    print(f"inference only   {infer:8.1f} images/s")
    print(f"full tbh index   {full:8.1f} images/s")
    print(f"full / min(decode, inference) = {full / slower:.2f}  (goal >= 0.80)")
    # On a CPU-only machine both stages share the cores, so their rates add as resistances.
    shared = 1 / (1 / decode + 1 / infer)
    print(f"full / shared-cores bound 1/(1/decode + 1/inference) = {full / shared:.2f}")


if __name__ == "__main__":
    main()
