"""tbhcli.apps.keep and duplicates_page: which file is kept, the removal list, the HTML page."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from tbhcli.apps.duplicates import DuplicateGroup
from tbhcli.apps.duplicates_page import write_page
from tbhcli.apps.keep import KEEP_POLICIES, decide, write_to_remove
from tbhcli.errors import TbhError
from tests.browsers import offline_page


def photo(path: Path, size: tuple[int, int], seed: int, quality: int = 90) -> None:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=quality)


@pytest.fixture
def folder(tmp_path):
    """a: 64x48 small file; b: 128x96 (largest resolution); c: 128x96 with a larger file."""
    root = tmp_path / "photos"
    photo(root / "a.jpg", (64, 48), 0)
    photo(root / "b.jpg", (128, 96), 1, quality=30)
    photo(root / "c.jpg", (128, 96), 2, quality=95)
    photo(root / "d.jpg", (32, 32), 3)
    for i, name in enumerate(["a.jpg", "b.jpg", "c.jpg", "d.jpg"]):  # a is oldest, d newest
        os.utime(root / name, (1_000_000 + i, 1_000_000 + i))
    return root


def group(paths: list[str]) -> DuplicateGroup:
    return DuplicateGroup(np.arange(len(paths)), paths, np.arange(len(paths)))


def test_keep_policies(folder):
    groups = [group(["a.jpg", "b.jpg", "c.jpg"]), group(["d.jpg", "missing.jpg"])]
    largest = decide(groups, folder, "largest")
    assert [d.members[d.kept].path for d in largest] == ["c.jpg", "d.jpg"]
    assert largest[0].members[1].width == 128 and largest[1].members[1].bytes is None
    assert [d.members[d.kept].path for d in decide(groups, folder, "first")] == ["a.jpg", "d.jpg"]
    assert [d.members[d.kept].path for d in decide(groups, folder, "newest")] == ["c.jpg", "d.jpg"]
    assert [d.members[d.kept].path for d in decide(groups, folder, "oldest")] == ["a.jpg", "d.jpg"]
    with pytest.raises(TbhError, match="unknown keep 'biggest'"):  # Python's spelling
        decide(groups, folder, "biggest")


def test_equal_sizes_keep_the_first_path(folder):
    shutil.copy(folder / "c.jpg", folder / "e.jpg")
    [decision] = decide([group(["e.jpg", "c.jpg"])], folder, "largest")
    assert decision.kept == 0


def test_to_remove_lists_all_but_the_kept_and_deletes_nothing(folder, tmp_path):
    decisions = decide([group(["a.jpg", "b.jpg", "c.jpg"])], folder, "largest")
    out = tmp_path / "lists" / "remove.txt"
    assert write_to_remove(decisions, out) == 2
    assert out.read_text().splitlines() == [str(folder / "a.jpg"), str(folder / "b.jpg")]
    assert all((folder / n).is_file() for n in ["a.jpg", "b.jpg", "c.jpg"])


@pytest.mark.parametrize("keep", KEEP_POLICIES)
def test_a_link_is_never_kept_in_place_of_its_target(folder, tmp_path, keep):
    """Issue 20 defect 1: a symlink to a photo was kept and the real file listed."""
    (folder / "link.jpg").symlink_to(folder / "c.jpg")  # larger-looking, newest, first path
    os.utime(folder / "link.jpg", (2_000_000, 2_000_000), follow_symlinks=False)
    [decision] = decide([group(["link.jpg", "c.jpg"])], folder, keep)
    assert decision.members[decision.kept].path == "c.jpg"
    write_to_remove([decision], tmp_path / "remove.txt")
    assert (tmp_path / "remove.txt").read_text().splitlines() == [str(folder / "link.jpg")]
    (folder / "link2.jpg").symlink_to(folder / "c.jpg")
    [only_links] = decide([group(["link.jpg", "link2.jpg"])], folder, keep)
    assert only_links.kept is None and only_links.to_remove == []  # nothing regular: keep all


def test_control_characters_are_refused_or_written_nul_separated(tmp_path):
    """Issue 20 defect 3: a folder name with a newline made remove.txt hold an extra line that
    reads as another path."""
    root = tmp_path / "trip\n/etc"
    photo(root / "a.jpg", (64, 48), 0)
    photo(root / "b.jpg", (64, 48), 1)
    decisions = decide([group(["a.jpg", "b.jpg"])], root, "first")
    out = tmp_path / "remove.txt"
    with pytest.raises(TbhError, match="--null"):
        write_to_remove(decisions, out)
    assert not out.exists()
    assert write_to_remove(decisions, out, null=True) == 1
    assert out.read_bytes().split(b"\0") == [os.fsencode(root / "b.jpg"), b""]


def test_original_keeps_the_unedited_photo_over_larger_edits(tmp_path):
    """Issue 20 defect 7: `largest` kept an edited copy over the original. The original is one
    edit from each copy; two copies are two edits apart, so the original is the medoid."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    original = Image.fromarray(small).resize((160, 120), Image.Resampling.BICUBIC)
    root = tmp_path / "photos"
    root.mkdir()
    names = ["bright.jpg", "crop.jpg", "original.jpg"]
    ImageEnhance.Brightness(original).enhance(1.15).save(root / names[0], quality=99)
    original.crop((6, 5, 154, 115)).resize((160, 120)).save(root / names[1], quality=95)
    original.save(root / names[2], quality=90)
    for i, name in enumerate(names):  # the original is the newest file: age cannot decide
        os.utime(root / name, (1_000_000 + i, 1_000_000 + i))
    groups = [DuplicateGroup(np.arange(3), names, np.zeros(3, int))]
    [largest] = decide(groups, root, "largest")
    assert largest.members[largest.kept].path == "bright.jpg"  # same size, the larger file
    [kept] = decide(groups, root, "original")
    assert kept.members[kept.kept].path == "original.jpg"
    assert kept.members[kept.kept].spread == min(m.spread for m in kept.members)


def test_page_marks_the_kept_one_and_escapes_paths(folder, tmp_path):
    hostile = "<i>x&y.jpg"
    shutil.copy(folder / "a.jpg", folder / hostile)
    decisions = decide([group(["a.jpg", "c.jpg", hostile])], folder)
    page = write_page(decisions, tmp_path / "groups.html").read_text()
    assert page.count('class="keep"') == 1 and page.count('class="copy"') == 2
    assert "&lt;i&gt;x&amp;y.jpg" in page and "<i>" not in page
    assert page.count("data:image/") == 3 and "128×96" in page


@pytest.mark.slow
def test_page_in_a_real_browser(folder, tmp_path):
    decisions = decide([group(["a.jpg", "b.jpg", "c.jpg"]), group(["d.jpg", "a.jpg"])], folder)
    page_path = write_page(decisions, tmp_path / "groups.html")
    with offline_page() as page:  # the page embeds its thumbnails: nothing may leave the machine
        page.goto(page_path.as_uri())
        shot = tmp_path / "groups.png"
        page.screenshot(path=str(shot), full_page=True)
        sizes = page.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")
        captions = "els => els.map(e => e.innerText)"
        kept = page.eval_on_selector_all("figure.keep figcaption", captions)
        sections = page.eval_on_selector_all("section", "els => els.length")
    assert sections == 2
    assert len(sizes) == 5 and all(w > 0 for w in sizes)  # every thumbnail decoded
    assert kept[0].startswith("keep") and "c.jpg" in kept[0] and "a.jpg" in kept[1]
    with Image.open(shot) as img:  # the screenshot shows a rendered page, not a blank one
        assert img.width > 300 and len(np.unique(np.asarray(img.convert("L")))) > 50
