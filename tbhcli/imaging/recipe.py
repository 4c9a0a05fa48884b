"""`BackboneRecipe`: how to rebuild the backbone that made a feature set, in one typed record.

Feature sets, runs and exported models each record it, in the spelling of their file: a feature
set's meta.json (`backbone`, `weights`, `weights_file`, `mean`, `std`, `image_size`), a run's
config.json (the same with a `backbone_` prefix, beside the run's other settings) and a model's
ONNX metadata (`tbh.backbone_*` strings, numbers as comma-separated text). Those spellings are
read and written here only; everything else handles the record. Nothing heavy is imported.
"""

from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class BackboneRecipe:
    """A backbone's name, weights (provenance and file), normalisation and input size.

    >>> recipe = BackboneRecipe("resnet50", "imagenet", None, [0.485, 0.456, 0.406],
    ...                         [0.229, 0.224, 0.225], 224)
    >>> BackboneRecipe.from_config(recipe.to_config()) == recipe
    True
    >>> recipe.to_onnx()["tbh.backbone_mean"]
    '0.485,0.456,0.406'
    """

    backbone: str  # a built-in name, or onnx:PATH / timm:NAME / clip:NAME
    weights: str | None  # "sha256:..." of the weights file, or where defaults come from
    weights_file: str | None  # the absolute path they were read from
    mean: list[float] | None  # per RGB channel, applied to pixels in [0, 1]
    std: list[float] | None
    image_size: int | None  # the square side the backbone takes, in pixels

    # ---- feature set meta.json --------------------------------------------------------------

    @classmethod
    def from_meta(cls, meta: dict) -> "BackboneRecipe | None":
        """From a feature set's meta (None for features made outside tbh)."""
        if not meta.get("backbone"):
            return None
        return cls(meta["backbone"], meta.get("weights"), meta.get("weights_file"),
                   meta.get("mean"), meta.get("std"), meta.get("image_size"))  # fmt: skip

    def to_meta(self) -> dict:
        return {"backbone": self.backbone, "image_size": self.image_size, "weights": self.weights,
                "weights_file": self.weights_file, "mean": self.mean, "std": self.std}  # fmt: skip

    # ---- run config.json --------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: dict) -> "BackboneRecipe | None":
        """From a run's config (None: trained on features without a recorded backbone)."""
        if not config.get("backbone"):
            return None
        return cls(config["backbone"], config.get("backbone_weights"),
                   config.get("backbone_weights_file"), config.get("backbone_mean"),
                   config.get("backbone_std"), config.get("image_size"))  # fmt: skip

    def to_config(self) -> dict:
        return {"backbone": self.backbone, "image_size": self.image_size,
                "backbone_weights": self.weights, "backbone_weights_file": self.weights_file,
                "backbone_mean": self.mean, "backbone_std": self.std}  # fmt: skip

    # ---- exported model metadata ------------------------------------------------------------

    @classmethod
    def from_onnx(cls, props: dict[str, str], image_size: int | None) -> "BackboneRecipe | None":
        """From an ONNX model's `tbh.*` metadata (a bad number is a ValueError)."""
        if not props.get("tbh.backbone"):
            return None

        def floats(key: str) -> list[float] | None:
            return [float(v) for v in props[key].split(",")] if props.get(key) else None

        return cls(props["tbh.backbone"], props.get("tbh.backbone_weights") or None,
                   props.get("tbh.backbone_weights_file") or None,
                   floats("tbh.backbone_mean"), floats("tbh.backbone_std"), image_size)  # fmt: skip

    def to_onnx(self) -> dict[str, str]:
        """The `tbh.backbone*` metadata (the image size is the model's own `tbh.image_size`);
        `NO_RECIPE_ONNX` is what a model without a recorded backbone holds."""

        def csv(values) -> str:
            return ",".join(f"{v:.9g}" for v in values) if values else ""

        return {"tbh.backbone": self.backbone, "tbh.backbone_weights": self.weights or "",
                "tbh.backbone_weights_file": self.weights_file or "",
                "tbh.backbone_mean": csv(self.mean), "tbh.backbone_std": csv(self.std)}  # fmt: skip

    def with_weights(
        self, weights: str | None, weights_file: str | Path | None
    ) -> "BackboneRecipe":
        """The same backbone read from other weights (`--backbone-weights`)."""
        file = str(Path(weights_file).resolve()) if weights_file is not None else None
        return replace(self, weights=weights, weights_file=file)


NO_RECIPE_CONFIG = dict.fromkeys(BackboneRecipe("", None, None, None, None, None).to_config())
NO_RECIPE_ONNX = dict.fromkeys(BackboneRecipe("", None, None, None, None, None).to_onnx(), "")
