"""Classical unsupervised baselines: LSH, PCAH and ITQ, all of the form b = [(x - mu) P > 0].

Because each is one centring and one projection, they share `LinearHash`, the same artefact format
and the same ONNX export as TBH's sign encoder.
"""

import numpy as np
import torch
from torch import nn

from tbhcli.errors import TbhError

BASELINES = ("lsh", "pcah", "itq")
ITQ_ITERATIONS = 50


class LinearHash(nn.Module):
    """Features [B, D] -> logits [B, M] = (x - mean) @ projection."""

    def __init__(self, feature_dim: int, bits: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(feature_dim))
        self.register_buffer("projection", torch.zeros(feature_dim, bits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) @ self.projection


def lsh_projection(centred: np.ndarray, bits: int, rng: np.random.Generator) -> np.ndarray:
    """Random Gaussian hyperplanes through the data mean [D, M]."""
    return rng.standard_normal((centred.shape[1], bits))


def pca_projection(centred: np.ndarray, bits: int) -> np.ndarray:
    """The top-M principal directions [D, M], largest variance first."""
    if bits > min(centred.shape):
        raise TbhError(
            f"PCA-based hashing needs bits <= min(N, D) = {min(centred.shape)}, got {bits}."
        )
    # Right singular vectors of the centred data are the principal directions.
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return vt[:bits].T


def itq_rotation(projected: np.ndarray, rng: np.random.Generator, iterations: int) -> np.ndarray:
    """ITQ (Gong & Lazebnik): the rotation R [M, M] minimising ||sign(V R) - V R||."""
    bits = projected.shape[1]
    rotation, _ = np.linalg.qr(rng.standard_normal((bits, bits)))
    for _ in range(iterations):
        codes = np.where(projected @ rotation >= 0, 1.0, -1.0)  # (N, M)
        s, _, qt = np.linalg.svd(codes.T @ projected)  # B^T V = S Omega Q^T
        rotation = qt.T @ s.T
    return rotation


def fit_baseline(method: str, features: np.ndarray, bits: int, seed: int = 0) -> LinearHash:
    """Fit LSH, PCAH or ITQ on training features [N, D] and return the encoder."""
    if method not in BASELINES:
        raise TbhError(f"unknown baseline {method!r}; choose one of {', '.join(BASELINES)}.")
    x = np.asarray(features, dtype=np.float64)
    mean = x.mean(axis=0)
    centred = x - mean
    rng = np.random.default_rng(seed)
    if method == "lsh":
        projection = lsh_projection(centred, bits, rng)
    else:
        projection = pca_projection(centred, bits)
        if method == "itq":
            projection = projection @ itq_rotation(centred @ projection, rng, ITQ_ITERATIONS)
    encoder = LinearHash(x.shape[1], bits)
    encoder.mean.copy_(torch.from_numpy(mean))
    encoder.projection.copy_(torch.from_numpy(projection))
    return encoder
