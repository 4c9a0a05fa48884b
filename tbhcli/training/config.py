"""What `tbh train` was asked (`TrainOptions`, checked up front) and what a run records.

Two stages, so that nothing is loaded or allocated before every option is known to be sane:
`TrainOptions.check()` refuses bad values without touching the data; `run_config()` then turns the
options and the loaded features into the run's config, the one record of every setting (bits and
feature_dim at its top level only; `model` holds the other TBHConfig fields).
"""

from dataclasses import asdict
from pathlib import Path

import numpy as np

import tbhcli
from tbhcli.errors import TbhError, option
from tbhcli.hashing.tbh import TBHConfig, decoder_output_for
from tbhcli.imaging.featureset import FeatureSet, load_meta
from tbhcli.imaging.recipe import NO_RECIPE_CONFIG, BackboneRecipe
from tbhcli.training.options import DECODER_OUTPUTS, PRESETS, Preset, TrainOptions, methods
from tbhcli.training.validation import Split
from tbhcli.workspace import file_sha256

METHODS = methods()
__all__ = ["DECODER_OUTPUTS", "METHODS", "PRESETS", "Preset", "TrainOptions", "run_config"]


def check_data(options: TrainOptions, data: FeatureSet, split: Split) -> None:
    """The checks that need the data: enough items for a full TBH batch, PCA's rank."""
    n_train = len(split.train)
    if options.method in ("tbh", "auto") and n_train < options.batch_size:
        held = f" after holding out {len(split.held_out)}" if len(split.held_out) else ""
        raise TbhError(
            f"{options.features} has {n_train} training items{held}, fewer than "
            f"{option('batch_size')} {options.batch_size}; the per-batch graph needs full "
            f"batches: lower {option('batch_size')} or add items."
        )
    if options.method in ("pcah", "itq") and options.bits > min(n_train, data.dim):
        raise TbhError(
            f"PCA-based hashing needs bits <= min(N, D) = {min(n_train, data.dim)}, "
            f"got {options.bits}."
        )


def model_fields(options: TrainOptions, data: FeatureSet) -> dict:
    """The TBHConfig fields of the run (without bits and feature_dim, which the run holds once)."""
    chosen = dict(options.model_fields or {}) | {
        "single_bottleneck": options.single_bottleneck,
        "fixed_graph": options.fixed_graph,
        "stochastic_neuron": options.stochastic_neuron,
    }
    if options.graph_gamma is not None:
        chosen["gamma"] = options.graph_gamma
    if options.decoder_output != "auto":
        chosen["decoder_output"] = options.decoder_output
    elif options.variant == "code":  # the paper's decoder is linear; the code's follows the data
        chosen["decoder_output"] = decoder_output_for(float(data.features.min()))
    model = asdict(TBHConfig.preset(options.variant, bits=options.bits, **chosen))
    return {k: v for k, v in model.items() if k not in ("bits", "feature_dim")}


def run_config(options: TrainOptions, data: FeatureSet, split: Split, device: str) -> dict:
    """config.json of the run: every setting that made it, each stored once."""
    recorded = BackboneRecipe.from_meta(load_meta(options.features))
    config = {
        "method": options.method,
        "bits": options.bits,
        "feature_dim": data.dim,
        "num_items": len(data),
        "features": str(options.features),
        "features_sha256": file_sha256(Path(options.features)),
        # how to rebuild that backbone in `tbh export` (None for features made outside tbh)
        **(recorded.to_config() if recorded else NO_RECIPE_CONFIG),
        "seed": options.seed,
        "tbh_version": tbhcli.__version__,
        "validation": validation_config(options, split),
    }
    if options.method not in ("tbh", "auto"):
        return config
    stop = None
    if options.stops_early:
        stop = {"patience": options.patience, "min_steps": options.min_steps}
    return config | {
        "variant": options.variant,
        "preset": options.preset,
        "steps": options.max_steps,
        "stop": stop,
        "val_every": options.val_every,
        "batch_size": options.batch_size,
        "lr": options.learning_rate,
        "eval_every": options.eval_every,
        "eval_queries": None if options.eval_queries is None else str(options.eval_queries),
        "device": device,
        "model": model_fields(options, data),
    }


def validation_config(options: TrainOptions, split: Split) -> dict | None:
    if not len(split.held_out):
        return None
    return {
        "fraction": options.val_fraction,
        "held_out": int(len(split.held_out)),
        "train": int(len(split.train)),
        "neighbours": options.neighbours,
        "distance": options.distance,
        "rows_sha256": rows_digest(split.held_out),
    }


def rows_digest(rows: np.ndarray) -> str:
    """A short fingerprint of the held-out rows, so a resumed run provably uses the same split."""
    import hashlib

    return hashlib.sha256(np.asarray(rows, np.int64).tobytes()).hexdigest()[:16]
