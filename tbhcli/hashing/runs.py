"""Run artefacts `runs/<name>/`: the config as JSON, the sign encoder's weights, the loss log.

Every method (TBH and the linear baselines) is saved the same way, as an *encoder*: a torch module
mapping features float32 [B, D] to logits [B, M]; the code is `logits > 0`. Weights are
safetensors, so loading a run never unpickles anything.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tbhcli.atomic import atomic_output, write_text_atomic
from tbhcli.errors import TbhError
from tbhcli.hashing.codes import pack_bits
from tbhcli.hashing.runfiles import CONFIG_FILE, LOG_FILE, load_config

__all__ = ["CONFIG_FILE", "LOG_FILE", "Run", "build_encoder", "load_config", "load_run", "save_run"]
from tbhcli.workspace import ENCODER_FILE


@dataclass
class Run:
    """A trained hasher: `config` (every setting) and `encoder` (features -> logits)."""

    path: Path
    config: dict
    encoder: nn.Module

    @property
    def bits(self) -> int:
        return int(self.config["bits"])

    @property
    def name(self) -> str:
        return self.path.name

    @torch.no_grad()
    def encode(self, features: np.ndarray, batch_size: int = 8192) -> np.ndarray:
        """Features float32 [N, D] -> packed codes uint8 [N, bits / 8]."""
        dim = int(self.config["feature_dim"])
        if features.ndim != 2 or features.shape[1] != dim:
            raise TbhError(
                f"run {self.path} expects features [N, {dim}], got shape {features.shape}."
            )
        self.encoder.eval()
        out = []
        for start in range(0, len(features), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(features[start : start + batch_size]))
            out.append(pack_bits((self.encoder(x.float()) > 0).numpy()))
        return np.concatenate(out) if out else np.zeros((0, self.bits // 8), np.uint8)


def model_config(config: dict):
    """The TBHConfig of a TBH run: `model` plus the run's `bits` and `feature_dim`.

    A run stores bits and feature_dim once, at its top level; runs written before that also
    repeat them inside `model`, which is ignored.
    """
    from tbhcli.hashing.tbh import TBHConfig

    fields = {k: v for k, v in config["model"].items() if k not in ("bits", "feature_dim")}
    return TBHConfig(bits=int(config["bits"]), feature_dim=int(config["feature_dim"]), **fields)


def build_encoder(config: dict) -> nn.Module:
    """The (untrained) encoder module that a run's config describes."""
    method = config["method"]
    if method == "tbh":
        from tbhcli.hashing.tbh import SignEncoder

        return SignEncoder(model_config(config))
    from tbhcli.hashing.baselines import LinearHash

    return LinearHash(int(config["feature_dim"]), int(config["bits"]))


def save_run(path: Path, config: dict, encoder: nn.Module) -> None:
    """Write config.json, then encoder.safetensors: a run with weights is a whole run."""
    path.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path / CONFIG_FILE, json.dumps(config, indent=2, sort_keys=True) + "\n")
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    with atomic_output(path / ENCODER_FILE) as tmp:
        save_file(state, str(tmp))


def load_run(path: str | Path) -> Run:
    """Load a run directory written by `tbh train`."""
    path = Path(path)
    config = load_config(path)
    weights = path / ENCODER_FILE
    if not weights.is_file():
        raise TbhError(f"run {path} has no weights ({ENCODER_FILE}); it did not finish training.")
    encoder = build_encoder(config)
    try:
        encoder.load_state_dict(load_file(str(weights)))
    except Exception as exc:  # safetensors and torch raise several types for a bad file
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TbhError(
            f"cannot load the weights of run {path} ({first}); retrain with `tbh train --force`."
        ) from None
    bad = [k for k, v in encoder.state_dict().items() if not torch.isfinite(v).all()]
    if bad:  # a diverged run: its codes would be meaningless
        raise TbhError(
            f"run {path} has NaN or inf weights ({', '.join(bad)}); retrain it with "
            "`tbh train --force` (a lower --lr)."
        )
    encoder.eval()
    return Run(path, config, encoder)
