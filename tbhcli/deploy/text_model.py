"""Text queries, for runs on a CLIP image tower: text -> CLIP text tower -> the run's hash.

`tbh export` of a run whose backbone is `clip:NAME` (with a whole CLIP checkpoint) also writes
`onnx/<run>.text.onnx`: int64 tokens [B, L] (open_clip's built-in tokenizer) -> text tower ->
L2-normalised and scaled to the mean norm of the image features the run was trained on (CLIP
compares directions; the run's hash was fitted on image features of that size) -> the run's
sign encoder -> packed codes [B, bits/8]: the same binary codes as the images, searched the same
way. The file records the images model's `tbh.config_sha256`, so it only ever searches a store
of the run that made it. Nothing is downloaded: the weights are the user's local file, and the
tokenizer's vocabulary ships inside open_clip (a model needing a Hugging Face tokenizer is
refused).
"""

from pathlib import Path

import numpy as np
import torch
from torch import nn

from tbhcli.errors import TbhError
from tbhcli.hashing.codes import pack_bits_torch
from tbhcli.hashing.runs import Run
from tbhcli.imaging.featureset import load_features
from tbhcli.imaging.recipe import BackboneRecipe
from tbhcli.imaging.text import TOKENIZER, tokenize

# Texts the export traces and verifies with (torch vs onnxruntime codes).
SAMPLE_TEXTS = ("a photo", "a red bicycle on a street", "two dogs", "x", "a cat " * 40)


class TextHasher(nn.Module):
    """Tokens int64 [B, L] -> packed codes uint8 [B, bits/8]; `logits` gives [B, bits]."""

    def __init__(self, clip: nn.Module, encoder: nn.Module, scale: float):
        super().__init__()
        self.clip = clip
        self.encoder = encoder
        self.scale = float(scale)

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        text = self.clip.encode_text(tokens)  # (B, E): CLIP's joint space
        return text / text.norm(dim=-1, keepdim=True).clamp_min(1e-12) * self.scale

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.features(tokens))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return pack_bits_torch(self.logits(tokens) > 0)


def feature_scale(run: Run) -> float:
    """Mean L2 norm of the features the run was trained on (its config records the file)."""
    recorded = run.config.get("features")
    path = Path(recorded) if recorded else None
    if path is None or not path.is_file():
        raise TbhError(
            f"the features run {run.path} was trained on ({recorded or 'not recorded'}) are not "
            "here; text queries scale texts like them: export from the training workspace."
        )
    features = load_features(path).features
    return float(np.linalg.norm(features, axis=1).mean())


def build_text_hasher(run: Run, recipe: BackboneRecipe) -> tuple[TextHasher, int]:
    """The torch text pipeline of a CLIP-backbone run, and its tokens per text."""
    from tbhcli.imaging.external import load_clip_text

    weights = recipe.weights_file
    clip, context = load_clip_text(recipe.backbone, Path(weights) if weights else None)
    dim = int(run.config["feature_dim"])
    if int(clip.text_projection.shape[-1] if clip.text_projection is not None else 0) != dim:
        raise TbhError(f"the text tower of {recipe.backbone} does not give {dim}-d features.")
    return TextHasher(clip, run.encoder, feature_scale(run)).eval(), context


def text_metadata(context: int, scale: float) -> dict[str, str]:
    """The `tbh.*` props a text model adds to its run's (`deploy.export.metadata`)."""
    return {
        "tbh.input": "text",
        "tbh.layout": f"int64 [B, {context}] open_clip tokens (built-in tokenizer)",
        "tbh.text_tokenizer": TOKENIZER,
        "tbh.text_context_length": str(context),
        "tbh.text_scale": f"{scale:.9g}",
    }


def sample_tokens(context: int) -> torch.Tensor:
    return torch.from_numpy(tokenize(list(SAMPLE_TEXTS), context))
