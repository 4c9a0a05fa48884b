"""Small and copy-heavy folders, where a threshold fitted on the folder failed (issue 20).

    nice -n 10 .venv/bin/python bench/dedup_small.py --set tiles [--draws 20] [--phash-best 16]

For each draw, folders are built from the set's distinct originals (bench/dedup_photos.py):
- `2 distinct`: two different originals (right answer: no group);
- `2 copies`: an original and one copy, once per transform (right answer: one group of both);
- `5 distinct`: five originals (no group);
- `12 with 4 files of one`: one original saved as .jpeg (q90), then that JPEG saved as .png and
  .bmp, plus a WebP (q70) re-encode, and 8 other originals (one group of exactly those 4);
- `copy-heavy`: 7 files of one original (itself and 6 copies: JPEG q50, resize 0.5, aspect,
  WebP, resize 0.7 + JPEG q35, brightness 1.3) and 5 other originals (one group of the 7).
tbh runs its real command (`folder_duplicates`) on each folder; imagehash pHash is grouped the
same greedy way (`group_codes`) at its usual threshold 10 and at its F1-best one (`--phash-best`,
from bench/dedup_quality.py on the same set). Reported per folder kind: false groups (groups
holding files of two originals, summed over draws), copies missed (files of the copied original
not in its group), and folders answered exactly right.
"""

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from dedup_photos import SAVE_AS, SETS, TRANSFORMS  # noqa: E402

COPY_HEAVY = ("jpeg-q50", "resize-0.5", "aspect", "webp", "resize-0.7+jpeg-q35", "brightness")


def write_copy(img: Image.Image, transform: str, path: Path, rng) -> Path:
    suffix, options = SAVE_AS.get(transform, (".png", {}))
    out = path.with_suffix(suffix)
    TRANSFORMS[transform](img, rng).save(out, **options)
    return out


def folders(originals: dict, draws: int, seed: int, out: Path):
    """Yield (kind, folder, expected set of file names that form the one group, or None)."""
    rng = np.random.default_rng(seed)
    names = sorted(originals)
    for draw in range(draws):
        pick = [originals[names[i]] for i in rng.choice(len(names), 13, replace=False)]
        base = out / f"d{draw}"
        folder = base / "two-distinct"
        folder.mkdir(parents=True)
        pick[0].save(folder / "a.png")
        pick[1].save(folder / "b.png")
        yield "2 distinct", folder, None
        for transform in TRANSFORMS:
            folder = base / f"two-{transform}"
            folder.mkdir()
            pick[0].save(folder / "original.png")
            copy = write_copy(pick[0], transform, folder / "copy", rng)
            yield "2 copies", folder, {"original.png", copy.name}
        folder = base / "five"
        folder.mkdir()
        for i in range(5):
            pick[i].save(folder / f"p{i}.png")
        yield "5 distinct", folder, None
        folder = base / "twelve"
        folder.mkdir()
        pick[0].save(folder / "a.jpeg", quality=90)
        with Image.open(folder / "a.jpeg") as jpeg:
            jpeg.save(folder / "a.png")
            jpeg.save(folder / "a.bmp")
        pick[0].save(folder / "a-re.webp", quality=70)
        for i in range(1, 9):
            pick[i].save(folder / f"other{i}.png")
        yield "12 with 4 files of one", folder, {"a.jpeg", "a.png", "a.bmp", "a-re.webp"}
        folder = base / "heavy"
        folder.mkdir()
        pick[0].save(folder / "c0.png")
        copies = {"c0.png"}
        for i, transform in enumerate(COPY_HEAVY, 1):
            copies.add(write_copy(pick[0], transform, folder / f"c{i}", rng).name)
        for i in range(1, 6):
            pick[i].save(folder / f"other{i}.png")
        yield "copy-heavy (7 + 5)", folder, copies


def judge(groups: list[list[str]], expected: set[str] | None) -> tuple[int, int, bool]:
    """(false groups, copies missed, exactly right) of one folder's groups."""
    copies = expected or set()
    false = sum(1 for g in groups if not set(g) <= copies)
    best = max((set(g) & copies for g in groups), key=len, default=set())
    missed = len(copies - best) if copies else 0
    right = (sorted(map(sorted, groups)) == [sorted(copies)]) if copies else groups == []
    return false, missed, right


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=sorted(SETS), default="tiles", dest="photo_set")
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--phash-best", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    import imagehash

    from tbhcli.apps.duplicates import group_codes
    from tbhcli.apps.photos import folder_duplicates

    originals = SETS[args.photo_set](None, 0)
    methods = ["tbh duplicates (default)", "pHash @10", f"pHash @{args.phash_best}"]
    table: dict[tuple[str, str], np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, folder, expected in folders(originals, args.draws, args.seed, Path(tmp)):
            found = folder_duplicates(folder, workers=0)
            answers = {methods[0]: [g.paths for g in found.groups]}
            files = sorted(p.name for p in folder.iterdir() if p.is_file())
            codes = np.stack([np.packbits(imagehash.phash(Image.open(folder / f)).hash.ravel())
                              for f in files])  # fmt: skip
            for name, t in ((methods[1], 10), (methods[2], args.phash_best)):
                answers[name] = [g.paths for g in group_codes(codes, files, t)]
            for name, groups in answers.items():
                key = (kind, name)
                table[key] = table.get(key, np.zeros(4, int)) + [*judge(groups, expected), 1]
    print(f"set {args.photo_set}: {args.draws} draws; false groups / copies missed / folders "
          "exactly right\n")  # fmt: skip
    print("| folder | " + " | ".join(methods) + " |")
    print("|---|" + "---|" * len(methods))
    for kind in dict.fromkeys(k for k, _ in table):
        cells = [f"{f} / {m} / {r} of {n}" for f, m, r, n in (table[kind, n] for n in methods)]
        print(f"| {kind} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
