"""Backbones the user brings: `onnx:PATH`, `timm:NAME`, `clip:NAME` (images -> features).

Each becomes a `Backbone` like the built-in ones, so features, export, duplicates and index all
take them. Nothing is ever downloaded: timm and open_clip models are built with random weights
and then filled from the user's local file (`--backbone-weights`; refused without one), read
with `weights_only=True` or safetensors; an ONNX file carries its own weights.

- `timm:NAME`: `timm.create_model(NAME, num_classes=0)`: pooled pre-logits features; input size,
  mean and std from timm's pretrained config. A checkpoint with the classifier head loads too.
- `clip:NAME`: the image tower (`model.visual`) of open_clip architecture NAME, or of a folder
  holding an `open_clip_config.json` (the Hugging Face layout; its checkpoint is the default
  weights); mean/std/size from the model's preprocess config. Full CLIP checkpoints or
  image-tower-only state dicts load.
- `onnx:PATH`: any ONNX model with one 4-D float NCHW image input; its first output, flattened
  to [B, D], is the feature. Input size: the static input shape, else `--image-size`, else
  metadata `tbh.image_size`; mean/std: `--mean` / `--std`, else metadata `tbh.mean` / `tbh.std`
  ("0.5,0.5,0.5"), else refused (a wrong guess would give plausible but poor features). It
  runs on onnxruntime (CPU) and, in `tbh export`, is merged into the exported graph
  (deploy/export.py).
"""

import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tbhcli.errors import TbhError

KINDS = ("onnx", "timm", "clip")
EXTRA = "pip install 'tbhcli[backbones]'"
# metadata_props an ONNX backbone may carry (docs/features.md)
MEAN_KEY, STD_KEY, SIZE_KEY = "tbh.mean", "tbh.std", "tbh.image_size"


@dataclass(frozen=True)
class Spec:
    """A parsed `KIND:ARG` backbone name."""

    kind: str
    arg: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.arg}"


def parse_spec(name: str) -> Spec | None:
    """`onnx:PATH`, `timm:NAME` or `clip:NAME` -> Spec; None for a built-in name (no colon)."""
    kind, colon, arg = name.partition(":")
    if not colon:
        return None
    if kind not in KINDS:
        raise TbhError(
            f"unknown backbone kind {kind!r} in {name!r}; use onnx:PATH, timm:NAME or clip:NAME."
        )
    if not arg.strip():
        what = "PATH" if kind == "onnx" else "NAME"
        raise TbhError(f"backbone {name!r} has no {what}; write {kind}:{what}.")
    if kind == "onnx":
        # recorded absolute, so a run exported or indexed from another folder finds the file
        return Spec(kind, str(Path(arg).expanduser().resolve()))
    if kind == "clip" and Path(arg).expanduser().is_dir():
        return Spec(kind, str(Path(arg).expanduser().resolve()))
    return Spec(kind, arg)


@dataclass
class Loaded:
    """A user's network for `Backbone`: body on normalised pixels, and its preprocessing."""

    body: nn.Module
    image_size: int | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights: Path | None  # the file the weights came from (provenance)


def _import(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise TbhError(f"this backbone needs the {module} package: {EXTRA}.") from None


def read_state_dict(path: Path) -> dict:
    """A state dict from a local file: safetensors, or torch.load with `weights_only=True`.

    Common wrappers are unwrapped: {"state_dict": ...}, {"model": ...} and "module." prefixes.
    """
    path = Path(path)
    if not path.is_file():
        raise TbhError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch / safetensors raise several types for a bad or unsafe file
        raise TbhError(f"cannot read weights file {path} as a state dict: {exc}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TbhError(f"weights file {path} does not hold a state dict of tensors.")
    if all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def _fit(model: nn.Module, state: dict, source: Path, ignored: tuple[str, ...] = ()) -> None:
    """Load `state` into `model`: every parameter must be there; extra keys only under `ignored`."""
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        first = str(exc).splitlines()[1 if "\n" in str(exc) else 0].strip().rstrip(".")
        raise TbhError(f"weights in {source} do not fit this backbone ({first}).") from None
    extra = [k for k in result.unexpected_keys if not k.startswith(ignored)]
    if result.missing_keys or extra:
        keys = result.missing_keys[:2] or extra[:2]
        what = "lack" if result.missing_keys else "have unknown"
        raise TbhError(
            f"weights in {source} do not fit this backbone (they {what} {', '.join(keys)}...)."
        )


def _need_weights(spec: Spec, weights: Path | None) -> Path:
    if weights is None:
        raise TbhError(
            f"backbone {spec} needs its weights: pass --backbone-weights FILE (a local state "
            "dict; tbh never downloads them)."
        )
    return Path(weights)


def _timm(spec: Spec, weights: Path | None) -> Loaded:
    timm = _import("timm")
    if not timm.is_model(spec.arg):
        raise TbhError(f"timm has no model {spec.arg!r}; see timm.list_models().")
    weights = _need_weights(spec, weights)
    state = read_state_dict(weights)
    model = timm.create_model(spec.arg, pretrained=False, num_classes=0)
    head = model.pretrained_cfg.get("classifier") or "head"
    heads = tuple(f"{h}." for h in ([head] if isinstance(head, str) else head))
    _fit(model, state, weights, ignored=heads)  # a checkpoint with its classifier loads too
    config = timm.data.resolve_data_config({}, model=model)
    return Loaded(model, int(config["input_size"][-1]), config["mean"], config["std"], weights)


@contextmanager
def _quiet_root_logger():
    """open_clip logs "initialized randomly" on the root logger before we load the weights."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _clip_checkpoint(folder: Path) -> Path | None:
    exts = ("safetensors", "bin", "pth", "pt")
    found = sorted(p for ext in exts for p in folder.glob(f"*.{ext}"))
    return found[0] if found else None


def _clip_source(spec: Spec, weights: Path | None) -> tuple[str, Path, dict]:
    """open_clip's name for `spec` (an architecture, or `local-dir:FOLDER`), the weights file
    (a folder's own checkpoint by default) and the model config (`text_cfg`, `vision_cfg`)."""
    open_clip = _import("open_clip")
    folder = Path(spec.arg)
    if folder.is_dir():
        config_file = folder / "open_clip_config.json"
        if not config_file.is_file():
            raise TbhError(f"{folder} holds no open_clip_config.json; clip:NAME needs one.")
        try:
            config = json.loads(config_file.read_text())["model_cfg"]
        except (OSError, ValueError, KeyError) as exc:
            raise TbhError(f"cannot read the model_cfg of {config_file} ({exc}).") from None
        name, weights = f"local-dir:{folder}", weights or _clip_checkpoint(folder)
    elif spec.arg in open_clip.list_models():
        name, config = spec.arg, open_clip.get_model_config(spec.arg) or {}
    else:
        raise TbhError(
            f"open_clip has no architecture {spec.arg!r} (and it is not a folder with an "
            "open_clip_config.json); see open_clip.list_models()."
        )
    return name, _need_weights(spec, weights), config


def _clip_model(name: str, spec: Spec) -> nn.Module:
    import open_clip

    try:
        with _quiet_root_logger():
            return open_clip.create_model(name, pretrained=None, load_weights=False).eval()
    except Exception as exc:  # a bad config: open_clip raises several types
        raise TbhError(f"cannot build open_clip model {spec.arg}: {exc}") from None


def _clip(spec: Spec, weights: Path | None) -> Loaded:
    name, weights, _ = _clip_source(spec, weights)
    state = read_state_dict(weights)
    visual = _clip_model(name, spec).visual
    if any(k.startswith("visual.") for k in state):  # a whole CLIP checkpoint: take the tower
        state = {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
    _fit(visual, state, weights)
    cfg = visual.preprocess_cfg
    size = cfg["size"] if isinstance(cfg["size"], int) else cfg["size"][-1]
    return Loaded(visual, int(size), tuple(cfg["mean"]), tuple(cfg["std"]), weights)


def load_clip_text(name: str, weights: Path | None) -> tuple[nn.Module, int]:
    """The whole CLIP of backbone `name` ("clip:..."), text tower included, from local weights,
    and its text context length (tokens per text). Refused for an image-tower-only checkpoint
    and for a model whose tokenizer would come from Hugging Face (a download)."""
    spec = parse_spec(name)
    if spec is None or spec.kind != "clip":
        raise TbhError(f"text queries need a clip:NAME backbone; this run's is {name}.")
    name, weights, config = _clip_source(spec, weights)
    text = config.get("text_cfg") or {}
    if text.get("hf_tokenizer_name") or config.get("custom_text"):
        raise TbhError(
            f"{spec}'s text tower uses a Hugging Face tokenizer, which tbh would have to "
            "download; text queries support open_clip's own (built-in) tokenizer only."
        )
    state = read_state_dict(weights)
    if "token_embedding.weight" not in state:  # an image tower alone has its own transformer
        raise TbhError(
            f"{weights} holds the image tower only; text queries need the whole CLIP "
            "checkpoint (image and text towers)."
        )
    model = _clip_model(name, spec)
    _fit(model, state, weights, ignored=("logit_scale", "logit_bias"))
    return model, int(text.get("context_length", 77))


class OnnxFeatures(nn.Module):
    """Runs an ONNX feature extractor on onnxruntime (CPU): normalised pixels -> [B, D].

    A file exported with a fixed batch of 1 (common) is run one image at a time.
    """

    def __init__(self, path: Path, session, input_name: str, input_dtype: np.dtype, batch):
        super().__init__()
        self.path = path
        self.session = session
        self.input_name = input_name
        self.input_dtype = input_dtype
        self.fixed_batch = batch if isinstance(batch, int) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.detach().cpu().numpy().astype(self.input_dtype)
        parts = [batch] if self.fixed_batch is None else np.split(batch, len(batch))
        out = [self.session.run(None, {self.input_name: part})[0] for part in parts]
        features = np.concatenate([np.asarray(o, np.float32).reshape(len(o), -1) for o in out])
        return torch.from_numpy(features).to(x.device)  # (B, D)


def image_by_image(backbone: nn.Module) -> bool:
    """Whether `backbone` wraps an ONNX file with a fixed batch of 1 (it cannot be merged into a
    batched images model: export its run with input "features" instead)."""
    return getattr(getattr(backbone, "body", None), "fixed_batch", None) is not None


def _floats(text: str, what: str, positive: bool = False) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(np.isfinite(values)) or (positive and min(values) <= 0):
        kind = "positive numbers" if positive else "numbers"
        raise TbhError(f"{what} must be three {kind} R,G,B like 0.5,0.5,0.5 (got {text!r}).")
    return values  # type: ignore[return-value]


def _onnx_input_size(path: Path, dims: list, props: dict, image_size: int | None) -> int | None:
    """The square input side: static shape, else metadata, else the caller's; checked to agree."""
    h, w = dims[2:]
    if isinstance(h, int) and isinstance(w, int):
        if h != w:
            raise TbhError(f"{path} takes {h}x{w} images; tbh feeds square images.")
        if image_size is not None and image_size != h:
            raise TbhError(f"{path} takes {h} px images, not --image-size {image_size}.")
        return h
    if image_size is not None:
        return image_size
    if SIZE_KEY in props:
        try:
            return int(props[SIZE_KEY])
        except ValueError:
            raise TbhError(f"{path}: metadata {SIZE_KEY} is not a number of pixels.") from None
    return None


def _onnx(spec: Spec, weights: Path | None, image_size: int | None, mean, std) -> Loaded:
    path = Path(spec.arg)
    if weights is not None:
        raise TbhError(f"{spec} holds its own weights; drop --backbone-weights.")
    if not path.is_file():
        raise TbhError(f"ONNX backbone not found: {path}")
    onnx = _import("onnx")
    ort = _import("onnxruntime")
    try:
        proto = onnx.load(str(path))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # protobuf / onnxruntime raise several types for a bad file
        raise TbhError(f"cannot load {path} as an ONNX model: {str(exc).splitlines()[0]}") from None
    props = {p.key: p.value for p in proto.metadata_props}
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        shapes = ", ".join(str(i.shape) for i in inputs)
        raise TbhError(f"{path} must take one 4-D image input [B, 3, H, W] (it takes {shapes}).")
    dims = inputs[0].shape
    if dims[1] != 3:
        raise TbhError(f"{path} must take RGB images [B, 3, H, W] (it takes {dims}).")
    if inputs[0].type not in ("tensor(float)", "tensor(float16)", "tensor(double)"):
        raise TbhError(f"{path} must take float pixels (its input is {inputs[0].type}).")
    size = _onnx_input_size(path, dims, props, image_size)
    if size is None:
        raise TbhError(
            f"{path} has a dynamic input size and no {SIZE_KEY} metadata; pass --image-size PX."
        )
    stats = []
    for given, key, what in ((mean, MEAN_KEY, "--mean"), (std, STD_KEY, "--std")):
        if given is not None:
            stats.append(tuple(given))
        elif key in props:
            stats.append(_floats(props[key], f"metadata {key} of {path}", key == STD_KEY))
        else:
            raise TbhError(
                f"{path} has no {key} metadata; pass {what} R,G,B (the normalisation it was "
                "trained with, e.g. ImageNet's: --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225)."
            )
    dtype = {"tensor(float16)": np.float16, "tensor(double)": np.float64}.get(
        inputs[0].type, np.float32
    )
    if isinstance(dims[0], int) and dims[0] != 1:
        raise TbhError(f"{path} takes batches of exactly {dims[0]}; export it with batch 1 or a "
                       "dynamic batch axis.")  # fmt: skip
    body = OnnxFeatures(path, session, inputs[0].name, np.dtype(dtype), dims[0])
    return Loaded(body, size, stats[0], stats[1], path)


def load_external(
    spec: Spec, weights: Path | None, image_size: int | None = None, mean=None, std=None
) -> Loaded:
    """Build the external backbone `spec` (module doc); `mean`/`std` override its own."""
    if spec.kind == "onnx":
        return _onnx(spec, weights, image_size, mean, std)
    loaded = _timm(spec, weights) if spec.kind == "timm" else _clip(spec, weights)
    loaded.mean = tuple(mean) if mean is not None else tuple(loaded.mean)
    loaded.std = tuple(std) if std is not None else tuple(loaded.std)
    return loaded


def parse_rgb(text: str | None, option: str) -> tuple[float, float, float] | None:
    """`--mean` / `--std` values "R,G,B" -> three floats (None stays None)."""
    return None if text is None else _floats(text, option, positive=option == "--std")


def weights_file(name: str) -> Path | None:
    """The file a backbone's weights come from when no --backbone-weights is given: an ONNX
    backbone's own file, or the checkpoint in a clip:FOLDER; None for the others."""
    spec = parse_spec(name) if ":" in name else None
    if spec is None or spec.kind == "timm":
        return None
    if spec.kind == "onnx":
        return Path(spec.arg)
    return _clip_checkpoint(Path(spec.arg)) if Path(spec.arg).is_dir() else None
