"""Metrics against textbook slow references on small random cases with many ties."""

import numpy as np
import pytest

from tbhcli.errors import TbhError
from tbhcli.evaluation import metrics
from tbhcli.hashing.codes import pack_bits


def slow_ranking(db_bits, q_bits):
    """Per query: database indices sorted by (Hamming distance, index), and the distances."""
    out = []
    for q in q_bits:
        dists = [int(sum(a != b for a, b in zip(q, d, strict=True))) for d in db_bits]
        order = sorted(range(len(db_bits)), key=lambda i: (dists[i], i))
        out.append((order, dists))
    return out


def shares_label(a, b):
    if np.ndim(a) == 0:
        return a == b
    return bool(np.any(np.logical_and(a, b)))


def slow_ap_at_k(order, relevant_of, k):
    hits, total = 0, 0.0
    for rank, idx in enumerate(order[:k], start=1):
        if relevant_of(idx):
            hits += 1
            total += hits / rank
    return total / hits if hits else 0.0


def make_case(seed, n=60, q=12, bits=16, multilabel=False):
    rng = np.random.default_rng(seed)
    # Few distinct codes so that many items tie in distance.
    protos = rng.integers(0, 2, (6, bits))
    db_bits = protos[rng.integers(0, 6, n)] ^ (rng.random((n, bits)) < 0.1)
    q_bits = protos[rng.integers(0, 6, q)] ^ (rng.random((q, bits)) < 0.1)
    if multilabel:
        db_labels = rng.random((n, 4)) < 0.3
        q_labels = rng.random((q, 4)) < 0.3
    else:
        db_labels = rng.integers(0, 3, n)
        q_labels = rng.integers(0, 3, q)
    return db_bits.astype(np.uint8), q_bits.astype(np.uint8), db_labels, q_labels


@pytest.mark.parametrize("multilabel", [False, True])
@pytest.mark.parametrize("k", [1, 7, 60])
def test_map_and_precision_at_k_match_textbook(multilabel, k):
    db_bits, q_bits, db_labels, q_labels = make_case(k + multilabel, multilabel=multilabel)
    got = metrics.evaluate_codes(
        pack_bits(db_bits), db_labels, pack_bits(q_bits), q_labels, [f"map@{k}", f"p@{k}"]
    )
    aps, precisions = [], []
    for qi, (order, _) in enumerate(slow_ranking(db_bits, q_bits)):

        def rel(i, qi=qi):
            return shares_label(q_labels[qi], db_labels[i])

        aps.append(slow_ap_at_k(order, rel, k))
        precisions.append(sum(rel(i) for i in order[:k]) / k)
    assert got[f"map@{k}"] == pytest.approx(np.mean(aps))
    assert got[f"p@{k}"] == pytest.approx(np.mean(precisions))


def test_map_all_and_k_beyond_database_are_clamped():
    db_bits, q_bits, db_labels, q_labels = make_case(3)
    db, q = pack_bits(db_bits), pack_bits(q_bits)
    got = metrics.evaluate_codes(db, db_labels, q, q_labels, ["map@all", "map@5000"])
    expected = metrics.evaluate_codes(db, db_labels, q, q_labels, [f"map@{len(db)}"])
    assert got["map@all"] == pytest.approx(expected[f"map@{len(db)}"])
    assert got["map@5000"] == pytest.approx(expected[f"map@{len(db)}"])


@pytest.mark.parametrize("multilabel", [False, True])
def test_radius_precision_and_pr_curve_match_textbook(multilabel):
    db_bits, q_bits, db_labels, q_labels = make_case(11, multilabel=multilabel)
    bits = db_bits.shape[1]
    counts_all, counts_rel = metrics.label_histograms(
        pack_bits(db_bits), db_labels, pack_bits(q_bits), q_labels
    )
    precision, recall = metrics.pr_curve(counts_all, counts_rel)
    ranking = slow_ranking(db_bits, q_bits)
    for radius in range(bits + 1):
        per_query_p, answered, per_query_r = [], [], []
        for qi, (_, dists) in enumerate(ranking):
            inside = [i for i, d in enumerate(dists) if d <= radius]
            rel_inside = sum(shares_label(q_labels[qi], db_labels[i]) for i in inside)
            rel_total = sum(shares_label(q_labels[qi], lab) for lab in db_labels)
            per_query_p.append(rel_inside / len(inside) if inside else 0.0)
            if inside:
                answered.append(rel_inside / len(inside))
            if rel_total:
                per_query_r.append(rel_inside / rel_total)
        assert metrics.precision_within_radius(counts_all, counts_rel, radius) == pytest.approx(
            np.mean(per_query_p)
        )
        assert precision[radius] == pytest.approx(np.mean(answered) if answered else 0.0)
        assert recall[radius] == pytest.approx(np.mean(per_query_r))
    assert recall[-1] == pytest.approx(1.0)
    got = metrics.evaluate_codes(
        pack_bits(db_bits), db_labels, pack_bits(q_bits), q_labels, ["p@r2"]
    )
    assert got["p@r2"] == pytest.approx(metrics.precision_within_radius(counts_all, counts_rel, 2))


def test_average_precision_hand_example():
    # relevant at ranks 1, 3, 4 -> (1/1 + 2/3 + 3/4) / 3
    relevant = np.array([[True, False, True, True, False], [False] * 5])
    np.testing.assert_allclose(metrics.average_precision(relevant), [(1 + 2 / 3 + 3 / 4) / 3, 0.0])


@pytest.mark.parametrize(
    "name, parsed",
    [
        ("map@1000", ("map", 1000)),
        ("MAP@all", ("map", None)),
        ("p@10", ("p", 10)),
        ("p@r2", ("p@r", 2)),
    ],
)
def test_parse_metric(name, parsed):
    assert metrics.parse_metric(name) == parsed


@pytest.mark.parametrize("name", ["map", "map@", "recall@10", "p@r", "map@-1", "map@0", "p@0"])
def test_parse_metric_rejects_unknown(name):
    with pytest.raises(TbhError):
        metrics.parse_metric(name)


def test_radius_counts_are_the_same_on_any_number_of_threads(monkeypatch):
    from tbhcli.search import histograms

    db_bits, q_bits, db_labels, q_labels = make_case(5)
    db, q = pack_bits(db_bits), pack_bits(q_bits)
    one = metrics.label_histograms(db, db_labels, q, q_labels, threads=1)
    monkeypatch.setattr(histograms, "HISTOGRAM_CHUNK_BYTES", q.size * 7)  # 7 rows per task
    for threads in (1, 3):
        many = metrics.label_histograms(db, db_labels, q, q_labels, threads=threads)
        np.testing.assert_array_equal(many[0], one[0])
        np.testing.assert_array_equal(many[1], one[1])
    with pytest.raises(TbhError, match="--threads"):
        metrics.evaluate_codes(db, db_labels, q, q_labels, ["p@r2"], threads=0)
