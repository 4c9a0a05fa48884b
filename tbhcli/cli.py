"""The `tbh` command: a thin Typer layer; each subcommand calls the library verb of its name."""

from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from typer.core import TyperGroup

from tbhcli.errors import TbhError

err_console = Console(stderr=True)


class _UserErrorsAsOneLine(TyperGroup):
    """Print a TbhError from any command as one red line and exit 1 (also under CliRunner)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TbhError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_UserErrorsAsOneLine,
    help="Twin-Bottleneck Hashing: train, export, index, query and evaluate binary image codes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts are plain: "[logit > 0]" must print as written
)


# Options that several commands share.
StoreOption = Annotated[Path | None, typer.Option(help="Code store (default: codes.zarr).")]
ThreadsOption = Annotated[int | None, typer.Option(help="Search threads (default: all).")]
WorkersOption = Annotated[
    int | None, typer.Option(help="Decoding processes (default: one per core, at most 8).")
]
DeviceOption = Annotated[str, typer.Option(help="auto (CUDA when present), cuda or cpu.")]
DaskOption = Annotated[
    str | None, typer.Option(help='Search on a Dask cluster: "local" or a scheduler address.')
]


# ---- commands: each block is owned by the module it calls --------------------------------------


@app.command()
def demo(
    workspace: Annotated[Path, typer.Option(help="Folder for images, runs, models, store.")] = Path(
        "demo"
    ),
    steps: Annotated[
        int | None, typer.Option(help="TBH training steps per run (default: 1000, preset fast).")
    ] = None,
) -> None:
    """Offline end-to-end demo on MNIST digits with EfficientNet-Lite0 features."""
    from tbhcli.apps.demo import TBH_STEPS
    from tbhcli.apps.demo import demo as run_demo

    run_demo(workspace, TBH_STEPS if steps is None else steps)


@app.command()
def features(
    images: Annotated[Path, typer.Argument(help="Image folder; class subfolders become labels.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output feature file NAME.npy.")],
    backbone: Annotated[
        str,
        typer.Option(help="efficientnet-lite0 (offline), resnet50, vgg16-fc7 or tiny (tests)."),
    ] = "efficientnet-lite0",
    weights: Annotated[
        Path | None,
        typer.Option(help="Local state-dict file for the backbone (default: ImageNet weights)."),
    ] = None,
    image_size: Annotated[
        int | None, typer.Option(help="Square input side in pixels (default: the backbone's).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 256,
    workers: WorkersOption = None,
) -> None:
    """Embed an image folder into NAME.npy (+ NAME.labels.npy, NAME.meta.json)."""
    from tbhcli.imaging.embed import features as run_features

    run_features(images, out, backbone, weights, image_size, batch_size, workers)


@app.command()
def evaluate(
    metric: Annotated[
        list[str] | None,
        typer.Option(help="map@K, map@all, p@K or p@rR (precision within radius R); repeatable."),
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="Run for feature-level evaluation (default: newest run).")
    ] = None,
    database: Annotated[
        Path | None, typer.Option(help="Database features NAME.npy (with NAME.labels.npy).")
    ] = None,
    queries: Annotated[
        Path | None,
        typer.Option(help="Query features .npy (with --database), or a query store."),
    ] = None,
    store: StoreOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    plot: Annotated[Path | None, typer.Option(help="Write the PR curve to this image.")] = None,
    threads: ThreadsOption = None,
    dask: DaskOption = None,
) -> None:
    """Retrieval quality against ground-truth labels (relevant = shares a label)."""
    from tbhcli.evaluation.evaluate import evaluate as run_evaluate

    result = run_evaluate(metric, model, database, queries, store, plot, threads, dask)
    if json_output:
        typer.echo(result.to_json())
        return
    from rich.table import Table

    table = Table(title=f"{result.queries} against {result.database}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in result.scores.items():
        table.add_row(name, f"{value:.4f}")
    Console().print(table)
    if plot is not None:
        Console().print(f"precision-recall curve written to {plot}")


@app.command()
def train(
    features: Annotated[Path, typer.Argument(help="Training features NAME.npy [N, D].")],
    bits: Annotated[int, typer.Option(help="Code length M (a multiple of 8).")] = 32,
    method: Annotated[str, typer.Option(help="tbh, itq, pcah or lsh.")] = "tbh",
    steps: Annotated[
        int | None, typer.Option(help="Training iterations (default: the preset's).")
    ] = None,
    batch_size: Annotated[
        int, typer.Option(help="Items per step; also the size of TBH's per-batch graph.")
    ] = 400,
    seed: Annotated[int, typer.Option(help="Seed of weights, shuffles, priors, projections.")] = 0,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Run directory (default: runs/NAME-METHOD-BITS)."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its checkpoint.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the run in --out.")] = False,
    variant: Annotated[
        str, typer.Option(help="code (released code) or paper (paper figure).")
    ] = "code",
    preset: Annotated[
        str, typer.Option(help="faithful (Adam 1e-4, 100k steps) or fast (Adam 1e-3, 3k steps).")
    ] = "faithful",
    lr: Annotated[
        float | None, typer.Option(help="Adam learning rate (default: the preset's).")
    ] = None,
    decoder_output: Annotated[
        str, typer.Option(help="auto (relu for features >= 0), relu or identity.")
    ] = "auto",
    gamma: Annotated[
        float | None,
        typer.Option(
            help="Exponent of the code-driven graph A = (1 - Dh/M)^gamma (default: 1.4, "
            "paper 1.0); larger = a more local graph. See docs/results.md."
        ),
    ] = None,
    single_bottleneck: Annotated[
        bool,
        typer.Option(
            "--single-bottleneck",
            help="Ablation: decoder reads the codes; no continuous bottleneck.",
        ),
    ] = False,
    fixed_graph: Annotated[
        bool,
        typer.Option(
            "--fixed-graph", help="Ablation: graph from the input features instead of the codes."
        ),
    ] = False,
    deterministic_neuron: Annotated[
        bool,
        typer.Option(
            "--deterministic-neuron",
            help="Ablation: b = [logit > 0] with a straight-through gradient.",
        ),
    ] = False,
    eval_every: Annotated[
        int, typer.Option(help="Log mAP@1000 on --eval-queries every N steps (0: never).")
    ] = 0,
    eval_queries: Annotated[
        Path | None, typer.Option(help="Held-out queries NAME.npy with NAME.labels.npy.")
    ] = None,
    device: DeviceOption = "auto",
) -> None:
    """Train TBH (or an LSH / PCAH / ITQ baseline) and write runs/<name>/."""
    from tbhcli.training.fit import train as run_train

    path = run_train(
        features,
        bits=bits,
        method=method,
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        out=out,
        resume=resume,
        force=force,
        variant=variant,
        preset=preset,
        lr=lr,
        decoder_output=decoder_output,
        gamma=gamma,
        single_bottleneck=single_bottleneck,
        fixed_graph=fixed_graph,
        stochastic_neuron=not deterministic_neuron,
        eval_every=eval_every,
        eval_queries=eval_queries,
        device=device,
    )
    err_console.print(f"run written to {path}")


@app.command()
def export(
    run: Annotated[
        Path | None, typer.Argument(help="Run directory (default: the newest under runs/).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="ONNX file (default: onnx/<run>.onnx)."),
    ] = None,
    input: Annotated[
        str, typer.Option(help="images (uint8 pixels, with the backbone) or features.")
    ] = "images",
    backbone_weights: Annotated[
        Path | None, typer.Option(help="Local state dict for the run's backbone.")
    ] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset version.")] = 17,
) -> None:
    """Export a run to one ONNX file (images or features -> packed codes), checked against torch."""
    from tbhcli.deploy.export import export as run_export

    run_export(run, out, input, backbone_weights, opset)


@app.command()
def index(
    images: Annotated[Path, typer.Argument(help="Image folder (recursive; class subfolders).")],
    store: StoreOption = None,
    model: Annotated[
        Path | None, typer.Option(help="ONNX model (default: the newest in onnx/).")
    ] = None,
    queries: Annotated[
        Path | None, typer.Option(help="Folder of query images recorded for `tbh evaluate`.")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per inference batch.")] = 256,
    workers: WorkersOption = None,
    errors: Annotated[
        Path | None, typer.Option(help="Write the skipped (unreadable) files to this file.")
    ] = None,
    device: DeviceOption = "auto",
) -> None:
    """Encode an image folder and append the codes to the store; re-running adds new images."""
    from tbhcli.storage.indexing import index as run_index

    report = run_index(images, store, model, queries, batch_size, workers, errors, device)
    for table in report.tables:
        err_console.print(
            f"{table.folder}: {table.added} added, {table.already} already indexed, "
            f"{len(table.errors)} skipped (unreadable)",
            highlight=False,
            soft_wrap=True,
        )
        for path, why in table.errors[:5]:
            err_console.print(
                f"  [yellow]skipped[/] {path}: {why}", highlight=False, soft_wrap=True
            )
    if any(len(t.errors) > 5 for t in report.tables) and errors is None:
        err_console.print("  ... pass --errors FILE for the full list", highlight=False)
    err_console.print(
        f"store {report.store}: {report.rows} images; {report.added} added in "
        f"{report.seconds:.1f} s ({report.images_per_s:.0f} images/s)",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def query(
    images: Annotated[list[Path], typer.Argument(help="Query images or folders of images.")],
    top: Annotated[int, typer.Option(help="Neighbours per query.")] = 10,
    radius: Annotated[
        int | None, typer.Option(help="Only neighbours within this Hamming distance.")
    ] = None,
    store: StoreOption = None,
    model: Annotated[
        Path | None, typer.Option(help="ONNX model (default: the one the store was built with).")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON results.")] = False,
    html: Annotated[
        Path | None, typer.Option(help="Write an HTML gallery of the results to this file.")
    ] = None,
    device: DeviceOption = "auto",
    dask: DaskOption = None,
) -> None:
    """Find the nearest indexed images by Hamming distance (exact; ties by index order)."""
    from tbhcli.apps.query import print_results, results_json
    from tbhcli.apps.query import query as run_query

    results = run_query(images, top, store, model, radius, device, dask=dask)
    if html is not None:
        from tbhcli.apps.gallery import write_gallery

        err_console.print(f"gallery written to {write_gallery(results, html)}")
    if json_output:
        typer.echo(results_json(results))
    else:
        print_results(results, Console())


@app.command()
def duplicates(
    radius: Annotated[int, typer.Option(help="Most bits two near duplicates may differ in.")] = 2,
    store: StoreOption = None,
    threads: ThreadsOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON groups.")] = False,
) -> None:
    """List groups of indexed images whose codes are within --radius bits of each other."""
    from tbhcli.apps.duplicates import duplicates as run_duplicates
    from tbhcli.apps.duplicates import groups_json, print_groups

    groups = run_duplicates(store, radius, threads)
    if json_output:
        typer.echo(groups_json(groups))
    else:
        print_groups(groups, Console())


@app.command()
def info(
    workspace: Annotated[Path, typer.Argument(help="Workspace folder.")] = Path("."),
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show the runs, ONNX models and code store in a workspace."""
    from tbhcli.apps.info import info as run_info
    from tbhcli.apps.info import print_info

    result = run_info(workspace)
    if json_output:
        import json

        typer.echo(json.dumps(result, indent=2))
    else:
        print_info(result, Console())


def main() -> None:
    """Entry point of the `tbh` console script."""
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]; rerun the same command to resume.")
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
