"""Multi-index top-k (hamming/mih.py, search/planner.py, storage/mih_tables.py) equals the scan."""

import numpy as np
import pytest
import zarr

from tbhcli.errors import TbhError
from tbhcli.hamming import mih
from tbhcli.search import as_words, planner, topk, topk_reference
from tbhcli.storage import mih_tables
from tbhcli.storage.store import open_store
from tests.code_stores import random_codes, write_checksums, write_store


def assert_same(result, expected) -> None:
    assert result[0].dtype == np.int32 and result[1].dtype == np.int64
    np.testing.assert_array_equal(result[1], expected[1])
    np.testing.assert_array_equal(result[0], expected[0])


def clustered(rng, n: int, bits: int, centres: int = 20, flips: int = 3) -> np.ndarray:
    """Codes near a few random centres: crowded buckets, many ties, what the multi-index is for."""
    centre = rng.integers(0, 256, (centres, bits // 8), dtype=np.uint8)
    noise = np.packbits(rng.random((n, bits)) < flips / bits, axis=1)
    return centre[rng.integers(0, centres, n)] ^ noise


def near(rng, codes: np.ndarray, n: int) -> np.ndarray:
    """Queries from the same distribution: stored codes with a bit or two flipped."""
    flips = np.packbits(rng.random((n, codes.shape[1] * 8)) < 1.5 / (codes.shape[1] * 8), axis=1)
    return codes[rng.integers(0, len(codes), n)] ^ flips


def append(store, codes: np.ndarray) -> None:
    """Append committed rows the way StoreWriter does: arrays first, rows_committed last."""
    group = zarr.open_group(store, mode="r+", zarr_format=3)
    n, stop = group.attrs["rows_committed"], group.attrs["rows_committed"] + len(codes)
    for name, values in (
        ("codes", codes),
        ("paths", np.array([f"img/{i:05d}.jpg" for i in range(n, stop)], dtype=object)),
        ("labels", np.full(len(codes), -1, np.int32)),
    ):
        group[name].resize((stop, *group[name].shape[1:]))
        group[name][n:] = values
    group.attrs["rows_committed"] = stop
    write_checksums(group)


def test_substring_values_cut_the_bits():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (50, 16), dtype=np.uint8)
    words = codes.view(np.uint64)
    bits = np.unpackbits(codes.view("<u8").byteswap().view(np.uint8), axis=1)[:, ::-1]
    bits = bits.reshape(50, 2, 64)[:, ::-1].reshape(50, 128)  # bit i of word w at w * 64 + i
    out = np.empty(50, np.int64)
    for lo, width in ((0, 21), (21, 21), (50, 30), (64, 32), (100, 28)):
        mih.substring_values(words, lo, width, out)
        expected = (bits[:, lo : lo + width] * (1 << np.arange(width))).sum(axis=1)
        np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("bits", [8, 32, 64, 128, 256])
def test_mih_equals_reference_with_ties(bits):
    rng = np.random.default_rng(bits)
    database = np.concatenate([clustered(rng, 1500, bits), random_codes(rng, 500, bits)])
    queries = np.concatenate([near(rng, database, 9), random_codes(rng, 4, bits)])
    for k in (1, 10, 100, len(database), len(database) + 7):
        assert_same(topk(database, queries, k, method="mih"), topk_reference(database, queries, k))


@pytest.mark.parametrize("bits", [32, 64, 128])
def test_repeated_codes(bits):
    """Tables hold each distinct code once with its rows in row order: heavy repeats (a code's
    rows fill and overflow the best list, which takes them in row order and stops at the first
    that loses) still give the scan's ties, as do queries equal to a stored code."""
    rng = np.random.default_rng(bits + 1)
    distinct = np.concatenate(
        [clustered(rng, 40, bits, centres=4, flips=2), random_codes(rng, 5, bits)]
    )
    database = distinct[rng.integers(0, len(distinct), 4000)]
    queries = np.concatenate([distinct[:6], near(rng, distinct, 6)])
    index = mih.build_index(as_words(database), 2 if bits == 32 else 4)
    assert len(index.segments[0].ids[0]) == len(np.unique(database, axis=0))
    for k in (1, 37, 300, 1000, len(database)):
        assert_same(topk(database, queries, k, method="mih"), topk_reference(database, queries, k))


@pytest.mark.parametrize(("bits", "m"), [(32, 2), (64, 3), (64, 5)])
def test_every_substring_count(bits, m):
    rng = np.random.default_rng(m)
    database = clustered(rng, 800, bits)
    queries = near(rng, database, 6)
    words = as_words(database)
    index = mih.build_index(words, m)
    probe = mih.Probe.of(index)
    qw = as_words(queries)
    best_d = np.full((6, 30), bits + 1, np.int32)
    best_i = np.full((6, 30), -1, np.int64)
    stats = np.zeros((6, 4), np.int64)
    probe.search(qw, mih.query_values(qw, index.bounds), -1, best_d, best_i, stats, 2)
    assert_same((best_d, best_i), topk_reference(database, queries, 30))
    assert (stats[:, 3] > 0).all()
    with pytest.raises(ValueError, match="wider"):
        mih.substring_bounds(64, 1)


def test_work_estimate_is_the_kernels_count():
    """`estimated_work` over the whole database (no sample) is exactly what the kernel counts, so
    the substring count chosen from it is the cheapest by the kernel's own measure."""
    rng = np.random.default_rng(3)
    database = np.concatenate([clustered(rng, 3000, 64, centres=30), random_codes(rng, 300, 64)])
    queries = np.concatenate([near(rng, database, 12), random_codes(rng, 4, 64)])
    words, qw = as_words(database), as_words(queries)
    kth = topk_reference(database, queries, 25)[0][:, -1].astype(np.int64)
    measured = {}
    for m in (2, 3, 4, 6, 8):
        index = mih.build_index(words, m)
        best_d = np.full((len(qw), 25), 65, np.int32)
        best_i = np.full((len(qw), 25), -1, np.int64)
        stats = np.zeros((len(qw), 4), np.int64)
        mih.Probe.of(index).search(
            qw, mih.query_values(qw, index.bounds), -1, best_d, best_i, stats, 1
        )
        assert_same((best_d, best_i), topk_reference(database, queries, 25))
        distinct = mih.distinct_codes(words)[2]
        np.testing.assert_array_equal(
            mih.estimated_work(distinct, len(distinct), kth, qw, m), stats[:, 3]
        )
        measured[m] = stats[:, 3].mean()
        # profiling: stopping after a step never goes past it
        last = np.maximum(stats[:, 2] - 1, 0)
        mih.Probe.of(index).search(
            qw, mih.query_values(qw, index.bounds), -1, best_d, best_i, stats, 1, 1, last
        )
        assert (stats[:, 2] <= last).all()
    assert min(measured.values()) < measured[2] / 4  # clustered codes: a short m loses
    assert 2 <= mih.choose_substring_count(words, k=25) <= 8
    assert len(mih.build_index(words).bounds) == mih.choose_substring_count(words) + 1


def test_store_tables_append_and_missing(tmp_path, monkeypatch):
    """Tables in the store: exact across chunks, after appends (scanned tail, new segments,
    rebuilds), and a store without them, or with stale ones, still answers (by the scan)."""
    import tbhcli.search.scan as scan

    monkeypatch.setattr(scan, "BLOCK_BYTES", 1)  # one chunk per block
    rng = np.random.default_rng(7)
    codes = clustered(rng, 4000, 64)
    queries = np.concatenate([near(rng, codes, 5), codes[:3]])
    store = write_store(tmp_path / "codes.zarr", codes[:1000], chunk_rows=128)
    with pytest.raises(TbhError, match="multi-index"):
        topk(store, queries, 5, method="mih")
    assert_same(topk(store, queries, 5), topk_reference(codes[:1000], queries, 5))
    assert mih_tables.update_tables(store) is None  # no tables, none asked for
    assert mih_tables.update_tables(store, build=True) == (1000, 1)
    for n, segments in ((1000, 1), (1300, 2), (1900, 3), (4000, 1)):
        if n > len(open_store(store)):
            append(store, codes[len(open_store(store)) : n])
        for k in (1, 64, 2000):  # rows past the tables are scanned and merged; then extended
            expected = topk_reference(codes[:n], queries, k)
            assert_same(topk(store, queries, k, method="mih"), expected)
            assert_same(topk(store, queries, k, threads=1), expected)
        assert mih_tables.update_tables(store)[1] == segments
        expected = topk_reference(codes[:n], queries, 64)
        assert_same(topk(open_store(store), queries, 64, method="mih"), expected)
    # a leftover segment from an interrupted writer is ignored, then cleaned up
    zarr.open_group(store / "mih", mode="r+").create_group("rows-0-5-leftover")
    assert_same(topk(store, queries, 9, method="mih"), topk_reference(codes, queries, 9))
    mih_tables.update_tables(store)
    assert "rows-0-5-leftover" not in zarr.open_group(store / "mih").group_keys()


def test_stale_tables_are_not_used(tmp_path):
    rng = np.random.default_rng(8)
    codes = clustered(rng, 600, 32)
    queries = near(rng, codes, 4)
    store = write_store(tmp_path / "codes.zarr", codes, chunk_rows=100)  # read, not mapped
    mih_tables.update_tables(store, build=True)
    group = zarr.open_group(store, mode="r+")
    group.attrs["rows_committed"] = 500  # rows the tables cover are gone (a truncated store)
    write_checksums(group)
    with pytest.raises(mih_tables.TablesDamaged, match="index 600 rows but 500 are committed"):
        mih_tables.open_tables(open_store(store))
    assert_same(topk(store, queries, 20), topk_reference(codes[:500], queries, 20))
    assert mih_tables.update_tables(store) == (500, 1)
    assert_same(topk(store, queries, 20, method="mih"), topk_reference(codes[:500], queries, 20))
    mih_tables.invalidate(zarr.open_group(store, mode="r+"))  # as tbh remove / check --repair do
    assert mih_tables.open_tables(open_store(store)) is None
    assert mih_tables.update_tables(store) == (500, 1)  # rebuilt
    assert_same(topk(store, queries, 20, method="mih"), topk_reference(codes[:500], queries, 20))
    (table,) = (store / "mih").glob("rows-*/ids_0/c/0")
    table.write_bytes(table.read_bytes()[:100])  # a truncated table file: not used, scan answers
    with pytest.raises(mih_tables.TablesDamaged, match="does not match its checksum"):
        mih_tables.open_tables(open_store(store))
    assert_same(topk(store, queries, 20), topk_reference(codes[:500], queries, 20))


def test_auto_picks_by_cost(tmp_path, monkeypatch):
    """Clustered codes go to the multi-index, uniform random ones to the scan; same answers."""
    rng = np.random.default_rng(9)
    chosen = []
    real = planner.multi_index_topk

    def spy(*args):
        found = real(*args)
        chosen.append(found is not None)
        return found

    monkeypatch.setattr(planner, "multi_index_topk", spy)
    monkeypatch.setattr(planner, "SMALL_BATCH", 0)
    monkeypatch.setattr(mih, "PROBE_COST", 4)  # a small store: pretend probes are cheap
    for name, codes, wins in (
        ("clustered", clustered(rng, 20_000, 64, centres=200, flips=1), True),
        ("random", rng.integers(0, 256, (20_000, 8), dtype=np.uint8), False),
    ):
        store = write_store(tmp_path / f"{name}.zarr", codes, chunk_rows=1024)
        mih_tables.update_tables(store, build=True)
        queries = near(rng, codes, 40)
        assert_same(topk(store, queries, 10), topk_reference(codes, queries, 10))
        assert chosen[-1] is wins, name
    assert_same(topk(store, queries, 10, method="scan"), topk_reference(codes, queries, 10))
    with pytest.raises(TbhError, match="method"):
        topk(store, queries, 10, method="fast")
    # sample queries that run out of their allowance are searched again with the full one
    monkeypatch.setattr(mih, "SAMPLE_SHARE", 1e-9)
    monkeypatch.setattr(planner, "AUTO_SHARE", 10.0)  # ... when auto still takes the tables
    for share in (1e-9, 1.0):  # those that run out again: the scan
        monkeypatch.setattr(mih, "QUERY_SHARE", share)
        codes = clustered(rng, 20_000, 64, centres=200, flips=1)
        store = write_store(tmp_path / f"again-{share}.zarr", codes, chunk_rows=1024)
        mih_tables.update_tables(store, build=True)
        queries = near(rng, codes, 40)
        assert_same(topk(store, queries, 10), topk_reference(codes, queries, 10))
        assert chosen[-1]
