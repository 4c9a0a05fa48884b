"""tbhcli.search against its slow NumPy reference: ties, every width, k edge cases, stores, Dask."""

import numpy as np
import pytest
import zarr

from tbhcli.errors import TbhError
from tbhcli.hamming.kernels import TILE
from tbhcli.search import (
    as_words,
    radius_reference,
    radius_search,
    topk,
    topk_reference,
)
from tbhcli.storage.store import open_store
from tests.code_stores import random_codes, write_store

WIDTHS = [8, 16, 32, 64, 128, 256]  # bits; 8 and 16 take the zero-padded path


def assert_same(result, expected) -> None:
    assert result[0].dtype == np.int32 and result[1].dtype == np.int64
    np.testing.assert_array_equal(result[1], expected[1])
    np.testing.assert_array_equal(result[0], expected[0])


def test_word_view_keeps_popcount():
    rng = np.random.default_rng(0)
    for bits in WIDTHS + [24, 40]:
        codes = rng.integers(0, 256, (5, bits // 8), dtype=np.uint8)
        words = as_words(codes)
        assert words.dtype in (np.uint32, np.uint64)
        np.testing.assert_array_equal(
            np.bitwise_count(words).sum(axis=1), np.bitwise_count(codes).sum(axis=1)
        )


@pytest.mark.parametrize("bits", WIDTHS)
def test_topk_matches_reference_with_ties(bits):
    rng = np.random.default_rng(bits)
    database = random_codes(rng, 3 * TILE + 77, bits)  # several tiles and a partial one
    queries = random_codes(rng, 23, bits)
    for k in (1, 7, 100, 1000, len(database)):
        assert_same(topk(database, queries, k), topk_reference(database, queries, k))


def test_topk_many_queries_and_threads():
    """Query blocks and row parts split differently with 1 and 2 threads; same answer."""
    rng = np.random.default_rng(1)
    database = random_codes(rng, 40_000, 64, density=0x81)
    queries = random_codes(rng, 300, 64, density=0x81)
    expected = topk_reference(database, queries, 50)
    assert_same(topk(database, queries, 50, threads=1), expected)
    assert_same(topk(database, queries, 50, threads=2), expected)


def test_topk_identical_codes_rank_by_index():
    database = np.zeros((5000, 8), np.uint8)
    database[4321] = 255  # the one far row
    distances, ids = topk(database, np.zeros((2, 8), np.uint8), 4999)
    np.testing.assert_array_equal(ids[0], np.delete(np.arange(5000), 4321))
    assert (distances == 0).all()


def test_k_larger_than_database_is_clamped():
    rng = np.random.default_rng(2)
    database, queries = random_codes(rng, 9, 32), random_codes(rng, 3, 32)
    distances, ids = topk(database, queries, 50)
    assert ids.shape == distances.shape == (3, 9)
    assert_same((distances, ids), topk_reference(database, queries, 9))


@pytest.mark.parametrize(
    ("database", "queries", "k", "message"),
    [
        (np.zeros((0, 8), np.uint8), np.zeros((1, 8), np.uint8), 5, "empty"),
        (np.zeros((4, 8), np.uint8), np.zeros((1, 4), np.uint8), 1, "64-bit"),
        (np.zeros((4, 8), np.uint8), np.zeros((1, 8), np.uint8), 0, "at least 1"),
        (np.zeros((4, 64)), np.zeros((1, 8), np.uint8), 1, "packed codes"),
    ],
)
def test_user_errors(database, queries, k, message):
    with pytest.raises(TbhError, match=message):
        topk(database, queries, k)


def test_no_queries_and_bad_threads():
    database = np.zeros((10, 8), np.uint8)
    distances, ids = topk(database, np.zeros((0, 8), np.uint8), 3)
    assert distances.shape == ids.shape == (0, 3)
    assert radius_search(database, np.zeros((0, 8), np.uint8), 2) == []
    with pytest.raises(TbhError, match="threads"):
        topk(database, database, 3, threads=0)


def test_empty_store_is_an_error(tmp_path):
    store = write_store(tmp_path / "codes.zarr", np.zeros((0, 8), np.uint8), chunk_rows=64)
    with pytest.raises(TbhError, match="empty"):
        topk(store, np.zeros((1, 8), np.uint8), 3)


@pytest.mark.parametrize("bits", [32, 64, 256])
def test_store_blocks_merge_exactly(tmp_path, monkeypatch, bits):
    """Tiny blocks put block boundaries inside every top-k; rows past rows_committed are ignored."""
    import tbhcli.search.scan as scan

    monkeypatch.setattr(scan, "BLOCK_BYTES", 1)  # one 97-row chunk per block
    rng = np.random.default_rng(bits)
    codes = random_codes(rng, 1000, bits)
    queries = random_codes(rng, 11, bits)
    store = write_store(tmp_path / "codes.zarr", codes, chunk_rows=97, garbage_rows=50)
    for k in (1, 150, 1000):
        assert_same(topk(store, queries, k), topk_reference(codes, queries, k))
        assert_same(topk(str(store), queries, k, threads=1), topk_reference(codes, queries, k))
    whole = zarr.open_array(store / "codes", mode="r")  # a zarr array is searched whole
    assert_same(topk(whole, queries, 5), topk_reference(whole[:], queries, 5))


@pytest.mark.parametrize("bits", WIDTHS)
def test_radius_matches_reference(bits):
    rng = np.random.default_rng(bits + 1)
    database = random_codes(rng, 2 * TILE + 5, bits)
    queries = random_codes(rng, 9, bits)
    for radius in (0, 1, 3, bits):
        found = radius_search(database, queries, radius)
        expected = radius_reference(database, queries, radius)
        assert len(found) == len(queries)
        for result, reference in zip(found, expected, strict=True):
            assert_same(result, reference)


def test_radius_over_store_blocks(tmp_path, monkeypatch):
    import tbhcli.search.scan as scan

    monkeypatch.setattr(scan, "BLOCK_BYTES", 1)
    rng = np.random.default_rng(5)
    codes, queries = random_codes(rng, 700, 64), random_codes(rng, 6, 64)
    store = write_store(tmp_path / "codes.zarr", codes, chunk_rows=64, garbage_rows=30)
    for result, reference in zip(
        radius_search(store, queries, 2), radius_reference(codes, queries, 2), strict=True
    ):
        assert_same(result, reference)
    with pytest.raises(TbhError, match="radius"):
        radius_search(store, queries, -1)


@pytest.mark.slow
def test_dask_equals_local(tmp_path, monkeypatch):
    from distributed import LocalCluster

    import tbhcli.cluster as cluster
    import tbhcli.search.scan as scan

    monkeypatch.setattr(scan, "BLOCK_BYTES", 2000)  # 200-row blocks: ten tasks
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 1)
    rng = np.random.default_rng(6)
    codes, queries = random_codes(rng, 2000, 64), random_codes(rng, 7, 64)
    store = write_store(tmp_path / "codes.zarr", codes, chunk_rows=100, garbage_rows=20)
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as local:
        on_cluster = topk(store, queries, 120, dask=local.scheduler_address)
        found = radius_search(store, queries, 3, dask=local.scheduler_address)
    assert_same(on_cluster, topk(store, queries, 120))
    for result, reference in zip(found, radius_search(store, queries, 3), strict=True):
        assert_same(result, reference)
    assert_same(topk(open_store(store), queries, 5, dask="local"), topk(store, queries, 5))
    with pytest.raises(TbhError, match="code store"):
        topk(codes, queries, 3, dask="local")
    with pytest.raises(TbhError, match="cannot reach"):
        topk(store, queries, 3, dask="tcp://127.0.0.1:9")
