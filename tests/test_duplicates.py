"""tbhcli.apps.duplicates: groups equal a greedy grouping over a brute-force distance table."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from tbhcli.apps import duplicates as apps_duplicates
from tbhcli.apps.duplicates import group_store
from tbhcli.cli import app
from tbhcli.search import pairs
from tbhcli.storage.store import open_store
from tests.code_stores import random_codes, write_checksums, write_store


def with_files(store):
    """Create the (empty) file of every row of `store` (root: photos/ beside it), so that its
    rows count as present."""
    import zarr

    zarr.open_group(store, mode="r+").attrs["root"] = "../photos"
    table = open_store(store)
    for name in table.paths.tolist():
        (table.root / name).parent.mkdir(parents=True, exist_ok=True)
        (table.root / name).touch()
    return table.root


def reference_groups(codes: np.ndarray, radius: int) -> list[list[int]]:
    """In row order, each ungrouped row takes its ungrouped rows within radius: the obvious way."""
    dist = np.bitwise_count(codes[:, None, :] ^ codes[None, :, :]).sum(axis=2)
    grouped, groups = set(), []
    for row in range(len(codes)):
        if row in grouped:
            continue
        near = [
            int(j) for j in np.flatnonzero(dist[row] <= radius) if j != row and j not in grouped
        ]
        if near:
            groups.append(sorted([row, *near]))
            grouped |= set(groups[-1])
    return groups


def planted_codes() -> np.ndarray:
    """64-bit codes far apart, plus near copies: rows 3~40 (1 bit), a chain 7~41~42 (2 bits each,
    7 and 42 differ in 4, so 42 stays out of 7's group), and an exact copy 9=43."""
    codes = np.random.default_rng(0).integers(0, 256, (40, 8), dtype=np.uint8)
    flip = np.zeros(8, np.uint8)
    flip[0] = 0b11
    copies = [
        codes[3] ^ np.eye(8, dtype=np.uint8)[1],
        codes[7] ^ flip,
        codes[7] ^ flip ^ (flip << 2),
    ]
    return np.concatenate([codes, np.array(copies), codes[9:10]])


def test_planted_groups_and_chains(tmp_path):
    codes = planted_codes()
    store = write_store(tmp_path / "codes.zarr", codes, chunk_rows=16, garbage_rows=5)
    groups = group_store(store, radius=2)
    assert [g.rows.tolist() for g in groups] == [[3, 40], [7, 41], [9, 43]]
    assert [g.distances.tolist() for g in groups] == [[0, 1], [0, 2], [0, 0]]
    assert [g.rows.tolist() for g in group_store(store, radius=4)] == [
        [3, 40],
        [7, 41, 42],
        [9, 43],
    ]
    assert groups[0].paths == ["img/00003.jpg", "img/00040.jpg"]
    assert [g.rows.tolist() for g in group_store(store, radius=0)] == [[9, 43]]


@pytest.mark.parametrize("join", ["multi-index", "scan", "block"])
@pytest.mark.parametrize(
    ("bits", "radius", "density"),
    [(32, 0, 0x21), (32, 1, 0x21), (32, 3, 0x21), (64, 2, 0x21), (256, 8, 0x01)],
)
def test_groups_equal_reference(tmp_path, monkeypatch, join, bits, radius, density):
    # SCAN_COST 0: the multi-index join always pays; huge: the scan always does; "block": the
    # numpy join that small folders use (no numba start-up)
    monkeypatch.setattr(pairs, "SCAN_COST", 0 if join == "multi-index" else 10**12)
    monkeypatch.setattr(apps_duplicates, "SMALL_JOIN", 10**6 if join == "block" else 0)
    monkeypatch.setattr(pairs, "QUERY_BATCH", 70)  # several query batches
    codes = random_codes(np.random.default_rng(radius), 300, bits, density)
    store = write_store(tmp_path / "codes.zarr", codes, chunk_rows=64)
    expected = reference_groups(codes, radius)
    assert expected, "the fixture should contain near duplicates"
    assert [g.rows.tolist() for g in group_store(store, radius=radius)] == expected


def test_cli_json_table_and_errors(tmp_path, monkeypatch):
    with_files(write_store(tmp_path / "codes.zarr", planted_codes(), chunk_rows=16))
    monkeypatch.chdir(tmp_path)  # the default store is ./codes.zarr
    result = CliRunner().invoke(app, ["duplicates", "--radius", "1", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert (payload["schema"], payload["store"], payload["radius"]) == (
        "tbh.duplicates/1",
        "codes.zarr",
        1,
    )
    assert "using store codes.zarr (default)" in result.stderr
    groups = payload["groups"]
    assert [[item["path"] for item in group["items"]] for group in groups] == [
        ["img/00003.jpg", "img/00040.jpg"],
        ["img/00009.jpg", "img/00043.jpg"],
    ]
    assert [item["row"] for item in groups[0]["items"]] == [3, 40]
    table = CliRunner().invoke(app, ["duplicates"])
    assert table.exit_code == 0 and "3 groups" in table.stdout and "img/00041.jpg" in table.stdout
    missing = CliRunner().invoke(app, ["duplicates", "--store", "nope.zarr"])
    assert missing.exit_code == 1 and "no code store" in missing.output
    negative = CliRunner().invoke(app, ["duplicates", "--radius", "-1"])
    assert negative.exit_code == 1 and "radius" in negative.output
    no_threads = CliRunner().invoke(app, ["duplicates", "--threads", "0"])
    assert no_threads.exit_code == 1 and "--threads" in no_threads.output


def test_files_gone_leave_the_groups_with_a_line(tmp_path, monkeypatch):
    """Issue 20 defect 6: after deleting listed files, the next run showed them all again."""
    root = with_files(write_store(tmp_path / "codes.zarr", planted_codes(), chunk_rows=16))
    (root / "img/00040.jpg").unlink()
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["duplicates", "--radius", "1", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert [[i["path"] for i in g["items"]] for g in payload["groups"]] == [
        ["img/00009.jpg", "img/00043.jpg"]
    ]
    assert payload["missing"] == ["img/00040.jpg"]
    assert "1 stored file(s) no longer exist" in " ".join(result.stderr.split())


def test_rows_outside_the_root_are_never_grouped_or_listed(tmp_path, monkeypatch):
    """Issue 20 defect 5: rows whose path is ../x, absolute or a link out of the root were listed
    by --to-remove."""
    import zarr

    codes = planted_codes()
    store = write_store(tmp_path / "codes.zarr", codes, chunk_rows=16)
    root = with_files(store)
    outside = tmp_path / "elsewhere.jpg"
    outside.touch()
    (root / "img/00040.jpg").unlink()
    (root / "img/00040.jpg").symlink_to(outside)  # a link leading out of the root
    group = zarr.open_group(store, mode="r+")
    names = group["paths"][:]
    names[9], names[43] = "../elsewhere.jpg", str(outside)  # 9 = 43: an exact pair
    group["paths"][:] = names
    write_checksums(group)  # a hostile store, whole as far as its checksums go
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "remove.txt"
    result = CliRunner().invoke(
        app, ["duplicates", "--radius", "1", "--to-remove", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["groups"] == []
    assert out.read_text() == ""
    assert "3 stored path(s) lead outside the folder" in " ".join(result.stderr.split())
