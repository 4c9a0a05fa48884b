"""TBH training speed: steps/s at batch 400 for D = 1280 and D = 4096 (CPU, and CUDA when present).

    .venv/bin/python bench/train_speed.py [--steps 10] [--dims 1280 4096] [--bits 32]

Reference measured in the same run: the matmul floor, i.e. the time the step's dense GEMMs take
as bare `torch.mm` calls of the same shapes (forward + the two backward products each). The ratio
step time / floor says how much of a step is overhead beyond the unavoidable arithmetic.
"""

import argparse
import time

import torch

from tbhcli.hashing.tbh import TBHConfig
from tbhcli.training.loop import Trainer

ROUNDS = 3


def gemm_shapes(cfg: TBHConfig, n: int) -> list[tuple[int, int, int]]:
    """(rows, inner, cols) of every forward matmul of one training step on a batch of n."""
    d, h, m, c = cfg.feature_dim, cfg.hidden_dim, cfg.bits, cfg.continuous_dim
    return [
        (n, d, h),  # shared encoder layer
        (n, h, m),  # binary head
        (n, h, c),  # continuous head
        (n, m, n),  # Hamming matrix (two products)
        (n, m, n),
        (n, c, c),  # GCN weight
        (n, n, c),  # Lap(A) @ (z W + c)
        (n, c, h),  # decoder hidden
        (n, h, d),  # decoder output
    ]


def matmul_floor(cfg: TBHConfig, n: int, device: torch.device, repeats: int) -> float:
    """Seconds for the step's GEMMs: each forward product plus its two backward products."""
    mats = []
    for r, k, c in gemm_shapes(cfg, n):
        a, b, g = (torch.randn(s, device=device) for s in ((r, k), (k, c), (r, c)))
        mats.append((a, b, g))

    def once():
        for a, b, g in mats:
            a @ b, g @ b.T, a.T @ g  # forward, d input, d weight

    return _time(once, device, repeats)


def _time(fn, device: torch.device, repeats: int) -> float:
    for _ in range(3):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats


def bench(dim: int, bits: int, batch: int, steps: int, device: torch.device) -> None:
    cfg = TBHConfig(feature_dim=dim, bits=bits)
    x = torch.rand(4 * batch, dim, device=device)
    trainer = Trainer(cfg, x, batch, lr=1e-4, seed=0)
    # alternate the two and keep each one's best round: on a shared machine the minimum is the
    # least disturbed measurement, and alternating exposes both to the same background load
    step = floor = float("inf")
    for _ in range(ROUNDS):
        step = min(step, _time(trainer.train_step, device, steps))
        floor = min(floor, matmul_floor(cfg, batch, device, steps))
    print(
        f"{device.type:4s} D={dim:5d} M={bits} batch={batch}: {1 / step:7.1f} steps/s "
        f"({step * 1e3:6.1f} ms/step); matmul floor {floor * 1e3:6.1f} ms; "
        f"step / floor {step / floor:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round")
    parser.add_argument("--dims", type=int, nargs="+", default=[1280, 4096])
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--batch", type=int, default=400)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        for dim in args.dims:
            bench(dim, args.bits, args.batch, args.steps, device)


if __name__ == "__main__":
    main()
