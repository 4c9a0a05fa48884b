import numpy as np
from PIL import Image
from typer.testing import CliRunner

from tbhcli.apps.demo_data import read_mnist, stratified_split, write_mnist_images
from tbhcli.cli import app
from tbhcli.imaging.images import label_of, list_images


def test_read_mnist_layout():
    digits, labels = read_mnist()
    assert digits.shape == (5000, 28, 28) and digits.dtype == np.uint8
    assert sorted(np.unique(labels)) == list(range(10)) and digits.max() == 255


def test_stratified_split_is_seeded_and_balanced():
    labels = np.repeat(np.arange(4), 10)
    a, b = stratified_split(labels, 8, seed=3), stratified_split(labels, 8, seed=3)
    np.testing.assert_array_equal(a, b)
    assert np.bincount(labels[a]).tolist() == [2, 2, 2, 2]
    assert not np.array_equal(a, stratified_split(labels, 8, seed=4))


def test_write_mnist_images_small_subset(tmp_path):
    database, queries = write_mnist_images(tmp_path, n_queries=50, seed=0, n=300)
    db, q = list_images(database), list_images(queries)
    assert len(db) + len(q) == 300 and len(q) == 50
    assert [sum(label_of(p) == str(d) for p in q) for d in range(10)] == [5] * 10
    assert [sum(label_of(p) == str(d) for p in db) for d in range(10)] == [25] * 10
    assert not {p.name for p in db} & {p.name for p in q}

    digits, labels = read_mnist()
    some = db[7]
    row = int(some.stem)
    assert label_of(some) == str(labels[row])
    np.testing.assert_array_equal(np.asarray(Image.open(database / some)), digits[row])

    # Idempotent: a complete folder is left alone; a missing file is rewritten after a crash.
    stamp = (database / some).stat().st_mtime_ns
    write_mnist_images(tmp_path, n_queries=50, seed=0, n=300)
    assert (database / some).stat().st_mtime_ns == stamp
    (database / some).unlink()
    (tmp_path / ".complete").unlink()
    write_mnist_images(tmp_path, n_queries=50, seed=0, n=300)
    assert (database / some).is_file()

    # Another split replaces the old one instead of mixing with it.
    write_mnist_images(tmp_path, n_queries=20, seed=1, n=300)
    assert len(list_images(queries)) == 20 and len(list_images(database)) == 280


def test_demo_refuses_zero_steps_before_any_work(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--steps", "0", "--workspace", str(tmp_path / "w")])
    assert result.exit_code == 1
    assert result.output.strip() == "error: --steps must be at least 1 (got 0)."
    assert not (tmp_path / "w").exists()  # nothing written: no images, no features
