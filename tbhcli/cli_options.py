"""The `tbh` options several commands share, each defined once, and the renamed options' old names.

One concept, one name: `--run` is a run folder (runs/NAME), `--model` an ONNX file, `--store` a
code store, `--query-images` a folder of query images, `--query-features` a labelled .npy and
`--query-store` a store of query codes. Old names keep working for one release as hidden aliases
that print one deprecation line on stderr (`RENAMED`). Nothing heavy is imported here, so
`tbh --help` stays fast.
"""

import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, get_args

import typer
from typer.core import TyperCommand

from tbhcli.training.options import DECODER_OUTPUTS, PRESETS


class JpegDecoder(StrEnum):
    """How Dask index workers decode JPEGs (indexing/cluster.py)."""

    auto = "auto"
    pillow = "pillow"
    nvjpeg = "nvjpeg"


class Device(StrEnum):
    """Where models run: CUDA when a GPU is present (auto), or forced."""

    auto = "auto"
    cuda = "cuda"
    cpu = "cpu"


# Built-in image backbones (tbhcli.imaging.backbones; a test keeps both lists equal), offered
# by shell completion with the prefixes of the user's own (tbhcli.imaging.external). `tiny` is
# for tests: accepted, never offered.
BACKBONES = ("efficientnet-lite0", "resnet50", "vgg16-fc7", "gray32")
TEST_BACKBONES = ("tiny",)
BACKBONE_KINDS = ("onnx:", "timm:", "clip:")


class TrainMethod(StrEnum):
    """What `tbh train` fits (tbhcli.training.config.METHODS; a test keeps both equal)."""

    tbh = "tbh"
    itq = "itq"
    pcah = "pcah"
    lsh = "lsh"
    auto = "auto"


class Variant(StrEnum):
    """TBH as the released code has it, or as the paper's figure draws it."""

    code = "code"
    paper = "paper"


# TBH's optimiser schedule and the decoder's last activation: the library's own lists
Preset = StrEnum("Preset", [(name, name) for name in PRESETS])
DecoderOutput = StrEnum("DecoderOutput", [(name, name) for name in DECODER_OUTPUTS])


class SearchMethod(StrEnum):
    """How top-k is found (tbhcli.search.topk): all exact, same results."""

    auto = "auto"
    scan = "scan"
    mih = "mih"


class ModelInput(StrEnum):
    """What an exported model takes: uint8 images (with the backbone) or features."""

    images = "images"
    features = "features"


StoreOption = Annotated[
    Path | None, typer.Option(metavar="STORE", help="Code store (default: codes.zarr).")
]
ModelOption = Annotated[
    Path | None,
    typer.Option(metavar="MODEL.onnx", help="ONNX model file (default: the newest in onnx/)."),
]
RunOption = Annotated[
    list[Path] | None,
    typer.Option(
        metavar="RUN_DIR",
        help="Run folder runs/NAME (default: the newest run); repeat to compare runs on the "
        "same feature sets (a column each, their PR curves overlaid in --plot).",
    ),
]


def complete_backbone(incomplete: str) -> list[str]:
    return [b for b in BACKBONES + BACKBONE_KINDS if b.startswith(incomplete)]


BackboneOption = Annotated[
    str,
    typer.Option(
        metavar="NAME",
        help="efficientnet-lite0 (offline), resnet50, vgg16-fc7, gray32, or your own: "
        "onnx:PATH, timm:NAME, clip:NAME (docs/features.md).",
        autocompletion=complete_backbone,
    ),
]
BackboneWeightsOption = Annotated[
    Path | None,
    typer.Option(
        metavar="FILE",
        help="Local state-dict file for the backbone (default: its ImageNet weights; timm: and "
        "clip: need one).",
    ),
]
ImageSizeOption = Annotated[
    int | None,
    typer.Option(metavar="PX", help="Square input side in pixels (default: the backbone's)."),
]
MeanOption = Annotated[
    str | None,
    typer.Option(
        metavar="R,G,B",
        help="Mean subtracted from [0, 1] pixels (default: the backbone's; an ONNX file's "
        "tbh.mean metadata).",
    ),
]
StdOption = Annotated[
    str | None,
    typer.Option(
        metavar="R,G,B", help="Std dividing them (default: the backbone's; tbh.std metadata)."
    ),
]


def preprocess(image_size: int | None, mean: str | None, std: str | None) -> dict:
    """--image-size, --mean, --std as `load_backbone`'s keyword arguments (None: the backbone's)."""
    from tbhcli.imaging.external import parse_rgb

    return {
        "image_size": image_size,
        "mean": parse_rgb(mean, "--mean"),
        "std": parse_rgb(std, "--std"),
    }


RecordedWeightsOption = Annotated[
    Path | None,
    typer.Option(
        "--backbone-weights",
        metavar="FILE",
        help="With a features model: its backbone's weights file (for onnx:, the ONNX file) when "
        "it is no longer where the model records it.",
    ),
]
ThreadsOption = Annotated[
    int | None, typer.Option(metavar="N", help="Search threads (default: all).")
]
WorkersOption = Annotated[
    int | None,
    typer.Option(metavar="N", help="Decoding processes (default: one per core, at most 8)."),
]
ImageBatchOption = Annotated[
    int, typer.Option(metavar="N", help="Images per model batch (features, index).")
]
DeviceOption = Annotated[
    Device, typer.Option(help="auto: CUDA when a GPU is present, else CPU.", show_default=True)
]
DaskOption = Annotated[
    str | None,
    typer.Option(
        metavar="ADDRESS", help='Search on a Dask cluster: "local" or a scheduler address.'
    ),
]
MethodOption = Annotated[
    SearchMethod,
    typer.Option(
        help="Top-k by scan, by the store's multi-index tables (`tbh index --multi-index`), "
        "or auto: the multi-index when it is measured to be faster.",
    ),
]
JsonOption = Annotated[
    bool,
    typer.Option("--json", help="Print one JSON document on stdout (schema in docs/usage.md)."),
]


def _query_codes(value: str) -> str:
    """Old `evaluate --queries`: a .npy file was query features, anything else a query store."""
    return "--query-features" if value.endswith(".npy") else "--query-store"


# command -> old option -> new option (or a function of the value that picks it)
RENAMED: dict[str, dict[str, str | Callable[[str], str]]] = {
    "evaluate": {"--model": "--run", "--queries": _query_codes},
    "index": {"--queries": "--query-images"},
    "features": {"--weights": "--backbone-weights"},
}


def _rename(command: str, args: list[str]) -> list[str]:
    """`args` with the old option names of `command` replaced, one warning line per rename."""
    renamed = RENAMED.get(command, {})
    out: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--":
            out += args[i:]
            break
        name, eq, value = token.partition("=")
        if name in renamed:
            new = renamed[name]
            if callable(new):
                value = value if eq else (args[i + 1] if i + 1 < len(args) else "")
                new = new(value)
            print(
                f"warning: `tbh {command} {name}` is deprecated and will be removed in the next "
                f"release; use {new}.",
                file=sys.stderr,
            )
            token = new + eq + (value if eq else "")
        out.append(token)
        i += 1
    return out


class TbhCommand(TyperCommand):
    """A command that accepts its renamed options' old names and shows no Python type names."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            # Values are named, not typed: "--steps N", not "--steps <int>" or "<list[Path]>";
            # choices keep typer's "<auto|cuda|cpu>".
            if param.metavar is None and not param.type_descriptor.is_choice:
                param.metavar = _metavar(param)
            if param.param_type_name == "argument":
                param.display_type_rich = lambda ctx: None  # type: ignore[method-assign]
                # The usage line: FEATURES, [PHOTOS_DIR], IMAGE_OR_DIR... (not {FEATURES} or
                # [[PHOTOS_DIR]]).
                usage = param.metavar.strip("[]") if param.metavar else _metavar(param)
                usage = usage if param.required else f"[{usage}]"
                usage += "" if param.nargs == 1 else "..."
                param.get_usage_pieces = lambda ctx, usage=usage: [usage]  # type: ignore[method-assign]

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _rename(self.name or "", args))


def _metavar(param: Any) -> str:
    """One style for every value: N for counts, X for other numbers, the name for the rest."""
    if param.param_type_name == "option":
        annotation = param.type_descriptor.annotation
        kinds = set(get_args(annotation) or (annotation,)) - {type(None)}
        if kinds == {int}:
            return "N"
        if kinds == {float}:
            return "X"
        if kinds == {Path}:
            return "PATH"
    return (param.name or "").upper()


def examples(*lines: str) -> str:
    """A help epilog listing example command lines, one per line as typed (\\b: not rewrapped)."""
    return "Examples:\n\n\b\n" + "\n".join(f"  {line}" for line in lines)
