import numpy as np
import pytest
import torch

from tbhcli.errors import TbhError
from tbhcli.hashing.codes import pack_bits
from tbhcli.imaging.featureset import FeatureSet
from tbhcli.training.validation import (
    Validator,
    neighbour_recall,
    split_rows,
    true_neighbours,
)


def slow_recall(db, queries, db_bits, query_bits, k, distance="euclidean"):
    """The definition, one query at a time: sort by (distance, row), count the overlap."""
    if distance == "cosine":
        db = db / np.linalg.norm(db, axis=1, keepdims=True)
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    total = 0.0
    for q, qb in zip(queries, query_bits, strict=True):
        true = sorted(range(len(db)), key=lambda j: (((db[j] - q) ** 2).sum(), j))[:k]
        ham = sorted(range(len(db)), key=lambda j: (int((db_bits[j] != qb).sum()), j))[:k]
        total += len(set(true) & set(ham)) / k
    return total / len(queries)


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_neighbour_recall_equals_the_slow_definition(distance):
    rng = np.random.default_rng(0)
    db = rng.standard_normal((300, 12))
    db[50:60] = db[40:50]  # exact ties in feature distance: the lower row must win
    queries = rng.standard_normal((40, 12))
    queries[:5] = db[40:45]  # queries with a duplicated neighbour at distance 0
    db_bits = rng.random((300, 16)) < 0.5
    db_bits[100:] = db_bits[:200]  # many Hamming ties too
    query_bits = rng.random((40, 16)) < 0.5
    for k in (1, 7, 100):
        truth = true_neighbours(db, queries, k, distance)
        fast = neighbour_recall(truth, pack_bits(db_bits), pack_bits(query_bits))
        assert fast == pytest.approx(slow_recall(db, queries, db_bits, query_bits, k, distance))


def test_true_neighbours_break_ties_by_row_and_clamp_k():
    db = np.zeros((5, 2))
    db[3] = 1.0
    assert true_neighbours(db, np.zeros((1, 2)), 3, "euclidean").tolist() == [[0, 1, 2]]
    assert true_neighbours(db, np.ones((1, 2)), 10, "euclidean").tolist() == [[3, 0, 1, 2, 4]]


def test_codes_that_keep_the_neighbours_score_1_and_random_ones_do_not():
    rng = np.random.default_rng(1)
    x = rng.random((500, 8)).astype(np.float32)
    split = split_rows(len(x), 0.1, seed=0)
    validator = Validator(FeatureSet(x), split, torch.device("cpu"), k=10)
    identity = torch.nn.Linear(8, 8, bias=False)
    with torch.no_grad():
        identity.weight.copy_(torch.eye(8))
    exact = validator(identity)["recall@10"]  # the sign of raw non-negative features: all ones
    assert exact < 0.2
    sign = torch.nn.Linear(8, 8)
    with torch.no_grad():
        sign.weight.copy_(torch.eye(8))
        sign.bias.fill_(-0.5)  # one bit per dimension, split at its median
    assert validator(sign)["recall@10"] > exact + 0.1


def test_split_holds_out_a_capped_seeded_fraction():
    split = split_rows(1000, 0.1, seed=3)
    assert len(split.held_out) == 100 and len(split.train) == 900
    assert sorted(np.concatenate([split.train, split.held_out]).tolist()) == list(range(1000))
    assert np.array_equal(split.held_out, split_rows(1000, 0.1, seed=3).held_out)
    assert not np.array_equal(split.held_out, split_rows(1000, 0.1, seed=4).held_out)
    assert len(split_rows(100_000, 0.1, seed=0).held_out) == 2000  # at most a few thousand
    assert len(split_rows(50, 0.0, seed=0).held_out) == 0
    with pytest.raises(TbhError, match="holds out none"):
        split_rows(4, 0.1, seed=0)
