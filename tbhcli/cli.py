"""The `tbh` command: a thin Typer layer; each subcommand calls the library verb of its name."""

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
from tbhcli.errors import TbhError, on_command_line
from tbhcli.jsondoc import document
from tbhcli.terminal import ProgressBars, log_to_stderr, make_console, shown
from tbhcli.training.options import TrainOptions

err_console = make_console(stderr=True)
TRAIN = TrainOptions(Path())  # the defaults of `tbh train`, written once (training/options.py)


# `tbh --help` lists the commands in the order of the data path, then the maintenance ones.
COMMAND_ORDER = (
    "demo", "features", "train", "evaluate", "export", "index", "query", "duplicates", "serve",
    "info", "check", "remove",
)  # fmt: skip


class _UserErrorsAsOneLine(TyperGroup):
    """Print a TbhError from any command as one red line and exit 1 (also under CliRunner)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: (COMMAND_ORDER + (n,)).index(n))

    def invoke(self, ctx: click.Context):
        log_to_stderr()  # what the library logs (the model in use, files written) shows here
        try:
            with on_command_line():
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

    chosen = preprocess(None, mean, std)
    with ProgressBars(err_console) as bars:
        written = run_features(
            images, out, backbone=backbone, backbone_weights=backbone_weights,
            image_size=image_size, batch_size=batch_size, workers=workers, device=device,
            mean=chosen["mean"], std=chosen["std"], progress=bars,
        )  # fmt: skip
    if json_output:
        typer.echo(written.to_json())


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
    from tbhcli.evaluation.evaluate import Evaluations, evaluate_runs
    from tbhcli.evaluation.evaluate import evaluate as run_evaluate

    common = {"metric": metric, "query_features": query_features, "plot": plot,
              "threads": threads, "dask": dask}  # fmt: skip
    if run and len(run) > 1:  # runs compared on the same feature sets
        results = evaluate_runs(run, database=database, **common)
    else:
        one = run[0] if run else None
        results = Evaluations([run_evaluate(run=one, database=database, store=store,
                                            query_store=query_store, **common)])  # fmt: skip
    if json_output:
        typer.echo(results.to_json())
    else:
        make_console().print(results)


@command(
    "tbh train features.npy --bits 32",
    "tbh train features.npy --bits 64 --method auto",
    "tbh train features.npy --preset faithful --steps 100000",
)
def train(
    features: Annotated[Path, typer.Argument(help="Training features NAME.npy [N, D].")],
    bits: Annotated[
        int, typer.Option(help="Code length M (a multiple of 8, at most 4096).")
    ] = TRAIN.bits,
    method: Annotated[
        TrainMethod,
        typer.Option(help="TBH, a baseline, or auto (fit all four, keep the best held-out)."),
    ] = TRAIN.method,
    steps: Annotated[
        int | None,
        typer.Option(help="Train exactly N steps (default: stop at the validation plateau)."),
    ] = TRAIN.steps,
    batch_size: Annotated[
        int, typer.Option(help="Items per step; also the size of TBH's per-batch graph.")
    ] = TRAIN.batch_size,
    seed: Annotated[
        int, typer.Option(help="Seed of weights, shuffles, priors, projections, the split.")
    ] = TRAIN.seed,
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
    ] = TRAIN.variant,
    preset: Annotated[
        Preset,
        typer.Option(
            help="fast (Adam 1e-3, gamma 8, stops at its plateau) or faithful (the released "
            "code: Adam 1e-4, 100k steps, gamma 1.4)."
        ),
    ] = TRAIN.preset,
    lr: Annotated[
        float | None, typer.Option(help="Adam learning rate (default: the preset's).")
    ] = TRAIN.lr,
    decoder_output: Annotated[
        DecoderOutput, typer.Option(help="auto: relu for features >= 0, else identity.")
    ] = TRAIN.decoder_output,
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
    ] = TRAIN.val_fraction,
    val_every: Annotated[int, typer.Option(help="Validate every N steps.")] = TRAIN.val_every,
    patience: Annotated[
        int, typer.Option(help="Stop after N steps without a held-out gain.")
    ] = TRAIN.patience,
    min_steps: Annotated[int, typer.Option(help="Never stop before this step.")] = TRAIN.min_steps,
    eval_every: Annotated[
        int, typer.Option(help="Log mAP@1000 on --eval-queries every N steps (0: never).")
    ] = TRAIN.eval_every,
    eval_queries: Annotated[
        Path | None, typer.Option(help="Held-out queries NAME.npy with NAME.labels.npy.")
    ] = None,
    device: DeviceOption = Device.auto,
    json_output: JsonOption = False,
) -> None:
    """Train TBH (or LSH / PCAH / ITQ, or the best of them) and write runs/<name>/."""
    from tbhcli.training.fit import train as run_train

    options = TrainOptions(
        features, bits=bits, method=method, steps=steps, batch_size=batch_size, seed=seed,
        out=out, resume=resume, force=force, variant=variant, preset=preset, lr=lr,
        decoder_output=decoder_output, gamma=gamma, single_bottleneck=single_bottleneck,
        fixed_graph=fixed_graph, stochastic_neuron=not deterministic_neuron,
        val_fraction=val_fraction, val_every=val_every, patience=patience, min_steps=min_steps,
        eval_every=eval_every, eval_queries=eval_queries, device=device, quiet=json_output,
    )  # fmt: skip
    run = run_train(features, options)
    if json_output:
        typer.echo(run.to_json())
    else:
        make_console().print(run)
    err_console.print(f"run written to {shown(run.path)}")


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

    model = run_export(
        run, out=out, input=input, backbone_weights=backbone_weights, opset=opset
    )  # logs its summary line
    if json_output:
        typer.echo(model.to_json())


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
    from tbhcli.indexing.index import index as run_index

    with ProgressBars(err_console) as bars:
        report = run_index(
            images, store=store, model=model, query_images=query_images, batch_size=batch_size,
            workers=workers, errors=errors, device=device, repoint=root, prune=prune,
            multi_index=multi_index, dask=dask, files=files, task_size=task_size,
            jpeg_decoder=jpeg_decoder, backbone_weights=backbone_weights, progress=bars,
        )  # fmt: skip
    err_console.print(report, soft_wrap=True)
    if json_output:
        typer.echo(report.to_json())


@command("tbh remove", "tbh remove --store other.zarr")
def remove(store: StoreOption = None) -> None:
    """Drop the rows whose image files are gone; the other rows keep their codes and order."""
    from tbhcli.storage.prune import remove as run_remove
    from tbhcli.storage.render import removed_lines

    for line in removed_lines(run_remove(store)):
        err_console.print(line, soft_wrap=True)


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

    report = run_check(store, repair=repair, dry_run=dry_run and repair)
    err_console.print(report, soft_wrap=True)
    raise typer.Exit(report.exit_code)


@command(
    "tbh query img.jpg --top 100",
    "tbh query ./queries --radius 2 --json --html gallery.html",
    'tbh query --text "a red bicycle" --top 20',
)
def query(
    images: Annotated[
        list[Path] | None,
        typer.Argument(metavar="IMAGE_OR_DIR", help="Query images or folders of images."),
    ] = None,
    text: Annotated[
        list[str] | None,
        typer.Option(
            "--text",
            metavar="TEXT",
            help="Query by a description instead (repeatable); needs a clip:NAME run's model.",
        ),
    ] = None,
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
    from tbhcli.apps.query import query as run_query
    from tbhcli.apps.query import query_text

    if bool(images) == bool(text):
        raise TbhError("give query images (IMAGE_OR_DIR) or --text, one of the two.")
    search = {
        "top": top, "store": store, "model": model, "radius": radius, "device": device,
        "dask": dask, "method": method,
    }  # fmt: skip
    if text:
        if html is not None:
            raise TbhError("--html shows query images; with --text use the table or --json.")
        results = query_text(text, **search)
    else:
        results = run_query(images, **search, backbone_weights=backbone_weights)
    if html is not None:
        from tbhcli.apps.gallery import write_gallery

        err_console.print(f"gallery written to {shown(write_gallery(results, html))}")
    if json_output:
        typer.echo(results.to_json())
    else:
        make_console().print(results)


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
            help="Photo folder: hash its photos (only new or changed files on later runs) and "
            "group them. Without it, group the images already in --store.",
        ),
    ] = None,
    radius: Annotated[
        int | None,
        typer.Option(
            metavar="R",
            help="Most bits two near duplicates may differ in (default: 66 of the photo code's "
            "192 bits; 2 for a CNN's or a store's codes; see docs/duplicates.md).",
        ),
    ] = None,
    store: Annotated[
        Path | None,
        typer.Option(
            metavar="STORE.zarr",
            help="Code store (default: codes.zarr). With PHOTOS_DIR: also write the photos' "
            "codes there (default: only a cache in PHOTOS_DIR/.tbh/).",
        ),
    ] = None,
    backbone: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="gray32 (default): the photo code (DCT and gradient signs of the whole "
            "picture) finds copies of a photo (re-encoded, resized, edited); "
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
            help="Code length of a CNN's first run (default: 256; the photo code has 192).",
            show_default=False,
        ),
    ] = None,
    keep: Annotated[
        str,
        typer.Option(
            metavar="POLICY",
            help="Which file of a group to keep (always a regular file, never a link): original "
            "(the group's medoid: most likely the unedited photo), largest (resolution, then "
            "file size), first, newest or oldest.",
        ),
    ] = "original",
    to_remove: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE", help="Write every grouped file but the kept one here, one per line."
        ),
    ] = None,
    null: Annotated[
        bool,
        typer.Option("--null", help="End each --to-remove path with NUL, not a line break."),
    ] = False,
    mirror: Annotated[
        bool,
        typer.Option(
            "--mirror", help="Also group mirrored and 90-degree-rotated copies (photo code only)."
        ),
    ] = False,
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
    from tbhcli.apps.duplicates_report import duplicates as find

    with ProgressBars(err_console) as bars:
        report = find(
            folder, store=store, radius=radius, backbone=backbone,
            backbone_weights=backbone_weights, bits=bits,
            preprocess=_preprocess_given(image_size, mean, std), keep=keep, to_remove=to_remove,
            null=null, html=html, mirror=mirror, workers=workers, threads=threads,
            device=device.value, progress=bars,
        )  # fmt: skip
    if json_output:
        typer.echo(report.to_json())
    elif html is not None:  # the page shows the groups; the terminal gets one line
        make_console().print(report.summary_line())
    else:
        make_console().print(report)


def _preprocess_given(image_size: int | None, mean: str | None, std: str | None) -> dict:
    """`preprocess` when one of the options is given; {} otherwise (imports no torch)."""
    if image_size is None and mean is None and std is None:
        return {}
    return preprocess(image_size, mean, std)


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
