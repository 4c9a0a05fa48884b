"""tbhcli.search.pairs: the multi-index self-join and the scan equal a brute-force pair list."""

import numpy as np
import pytest

from tbhcli.search import pairs
from tests.code_stores import random_codes


@pytest.mark.parametrize("bits", [32, 64, 128])
def test_near_pairs_equal_brute_force(monkeypatch, bits):
    rng = np.random.default_rng(bits)
    codes = np.concatenate([random_codes(rng, 200, bits, 0xFF), random_codes(rng, 200, bits)])
    dist = np.bitwise_count(codes[:, None, :] ^ codes[None, :, :]).sum(axis=2)
    for radius in (0, 2, 4, bits):
        expected = sorted(zip(*np.nonzero(np.triu(dist <= radius, k=1)), strict=True))
        for cost in (0, 10**12):
            monkeypatch.setattr(pairs, "SCAN_COST", cost)
            first, second = pairs.near_pairs(codes, radius)
            assert sorted(zip(first.tolist(), second.tolist(), strict=True)) == expected
