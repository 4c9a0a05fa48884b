"""LSH, PCAH and ITQ: shapes, determinism and the properties that define each."""

import numpy as np
import pytest
import torch

from tbhcli.errors import TbhError
from tbhcli.hashing.baselines import BASELINES, fit_baseline, itq_rotation


@pytest.fixture
def features():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((300, 24)) @ rng.standard_normal((24, 24)) + 3).astype(np.float32)


@pytest.mark.parametrize("method", BASELINES)
def test_shape_and_determinism(method, features):
    a = fit_baseline(method, features, 16, seed=1)
    b = fit_baseline(method, features, 16, seed=1)
    x = torch.from_numpy(features)
    assert a(x).shape == (300, 16)
    assert torch.equal(a(x) > 0, b(x) > 0)


@pytest.mark.parametrize("method", BASELINES)
def test_codes_are_centred(method, features):
    bits = (fit_baseline(method, features, 16)(torch.from_numpy(features)) > 0).float()
    # Centring by the training mean keeps every bit far from constant.
    assert ((bits.mean(0) > 0.05) & (bits.mean(0) < 0.95)).all()


def test_lsh_seed_changes_hyperplanes(features):
    assert not torch.equal(
        fit_baseline("lsh", features, 16, 0).projection,
        fit_baseline("lsh", features, 16, 1).projection,
    )


def test_pcah_uses_leading_principal_directions(features):
    encoder = fit_baseline("pcah", features, 4)
    centred = features - features.mean(0)
    variances = ((centred @ encoder.projection.numpy()) ** 2).mean(0)
    assert np.all(np.diff(variances) <= 1e-3)
    eig = np.sort(np.linalg.eigvalsh(np.cov(centred.T, bias=True)))[::-1][:4]
    np.testing.assert_allclose(variances, eig, rtol=1e-4)


def test_itq_rotation_is_orthogonal_and_lowers_quantisation_loss(features):
    rng = np.random.default_rng(0)
    centred = features - features.mean(0)
    pca = np.linalg.svd(centred, full_matrices=False)[2][:8].T
    v = centred @ pca
    r = itq_rotation(v, np.random.default_rng(0), 50)
    np.testing.assert_allclose(r @ r.T, np.eye(8), atol=1e-8)

    def loss(rot):
        return np.linalg.norm(np.sign(v @ rot) - v @ rot)

    start, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    assert loss(r) < loss(start)


def test_unknown_method_and_too_many_bits(features):
    with pytest.raises(TbhError):
        fit_baseline("sh", features, 16)
    with pytest.raises(TbhError):
        fit_baseline("pcah", features, 32)
