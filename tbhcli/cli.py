"""The `tbh` command: a thin Typer layer; each subcommand calls the library verb of its name."""

import logging
from pathlib import Path
from typing import Annotated

import click
import typer
from typer.core import TyperGroup

import tbhcli
from tbhcli.cli_options import (
    BackboneOption,
    BackboneWeightsOption,
    DaskOption,
    DecoderOutput,
    Device,
    DeviceOption,
    ImageBatchOption,
    ImageSizeOption,
    JpegDecoder,
    JsonOption,
    MeanOption,
    MethodOption,
    ModelInput,
    ModelOption,
    Preset,
    RecordedWeightsOption,
    RunOption,
    SearchMethod,
    StdOption,
    StoreOption,
    TbhCommand,
    ThreadsOption,
    TrainMethod,
    Variant,
    WorkersOption,
    complete_backbone,
    examples,
    preprocess,
)
from tbhcli.errors import TbhError
from tbhcli.jsondoc import document
from tbhcli.terminal import make_console, shown
from tbhcli.training import defaults

err_console = make_console(stderr=True)
DEFAULT_PRESET = Preset(defaults.PRESET)


class _UserErrorsAsOneLine(TyperGroup):
    """Print a TbhError from any command as one red line and exit 1 (also under CliRunner)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TbhError as exc:
            err_console.print(f"[bold red]error:[/] {shown(exc)}", soft_wrap=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_UserErrorsAsOneLine,
    no_args_is_help=True,
    add_completion=True,  # typer's own: tbh --install-completion / --show-completion
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts are plain: "[logit > 0]" must print as written
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"tbh {tbhcli.__version__}")
        raise typer.Exit()


@app.callback()
def _tbh(
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Twin-Bottleneck Hashing: train, export, index, query and evaluate binary image codes."""
    _show_warnings()


class _WarningLine(logging.Handler):
    """Library warnings (a search that falls back to the scan) as one yellow line each."""

    def emit(self, record: logging.LogRecord) -> None:
        err_console.print(f"[yellow]warning:[/] {shown(record.getMessage())}", soft_wrap=True)


def _show_warnings() -> None:
    logger = logging.getLogger("tbhcli")
    if not any(isinstance(h, _WarningLine) for h in logger.handlers):
        logger.addHandler(_WarningLine(logging.WARNING))
        logger.propagate = False


def command(*lines: str):
    """`app.command` for a tbh command: old option names accepted, examples in the help."""
    return app.command(cls=TbhCommand, epilog=examples(*lines))


# ---- commands: each block is owned by the module it calls --------------------------------------


@command("tbh demo", "tbh demo --workspace /tmp/tbh-demo --steps 200")
def demo(
    workspace: Annotated[
        Path, typer.Option(metavar="DIR", help="Folder for images, runs, models, store.")
    ] = Path("demo"),
    steps: Annotated[
        int | None,
        typer.Option(metavar="N", help="TBH training steps per run (default: 1000, preset fast)."),
    ] = None,
) -> None:
    """Offline end-to-end demo on MNIST digits with EfficientNet-Lite0 features."""
    from tbhcli.apps.demo import TBH_STEPS
    from tbhcli.apps.demo import demo as run_demo

    run_demo(workspace, TBH_STEPS if steps is None else steps)


@command(
    "tbh features ./images -o features.npy",
    "tbh features ./images -o r50.npy --backbone resnet50 --backbone-weights r50.pth",
    "tbh features ./images -o f.npy --backbone onnx:extractor.onnx --mean 0.5,0.5,0.5 "
    "--std 0.5,0.5,0.5",
)
def features(
    images: Annotated[
        Path,
        typer.Argument(metavar="IMAGES_DIR", help="Image folder; class subfolders become labels."),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", metavar="NAME.npy", help="Output feature file.")
    ],
    backbone: BackboneOption = "efficientnet-lite0",
    backbone_weights: BackboneWeightsOption = None,
    image_size: ImageSizeOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
    batch_size: ImageBatchOption = 256,
    workers: WorkersOption = None,
    device: DeviceOption = Device.auto,
    json_output: JsonOption = False,
) -> None:
    """Embed an image folder into NAME.npy (+ NAME.labels.npy, NAME.meta.json)."""
    from tbhcli.imaging.embed import features as run_features
    from tbhcli.imaging.embed import features_summary

    chosen = preprocess(None, mean, std)
    path = run_features(
        images, out, backbone, backbone_weights, image_size, batch_size, workers, device,
        chosen["mean"], chosen["std"],
    )  # fmt: skip
    if json_output:
        typer.echo(document("features", features_summary(path)))


@command(
    "tbh evaluate --metric map@1000 --metric p@r2",
    "tbh evaluate --store codes.zarr --query-store queries.zarr --plot pr.png --json",
    "tbh evaluate --run runs/db-tbh-32 --run runs/db-itq-32 --database db.npy "
    "--query-features q.npy --plot pr.png",
)
def evaluate(
    metric: Annotated[
        list[str] | None,
        typer.Option(
            metavar="METRIC",
            help="map@K, map@all, p@K or p@rR (precision within radius R); repeatable "
            "(default: map@1000).",
        ),
    ] = None,
    run: RunOption = None,
    database: Annotated[
        Path | None,
        typer.Option(
            metavar="DB.npy",
            help="Database features (with DB.labels.npy): evaluate --run on feature sets.",
        ),
    ] = None,
    query_features: Annotated[
        Path | None,
        typer.Option(metavar="Q.npy", help="Query features with labels (with --database)."),
    ] = None,
    store: StoreOption = None,
    query_store: Annotated[
        Path | None,
        typer.Option(
            metavar="STORE", help="Store of query codes (default: the store's query set)."
        ),
    ] = None,
    json_output: JsonOption = False,
    plot: Annotated[
        Path | None,
        typer.Option(metavar="IMAGE", help="Write the PR curve to this image (png, svg, pdf)."),
    ] = None,
    threads: ThreadsOption = None,
    dask: DaskOption = None,
) -> None:
    """Retrieval quality against ground-truth labels (relevant = shares a label)."""
    from tbhcli.evaluation.evaluate import evaluate as run_evaluate
    from tbhcli.evaluation.evaluate import evaluate_runs, evaluations_json, print_scores

    if run and len(run) > 1:
        results = evaluate_runs(run, database, query_features, metric, plot, threads, dask)
    else:
        one = run[0] if run else None
        results = [
            run_evaluate(
                metric, one, database, query_features, store, query_store, plot, threads, dask
            )
        ]
    if json_output:
        typer.echo(evaluations_json(results))
        return
    print_scores(results, make_console())
    if plot is not None:
        curves = "curves" if len(results) > 1 else "curve"
        make_console().print(f"precision-recall {curves} written to {shown(plot)}")


@command(
    "tbh train features.npy --bits 32",
    "tbh train features.npy --bits 64 --method auto",
    "tbh train features.npy --preset faithful --steps 100000",
)
def train(
    features: Annotated[Path, typer.Argument(help="Training features NAME.npy [N, D].")],
    bits: Annotated[int, typer.Option(help="Code length M (a multiple of 8, at most 4096).")] = 32,
    method: Annotated[
        TrainMethod,
        typer.Option(help="TBH, a baseline, or auto (fit all four, keep the best held-out)."),
    ] = TrainMethod.tbh,
    steps: Annotated[
        int | None,
        typer.Option(help="Train exactly N steps (default: stop at the validation plateau)."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(help="Items per step; also the size of TBH's per-batch graph.")
    ] = 400,
    seed: Annotated[
        int, typer.Option(help="Seed of weights, shuffles, priors, projections, the split.")
    ] = 0,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Run directory (default: runs/NAME-METHOD-BITS)."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its checkpoint.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the run in --out.")] = False,
    variant: Annotated[
        Variant, typer.Option(help="code (released code) or paper (paper figure).")
    ] = Variant.code,
    preset: Annotated[
        Preset,
        typer.Option(
            help="fast (Adam 1e-3, gamma 8, stops at its plateau) or faithful (the released "
            "code: Adam 1e-4, 100k steps, gamma 1.4)."
        ),
    ] = DEFAULT_PRESET,
    lr: Annotated[
        float | None, typer.Option(help="Adam learning rate (default: the preset's).")
    ] = None,
    decoder_output: Annotated[
        DecoderOutput, typer.Option(help="auto: relu for features >= 0, else identity.")
    ] = DecoderOutput.auto,
    gamma: Annotated[
        float | None,
        typer.Option(
            help="Exponent of the code-driven graph A = (1 - Dh/M)^gamma (default: the preset's, "
            "fast 8; faithful 1.4, paper 1.0); larger = a more local graph."
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
    val_fraction: Annotated[
        float,
        typer.Option(
            help="Features held out for validation (at most 2,000); 0: train on all, no stopping."
        ),
    ] = defaults.VAL_FRACTION,
    val_every: Annotated[int, typer.Option(help="Validate every N steps.")] = defaults.VAL_EVERY,
    patience: Annotated[
        int, typer.Option(help="Stop after N steps without a held-out gain.")
    ] = defaults.PATIENCE,
    min_steps: Annotated[
        int, typer.Option(help="Never stop before this step.")
    ] = defaults.MIN_STEPS,
    eval_every: Annotated[
        int, typer.Option(help="Log mAP@1000 on --eval-queries every N steps (0: never).")
    ] = 0,
    eval_queries: Annotated[
        Path | None, typer.Option(help="Held-out queries NAME.npy with NAME.labels.npy.")
    ] = None,
    device: DeviceOption = Device.auto,
    json_output: JsonOption = False,
) -> None:
    """Train TBH (or LSH / PCAH / ITQ, or the best of them) and write runs/<name>/."""
    from tbhcli.training.fit import summary
    from tbhcli.training.fit import train as run_train
    from tbhcli.training.report import print_summary, summary_json

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
        val_fraction=val_fraction,
        val_every=val_every,
        patience=patience,
        min_steps=min_steps,
        eval_every=eval_every,
        eval_queries=eval_queries,
        device=device,
        quiet=json_output,
    )
    result = summary(path)
    if json_output:
        typer.echo(summary_json(path, result))
    else:
        print_summary(path, result, make_console())
    err_console.print(f"run written to {shown(path)}")


@command(
    "tbh export",
    "tbh export runs/db-tbh-32 -o onnx/tbh-32.onnx",
    "tbh export runs/db-itq-32 --input features",
)
def export(
    run: Annotated[
        Path | None,
        typer.Argument(metavar="RUN_DIR", help="Run folder (default: the newest under runs/)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", metavar="MODEL.onnx", help="ONNX file (default: onnx/<run>.onnx)."
        ),
    ] = None,
    input: Annotated[
        ModelInput,
        typer.Option(help="images: uint8 pixels through the run's backbone; features: rows."),
    ] = ModelInput.images,
    backbone_weights: BackboneWeightsOption = None,
    opset: Annotated[int, typer.Option(metavar="N", help="ONNX opset version.")] = 17,
    json_output: JsonOption = False,
) -> None:
    """Export a run to one ONNX file (images or features -> packed codes), checked against torch."""
    from tbhcli.deploy.export import export as run_export
    from tbhcli.deploy.runtime import model_info
    from tbhcli.workspace import resolve_run

    run = resolve_run(run)
    path = run_export(run, out, input, backbone_weights, opset)
    if json_output:
        meta = model_info(path)
        summary = {"run": run, "model": path, "input": meta.input, "bits": meta.bits,
                   "method": meta.method, "backbone": meta.backbone,
                   "image_size": meta.image_size, "feature_dim": meta.feature_dim,
                   "sha256": meta.sha256}  # fmt: skip
        typer.echo(document("export", summary))


@command(
    "tbh index ./images --multi-index",
    "tbh index ./images --query-images ./queries --errors skipped.txt",
    "tbh index /new/place/images --root --prune",
)
def index(
    images: Annotated[
        Path,
        typer.Argument(metavar="IMAGES_DIR", help="Image folder (recursive; class subfolders)."),
    ],
    store: StoreOption = None,
    model: ModelOption = None,
    backbone_weights: RecordedWeightsOption = None,
    query_images: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="Folder of query images recorded for `tbh evaluate`."),
    ] = None,
    batch_size: ImageBatchOption = 256,
    workers: WorkersOption = None,
    errors: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Write the skipped (unreadable) files to this file."),
    ] = None,
    device: DeviceOption = Device.auto,
    root: Annotated[
        bool,
        typer.Option("--root", help="The indexed folder moved: re-point the store at IMAGES_DIR."),
    ] = False,
    prune: Annotated[
        bool, typer.Option("--prune", help="Then drop the rows whose files are gone.")
    ] = False,
    multi_index: Annotated[
        bool,
        typer.Option(
            "--multi-index",
            help="Also build multi-index tables for sub-linear exact search (kept up to date by "
            "later runs).",
        ),
    ] = False,
    dask: Annotated[
        str | None,
        typer.Option(
            metavar="ADDRESS",
            help='Decode and encode on a Dask cluster: "local" (--workers sets its size) '
            "or a scheduler address.",
        ),
    ] = None,
    files: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE", help="Index the files listed here (one path a line), not a listing."
        ),
    ] = None,
    task_size: Annotated[
        int, typer.Option(metavar="N", help="Files per Dask task (with --dask).")
    ] = 2048,
    jpeg_decoder: Annotated[
        JpegDecoder,
        typer.Option(
            help="JPEG decoding on Dask workers: auto (nvJPEG where the model runs on CUDA), "
            "pillow or nvjpeg."
        ),
    ] = JpegDecoder.auto,
    json_output: JsonOption = False,
) -> None:
    """Encode an image folder and append the codes to the store; re-running adds new images."""
    from tbhcli.storage.indexing import index as run_index

    report = run_index(
        images,
        store,
        model,
        query_images,
        batch_size,
        workers,
        errors,
        device,
        repoint=root,
        prune=prune,
        multi_index=multi_index,
        dask=dask,
        files=files,
        task_size=task_size,
        jpeg_decoder=jpeg_decoder,
        backbone_weights=backbone_weights,
    )
    for table in report.tables:
        err_console.print(
            f"{shown(table.folder)}: {table.added} added, {table.already} already indexed, "
            f"{len(table.errors)} skipped (unreadable)",
            soft_wrap=True,
        )
        for path, why in table.errors[:5]:
            err_console.print(f"  [yellow]skipped[/] {shown(path)}: {shown(why)}", soft_wrap=True)
    if any(len(t.errors) > 5 for t in report.tables) and errors is None:
        err_console.print("  ... pass --errors FILE for the full list")
    err_console.print(
        f"store {shown(report.store)}: {report.rows} images; {report.added} added in "
        f"{report.seconds:.1f} s ({report.images_per_s:.0f} images/s)",
        soft_wrap=True,
    )
    if report.removed is not None:
        _print_removed(report.removed)
    if report.multi_index is not None:
        rows, segments = report.multi_index
        err_console.print(f"multi-index tables: {rows} rows in {segments} segment(s)")
    if json_output:
        typer.echo(report.to_json())


def _print_removed(report) -> None:
    for table, names in report.removed.items():
        err_console.print(
            f"{table}: {len(names)} removed (file gone), {report.rows[table]} kept", soft_wrap=True
        )
        for name in names[:5]:
            err_console.print(f"  [yellow]removed[/] {shown(name)}", soft_wrap=True)


@command("tbh remove", "tbh remove --store other.zarr")
def remove(store: StoreOption = None) -> None:
    """Drop the rows whose image files are gone; the other rows keep their codes and order."""
    from tbhcli.storage.prune import remove as run_remove

    _print_removed(run_remove(store))


@command("tbh check", "tbh check --store codes.zarr --repair", "tbh check --repair --dry-run")
def check(
    store: StoreOption = None,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Rebuild damaged tables from their evidence; keeps every whole row.",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="With --repair: list what it would change.")
    ] = False,
) -> None:
    """Verify the store: metadata, every chunk and its checksum, paths, labels, multi-index."""
    from tbhcli.storage.check import check as run_check

    report = run_check(store, repair, dry_run and repair)
    for note in report.notes:
        err_console.print(f"[yellow]note:[/] {shown(note)}", soft_wrap=True)
    done = "[yellow]would repair[/]" if report.dry_run else "[green]repaired[/]"
    for line in report.repaired:
        err_console.print(f"{done} {shown(line)}", soft_wrap=True)
    if report.backup is not None:
        err_console.print(
            f"the replaced metadata is kept in {shown(report.backup)}", soft_wrap=True
        )
    for problem in report.problems:
        err_console.print(f"[red]problem[/] {shown(problem)}", soft_wrap=True)
    rows = ", ".join(f"{t.name} {t.rows} rows" for t in report.tables)
    if report.problems and not report.dry_run:
        hint = "" if repair else "; `tbh check --repair` keeps every whole row"
        err_console.print(f"store {shown(report.store)}: damaged ({rows}){hint}", soft_wrap=True)
        raise typer.Exit(1)
    if report.dry_run:
        state = "damaged" if report.problems else "OK"
        err_console.print(
            f"store {shown(report.store)}: {state} ({rows}); nothing changed (--dry-run)",
            soft_wrap=True,
        )
        raise typer.Exit(1 if report.problems else 0)
    then = "; `tbh index` re-adds the dropped images" if report.repaired else ""
    err_console.print(f"store {shown(report.store)}: OK ({rows}){then}", soft_wrap=True)


@command(
    "tbh query img.jpg --top 100",
    "tbh query ./queries --radius 2 --json",
    "tbh query img.jpg --html gallery.html",
)
def query(
    images: Annotated[
        list[Path],
        typer.Argument(metavar="IMAGE_OR_DIR", help="Query images or folders of images."),
    ],
    top: Annotated[int, typer.Option(metavar="K", help="Neighbours per query.")] = 10,
    radius: Annotated[
        int | None,
        typer.Option(metavar="R", help="Only neighbours within this Hamming distance."),
    ] = None,
    store: StoreOption = None,
    model: Annotated[
        Path | None,
        typer.Option(
            metavar="MODEL.onnx", help="ONNX model file (default: the store's own model)."
        ),
    ] = None,
    backbone_weights: RecordedWeightsOption = None,
    json_output: JsonOption = False,
    html: Annotated[
        Path | None,
        typer.Option(metavar="FILE.html", help="Write an HTML gallery of the results here."),
    ] = None,
    device: DeviceOption = Device.auto,
    dask: DaskOption = None,
    method: MethodOption = SearchMethod.auto,
) -> None:
    """Find the nearest indexed images by Hamming distance (exact; ties by index order)."""
    from tbhcli.apps.query import print_results, results_json
    from tbhcli.apps.query import query as run_query

    results = run_query(
        images, top, store, model, radius, device, dask=dask, method=method,
        backbone_weights=backbone_weights,
    )  # fmt: skip
    if html is not None:
        from tbhcli.apps.gallery import write_gallery

        err_console.print(f"gallery written to {shown(write_gallery(results, html))}")
    if json_output:
        typer.echo(results_json(results))
    else:
        print_results(results, make_console())


@command(
    "tbh duplicates ./photos --html groups.html --to-remove remove.txt",
    "tbh duplicates --radius 0 --json",
    "tbh duplicates --store other.zarr",
)
def duplicates(
    folder: Annotated[
        Path | None,
        typer.Argument(
            metavar="[PHOTOS_DIR]",
            help="Photo folder: embed it (only new files on later runs) and group it. "
            "Without it, group the images already in --store.",
        ),
    ] = None,
    radius: Annotated[
        int | None,
        typer.Option(
            metavar="R",
            help="Most bits two near duplicates may differ in (default: with PHOTOS_DIR, a "
            "quarter of the DCT bits, 32 of 128; for a CNN's or a store's codes, 2; see "
            "docs/duplicates.md).",
        ),
    ] = None,
    store: Annotated[
        Path | None,
        typer.Option(
            metavar="STORE.zarr",
            help="Code store (default: codes.zarr; with PHOTOS_DIR: PHOTOS_DIR/.tbh/"
            "duplicates.zarr).",
        ),
    ] = None,
    backbone: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="Features of PHOTOS_DIR's first run: gray32 (default) is hashed by its "
            "low-frequency DCT signs and finds copies of a photo (re-encoded, resized, edited); "
            "a CNN (efficientnet-lite0, resnet50, vgg16-fc7, or your own onnx:PATH, timm:NAME, "
            "clip:NAME) is hashed by ITQ and groups photos of similar things.",
            autocompletion=complete_backbone,
            show_default=False,
        ),
    ] = None,
    backbone_weights: BackboneWeightsOption = None,
    image_size: ImageSizeOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
    bits: Annotated[
        int | None,
        typer.Option(
            metavar="M",
            help="Code length of PHOTOS_DIR's first run (default: 128 with gray32, 256 with a "
            "CNN).",
            show_default=False,
        ),
    ] = None,
    keep: Annotated[
        str,
        typer.Option(
            metavar="POLICY",
            help="Which file of a group to keep: largest (resolution, then file size, then "
            "first path), first, newest or oldest.",
        ),
    ] = "largest",
    to_remove: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE", help="Write every grouped file but the kept one here, one per line."
        ),
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option(metavar="FILE.html", help="Write a page of the groups with thumbnails."),
    ] = None,
    threads: ThreadsOption = None,
    workers: WorkersOption = None,
    device: DeviceOption = Device.auto,
    json_output: JsonOption = False,
) -> None:
    """Group near-duplicate images: of a photo folder (no training step), or of a code store.

    Never deletes or moves a file: --to-remove writes the list for you to act on.
    """
    from tbhcli.apps.duplicates import duplicates as store_duplicates
    from tbhcli.apps.duplicates import print_groups
    from tbhcli.apps.keep import check_keep, decide, write_to_remove
    from tbhcli.apps.photos import STORE_RADIUS, fitted_radius, update_store
    from tbhcli.storage.store import open_store
    from tbhcli.workspace import resolve_store

    check_keep(keep)
    if folder is not None:
        chosen = preprocess(image_size, mean, std)
        cache = update_store(
            folder, store, backbone, backbone_weights, bits, workers, device, chosen
        )
        store = cache.store
        radius = fitted_radius(cache) if radius is None else radius
    store = resolve_store(store)  # named once when it is the default
    radius = STORE_RADIUS if radius is None else radius
    groups = store_duplicates(store, radius, threads)
    decisions = decide(groups, open_store(store).root, keep)
    if to_remove is not None:
        count = write_to_remove(decisions, to_remove)
        err_console.print(f"{count} files to remove listed in {to_remove} (nothing was deleted)")
    if html is not None:
        from tbhcli.apps.duplicates_page import write_page

        err_console.print(f"groups page written to {write_page(decisions, html)}")
    if json_output:
        from tbhcli.apps.keep import decisions_json

        typer.echo(decisions_json(decisions, store, radius))
    else:
        print_groups(groups, make_console())


@command("tbh info", "tbh info demo --json")
def info(
    workspace: Annotated[
        Path, typer.Argument(metavar="WORKSPACE", help="Workspace folder.")
    ] = Path("."),
    json_output: JsonOption = False,
) -> None:
    """Show the runs, ONNX models and code store in a workspace."""
    from tbhcli.apps.info import info as run_info
    from tbhcli.apps.info import print_info

    result = run_info(workspace)
    if json_output:
        typer.echo(document("info", result))
    else:
        print_info(result, make_console())


@command(
    "tbh serve",
    "tbh serve --store codes.zarr --port 8080",
    "tbh serve --host 0.0.0.0 --token-file secret.txt",
)
def serve(
    store: StoreOption = None,
    model: Annotated[
        Path | None,
        typer.Option(
            metavar="MODEL.onnx", help="ONNX model file (default: the store's own model)."
        ),
    ] = None,
    host: Annotated[
        str,
        typer.Option(
            metavar="ADDRESS", help="Listen address; other than loopback needs --token-file."
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", help="TCP port (0: any free one).")] = 8000,
    token_file: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="File holding the bearer token clients must send."),
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Allow a non-loopback --host without a token.")
    ] = False,
    max_upload_mb: Annotated[
        float, typer.Option(metavar="MB", help="Largest request body, in MiB.")
    ] = 10.0,
    device: DeviceOption = Device.auto,
    threads: ThreadsOption = None,
) -> None:
    """Serve the store as an HTTP API (docs at /docs) and a search page at /, until Ctrl-C."""
    from tbhcli.apps.serve import serve as run_serve

    run_serve(store, model, host, port, token_file, insecure, max_upload_mb, device, threads)


def main() -> None:
    """Entry point of the `tbh` console script."""
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]; rerun the same command to resume.")
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
