"""`tbh export`: a trained run -> one self-contained ONNX file that maps inputs to packed codes.

`input="images"`: uint8 [B, 3, S, S] NCHW RGB -> /255 -> backbone (mean/std inside) -> sign
encoder -> logits > 0 -> packed uint8 [B, bits/8], written as `onnx/<run>.onnx`.
`input="features"`: float32 [B, D] -> encoder -> packed codes, as `onnx/<run>.features.onnx`.
The batch axis is dynamic. The file's metadata (`tbh.*` props) says everything a user of the file
needs without tbh. Every export checks itself: onnxruntime's codes must equal torch's, except for
bits whose logit is within float tolerance of 0.

We use torch's TorchScript-based exporter (`dynamo=False`): it needs no onnxscript, works offline
and handles these plain feed-forward graphs exactly.
"""

import hashlib
import json
import logging
import shutil
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

import onnx
import tbhcli
from tbhcli.atomic import atomic_output
from tbhcli.deploy.runtime import ModelInfo, create_session, model_info, run_codes
from tbhcli.errors import TbhError
from tbhcli.hashing.codes import pack_bits_torch, unpack_bits
from tbhcli.hashing.runs import Run, load_run
from tbhcli.imaging.external import OnnxFeatures, image_by_image
from tbhcli.imaging.recipe import NO_RECIPE_ONNX, BackboneRecipe
from tbhcli.jsondoc import document
from tbhcli.terminal import shown
from tbhcli.workspace import FEATURES_SUFFIX, MODELS_DIR, Artefact, resolve_run

log = logging.getLogger(__name__)
INPUTS = ("images", "features")
VERIFY_BATCH = 16
# A bit may flip between torch and onnxruntime only if its logit is this close to 0, relative to
# the largest logit magnitude in the batch (float32 sums reordered across a deep backbone).
LOGIT_RTOL = 1e-4

MIN_OPSET = 11  # the oldest opset checked to export and verify (opset 5 cannot cast uint8)


class Hasher(nn.Module):
    """Inputs -> packed codes uint8 [B, bits/8]; `logits` gives the pre-sign values [B, bits]."""

    def __init__(self, encoder: nn.Module, backbone: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.encoder = encoder

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.backbone is not None:
            x = self.backbone(x.to(torch.float32) / 255.0)  # uint8 (B, 3, S, S) -> (B, D)
        return self.encoder(x)  # (B, M)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pack_bits_torch(self.logits(x) > 0)  # (B, M / 8)


@dataclass
class Verification:
    """Torch vs onnxruntime codes on one batch."""

    items: int
    bits_compared: int
    mismatched_bits: int
    mismatch_rate: float
    tolerance: float  # |logit| below which a flip is accepted


def config_sha256(config: dict) -> str:
    """Hash of a run's config (sorted-key JSON), recorded in the model and the store."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def run_recipe(run: Run, backbone_weights: Path | None = None) -> BackboneRecipe | None:
    """How to rebuild the backbone that made the run's features (None: no recorded backbone):
    the run's config (copied from the feature set's meta), with `backbone_weights` in place of
    the recorded weights file when given (for an `onnx:` backbone, in place of the ONNX file)."""
    recorded = BackboneRecipe.from_config(run.config)
    if recorded is None or backbone_weights is None:
        return recorded
    from tbhcli.imaging.backbones import weights_id
    from tbhcli.imaging.external import parse_spec

    spec = parse_spec(recorded.backbone)
    if spec is not None and spec.kind == "onnx":
        recorded = replace(recorded, backbone=f"onnx:{Path(backbone_weights).resolve()}")
    return recorded.with_weights(weights_id(recorded.backbone, backbone_weights), backbone_weights)


def build_hasher(run: Run, input: str, backbone_weights: Path | None = None) -> Hasher:
    """The torch pipeline for a run; images need the backbone named in the run's config, rebuilt
    from its recorded weights file unless `backbone_weights` names another."""
    if input not in INPUTS:
        raise TbhError(f"unknown --input {input!r}; choose one of {', '.join(INPUTS)}.")
    if input == "features":
        return Hasher(run.encoder).eval()
    recorded = run_recipe(run)
    if recorded is None:
        raise TbhError(
            f"run {run.path} was trained on features without a recorded backbone, so it can only "
            "be exported with --input features."
        )
    from tbhcli.imaging.backbones import rebuild_backbone

    backbone = rebuild_backbone(recorded, backbone_weights, f"run {run.path}")
    if backbone.feature_dim != int(run.config["feature_dim"]):
        raise TbhError(
            f"backbone {backbone.name} gives {backbone.feature_dim}-d features but run {run.path} "
            f"was trained on {run.config['feature_dim']}-d ones; pass the matching "
            "--backbone-weights."
        )
    return Hasher(run.encoder, backbone).eval()


def sample_batch(run: Run, input: str, n: int = VERIFY_BATCH, seed: int = 0) -> torch.Tensor:
    """A seeded batch to trace and verify with: random uint8 images or Gaussian features."""
    g = torch.Generator().manual_seed(seed)
    if input == "images":
        size = int(run.config["image_size"])
        return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return torch.randn(n, int(run.config["feature_dim"]), generator=g)


def metadata(run: Run, input: str, backbone_weights: Path | None = None) -> dict[str, str]:
    """The `tbh.*` metadata_props of an exported model.

    Both kinds record the backbone that made the run's features and how to rebuild it (weights
    sha256 and file, mean, std, image size): a features model runs it on images in `tbh index`
    and `tbh query` (deploy/features_model.py); for an images model it is provenance.
    """
    images = input == "images"
    recorded = run_recipe(run, backbone_weights)
    return {
        "tbh.bits": str(run.bits),
        "tbh.input": input,
        "tbh.layout": "uint8 NCHW RGB 0-255" if images else "float32 [B, D]",
        "tbh.output": "codes: uint8 [B, bits/8], bits packed big-endian (np.packbits)",
        "tbh.image_size": str(run.config.get("image_size") or ""),
        "tbh.feature_dim": str(run.config["feature_dim"]),
        **(recorded.to_onnx() if recorded else NO_RECIPE_ONNX),
        "tbh.method": str(run.config["method"]),
        "tbh.run": run.name,
        "tbh.config_sha256": config_sha256(run.config),
        "tbh.version": tbhcli.__version__,
    }


def _to_onnx(
    module: nn.Module, example: torch.Tensor, path: Path, names: tuple[str, str], opset: int
) -> onnx.ModelProto:
    """Trace `module` (one input, one output, `names`, a dynamic batch axis) into an ONNX graph,
    written to `path` and returned for adding metadata."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=False,
            input_names=[names[0]],
            output_names=[names[1]],
            dynamic_axes={names[0]: {0: "batch"}, names[1]: {0: "batch"}},
            opset_version=opset,
        )
    return onnx.load(str(path))


class _Pixels(nn.Module):
    """uint8 [B, 3, S, S] -> the normalised pixels an ONNX backbone takes (its input dtype)."""

    def __init__(self, backbone: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.backbone = backbone
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels = x.to(torch.float32) / 255.0
        return ((pixels - self.backbone.mean) / self.backbone.std).to(self.dtype)


class _FeatureCodes(nn.Module):
    """An ONNX backbone's first output [B, ...] -> flattened float32 features -> packed codes."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, out: torch.Tensor) -> torch.Tensor:
        return pack_bits_torch(self.encoder(out.flatten(1).to(torch.float32)) > 0)


def _export_part(module: nn.Module, example: torch.Tensor, names: tuple[str, str], opset: int):
    """`_to_onnx` through a temporary file: one part of a composed model."""
    folder = Path(tempfile.mkdtemp())
    try:
        return _to_onnx(module, example, folder / "part.onnx", names, opset)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _compose_onnx(hasher: Hasher, example: torch.Tensor, path: Path) -> onnx.ModelProto:
    """The user's ONNX backbone merged between a normalisation prefix and the sign encoder:
    uint8 images -> packed codes in one graph, at the user's model's opset (`onnx.compose` needs
    one opset per domain)."""
    from onnx import compose

    body = hasher.backbone.body  # imaging.external.OnnxFeatures
    if image_by_image(hasher.backbone):
        raise TbhError(
            f"{body.path} takes one image per run (a fixed batch axis), so it cannot be merged "
            "into a batched model; export it with a dynamic batch axis, or export this run with "
            "--input features (tbh index and tbh query then run the file image by image)."
        )
    user = onnx.load(str(body.path))
    opset = next((o.version for o in user.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        raise TbhError(
            f"{body.path} uses ONNX opset {opset}; tbh exports need opset {MIN_OPSET} or newer "
            "(convert it with onnx.version_converter)."
        )
    del user.metadata_props[:]  # ours replace them; the file's sha256 is recorded
    user = compose.add_prefix(user, "backbone/")
    user_in, user_out = user.graph.input[0].name, user.graph.output[0].name
    dtype = torch.from_numpy(np.zeros(0, body.input_dtype)).dtype
    to_pixels = _Pixels(hasher.backbone, dtype)
    with torch.no_grad():
        out = body.session.run(None, {body.input_name: to_pixels(example).numpy()})[0]
    try:
        prefix = _export_part(to_pixels, example, ("images", "pixels"), opset)
        suffix = _export_part(
            _FeatureCodes(hasher.encoder), torch.from_numpy(out), ("output", "codes"), opset
        )
    except (RuntimeError, torch.onnx.errors.OnnxExporterError) as exc:
        raise TbhError(f"cannot export at {body.path}'s opset {opset}: {exc}") from None
    # Names stay apart: each part's edges get their own prefix; "images" and "codes" are kept.
    prefix = compose.add_prefix(prefix, "pixels/", rename_inputs=False, rename_outputs=False)
    suffix = compose.add_prefix(suffix, "codes/", rename_inputs=False, rename_outputs=False)
    ir = max(m.ir_version for m in (prefix, user, suffix))
    for part in (prefix, user, suffix):
        part.ir_version = ir
    model = compose.merge_models(prefix, user, [("pixels", user_in)], outputs=[user_out])
    model = compose.merge_models(model, suffix, [(user_out, "output")], outputs=["codes"])
    imports = {o.domain or "": o.version for o in model.opset_import}
    del model.opset_import[:]
    for domain, version in imports.items():  # merge_models lists each domain once per part
        model.opset_import.add(domain=domain, version=version)
    onnx.save(model, str(path))
    return model


def verify(model_path: Path, hasher: Hasher, batch: torch.Tensor) -> Verification:
    """Compare onnxruntime's codes with torch's on `batch`; raise if a confident bit differs."""
    session, _ = create_session(model_path, device="cpu")
    with torch.no_grad():
        logits = hasher.logits(batch).numpy()  # (B, M)
    bits = logits.shape[1]
    expected = unpack_bits((hasher(batch)).numpy(), bits)  # (B, M)
    got = unpack_bits(run_codes(session, batch.numpy()), bits)
    tolerance = LOGIT_RTOL * max(1.0, float(np.abs(logits).max()))
    differ = expected != got
    if (differ & (np.abs(logits) > tolerance)).any():
        worst = float(np.abs(logits[differ]).max())
        raise TbhError(
            f"exported model {model_path} disagrees with torch on bits whose logit is far from "
            f"0 (|logit| up to {worst:.3g} > {tolerance:.3g}); the export is broken, please "
            "report it."
        )
    mismatched = int(differ.sum())
    return Verification(len(batch), differ.size, mismatched, mismatched / differ.size, tolerance)


def default_out(run: Run, input: str) -> Path:
    return MODELS_DIR / (run.name + (".onnx" if input == "images" else FEATURES_SUFFIX))


@dataclass
class ExportedModel(Artefact):
    """What `export` returns: the ONNX file, the run it came from, its metadata and its check
    against torch. It is also its file: `os.fspath(model)`, and Path's attributes
    (`model.name`, `model.read_bytes()`), so it goes wherever a model path does."""

    path: Path
    run: Path
    info: ModelInfo
    verification: Verification

    def summary_line(self) -> str:
        """One rich-markup line: the file, the method and bits, onnxruntime against torch."""
        info, check = self.info, self.verification
        return (
            f"exported {shown(self.path)}: {info.method} {info.bits} bits, input {info.input}; "
            f"onnxruntime = torch on {check.items} items, {check.mismatched_bits}/"
            f"{check.bits_compared} bits differ (mismatch rate {check.mismatch_rate:.2e}, "
            f"only |logit| < {check.tolerance:.1e} may)"
        )

    def __rich__(self) -> str:
        return self.summary_line()

    def to_json(self) -> str:
        """The `tbh.export/1` document."""
        info = self.info
        return document("export", {
            "run": self.run, "model": self.path, "input": info.input, "bits": info.bits,
            "method": info.method, "backbone": info.backbone, "image_size": info.image_size,
            "feature_dim": info.feature_dim, "sha256": info.sha256,
        })  # fmt: skip


def export(
    run: Path | None = None,
    out: Path | None = None,
    input: str = "images",
    backbone_weights: Path | None = None,
    opset: int = 17,
) -> "ExportedModel":
    """Export `run` (default: the newest under runs/) to ONNX, verify it against torch, and
    return the model (default `onnx/<run>.onnx`) with its metadata and the verification, which
    is also logged (`tbhcli.deploy.export`, INFO).
    """
    if opset < MIN_OPSET:
        raise TbhError(f"--opset must be at least {MIN_OPSET} (got {opset}); the default is 17.")
    trained = load_run(resolve_run(run))
    hasher = build_hasher(trained, input, backbone_weights)
    out = Path(out) if out is not None else default_out(trained, input)
    batch = sample_batch(trained, input)
    # Written beside the target and renamed, so a half-written file is never the newest model;
    # a failure (a full disk, a verification that fails) leaves no temporary file behind.
    with atomic_output(out) as tmp:
        try:
            if isinstance(getattr(hasher.backbone, "body", None), OnnxFeatures):
                model = _compose_onnx(hasher, batch[:2], tmp)  # at the user's graph's opset
            else:
                model = _to_onnx(hasher, batch[:2], tmp, (input, "codes"), opset)
        except RuntimeError as exc:
            if "opset" not in str(exc):
                raise
            raise TbhError(
                f"--opset {opset} is not supported by this torch ({exc}); try 17."
            ) from None
        model.doc_string = f"tbh {tbhcli.__version__}: {input} -> packed {trained.bits}-bit codes"
        for key, value in metadata(trained, input, backbone_weights).items():
            model.metadata_props.add(key=key, value=value)
        onnx.save(model, str(tmp))
        report = verify(tmp, hasher, batch)
    exported = ExportedModel(out, trained.path, model_info(out), report)
    log.info(exported.summary_line())
    recipe = run_recipe(trained, backbone_weights)
    if input == "images" and recipe is not None and recipe.backbone.startswith("clip:"):
        _export_text_or_say_why(trained, recipe, out, opset)
    return exported


def _export_text_or_say_why(
    run: Run, recipe: BackboneRecipe, images_model: Path, opset: int
) -> None:
    """Beside a CLIP-backbone model, its text model (deploy/text_model.py); when the run cannot
    have one (an image-tower-only checkpoint, a Hugging Face tokenizer), one line on why."""
    from tbhcli.deploy.text_model import build_text_hasher, sample_tokens, text_metadata
    from tbhcli.deploy.text_runtime import text_model_path

    out = text_model_path(images_model)
    try:
        hasher, context = build_text_hasher(run, recipe)
        tokens = sample_tokens(context)
        with atomic_output(out) as tmp:
            model = _to_onnx(hasher, tokens[:2], tmp, ("tokens", "codes"), opset)
            model.doc_string = f"tbh {tbhcli.__version__}: text -> packed {run.bits}-bit codes"
            props = metadata(run, "images") | text_metadata(context, hasher.scale)
            for key, value in props.items():
                model.metadata_props.add(key=key, value=value)
            onnx.save(model, str(tmp))
            report = verify(tmp, hasher, tokens)
    except TbhError as exc:
        out.unlink(missing_ok=True)  # a text model of an earlier export would not match
        log.warning("no text model (tbh query --text): %s", shown(exc))
        return
    log.info(
        "exported %s for text queries: onnxruntime = torch on %d texts, %d/%d bits differ",
        shown(out), report.items, report.mismatched_bits, report.bits_compared,
    )  # fmt: skip
