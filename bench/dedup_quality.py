"""Near-duplicate detection on real photos: tbh against imagehash and imagededup, one run.

    nice -n 10 .venv/bin/python bench/dedup_quality.py --set tiles [--originals 60] [--data DIR]

Builds a photo set of bench/dedup_photos.py (`--set tiles`: tiles of the photographs that
scikit-image, scikit-learn and matplotlib ship; `whole`: those photographs whole; `debian`:
Debian's wallpapers; one copy per named transform),
then for each method computes every image's code and scores *pairs*: a pair is predicted a
duplicate when its codes are within the threshold, and is one when both come from one original.
- `overall`: all pairs among the originals and their non-flip copies;
- one row per transform: the originals and that transform's copies (hflip and rotate-90 apart);
- `false groups`: the fraction of distinct originals within the threshold of another original.
Each method is scored at its usual threshold and at the one that maximises overall F1; the time
is the method's own wall time for every image (decode + code) + the pair search; imagehash runs
and imagededup in one process, tbh with its default decoding workers (one per core).
tbh runs its real command (`tbhcli.apps.photos.folder_duplicates`) and its pair scores come
from the codes it computed; `tbh ablation` rows are the same DCT coefficients thresholded as
tbh 0.1 did (centre crop, folder median) or at constants fitted on the tiles set. The `kept
original` line says how often `--keep original` / `--keep largest` keep the untransformed
original of a group that holds it, at the default radius.
"""

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from dedup_photos import FLIPS, SETS, write_photo_set  # noqa: E402

BLOCK = 256  # rows of the pair-distance table computed at a time


def families(paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Original id int [N] (the folder) and transform name [N] (the file stem) of each path."""
    folders = [Path(p).parent.as_posix() for p in paths]
    ids = {f: i for i, f in enumerate(sorted(set(folders)))}
    return np.array([ids[f] for f in folders]), np.array([Path(p).stem for p in paths])


def pair_histograms(codes: np.ndarray, rows: np.ndarray, family: np.ndarray, bins: int):
    """Counts int64 [bins] of Hamming distances of duplicate and of distinct pairs among `rows`."""
    same_hist, other_hist = np.zeros(bins, np.int64), np.zeros(bins, np.int64)
    sub, fam = codes[rows], family[rows]
    for start in range(0, len(rows), BLOCK):
        block = sub[start : start + BLOCK]
        dist = np.bitwise_count(block[:, None, :] ^ sub[None, :, :]).sum(axis=2)  # (b, n)
        later = np.arange(start, start + len(block))[:, None] < np.arange(len(rows))[None, :]
        same = fam[start : start + BLOCK, None] == fam[None, :]
        same_hist += np.bincount(dist[same & later], minlength=bins)
        other_hist += np.bincount(dist[~same & later], minlength=bins)
    return same_hist, other_hist


def scores(same: np.ndarray, other: np.ndarray):
    """Precision, recall, F1 [bins] when pairs within each threshold 0..bins-1 are predicted."""
    tp, fp = np.cumsum(same), np.cumsum(other)
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / max(int(same.sum()), 1)
    return precision, recall, 2 * precision * recall / np.maximum(precision + recall, 1e-12)


def evaluate(codes: np.ndarray, family: np.ndarray, transform: np.ndarray) -> dict:
    """Histograms per row of the table: 'overall' (non-flip), each transform, 'originals'."""
    bins = codes.shape[1] * 8 + 1
    flips = np.isin(transform, list(FLIPS))
    rows = {"overall": np.flatnonzero(~flips)}
    for name in sorted(set(transform) - {"original"}):
        rows[name] = np.flatnonzero(np.isin(transform, ["original", name]))
    out = {name: pair_histograms(codes, r, family, bins) for name, r in rows.items()}
    originals = np.flatnonzero(transform == "original")
    dist = np.bitwise_count(codes[originals][:, None] ^ codes[originals][None]).sum(axis=2)
    np.fill_diagonal(dist, bins)
    out["nearest_other"] = dist.min(axis=1)  # per original: distance to the nearest other one
    return out


def image_hashes(root: Path, paths: list[str], function) -> np.ndarray:
    """Packed 64-bit hashes uint8 [N, 8] of an imagehash function, one image at a time."""
    out = np.empty((len(paths), 8), np.uint8)
    for i, path in enumerate(paths):
        with Image.open(root / path) as img:
            out[i] = np.packbits(function(img).hash.flatten())
    return out


def pair_search_seconds(codes: np.ndarray, radius: int) -> float:
    """Time of finding every pair within radius (tbh's exact self-join on the same codes)."""
    from tbhcli.search import near_pairs

    start = time.perf_counter()
    near_pairs(codes, radius, threads=1)
    return time.perf_counter() - start


def run_imagehash(root: Path, paths: list[str]) -> dict:
    import imagehash

    out = {}
    for name in ("phash", "dhash", "whash"):
        start = time.perf_counter()
        codes = image_hashes(root, paths, getattr(imagehash, name))
        out[f"imagehash {name}"] = (codes, time.perf_counter() - start, 10)
    return out


def run_imagededup(root: Path, paths: list[str]) -> dict:
    """imagededup's own encode_images + find_duplicates (its BK-tree) at its default 10 bits."""
    from imagededup.methods import DHash, PHash, WHash

    out = {}
    for cls in (PHash, DHash, WHash):
        method = cls(verbose=False)
        start = time.perf_counter()
        encoded = method.encode_images(str(root), recursive=True, num_enc_workers=0)
        method.find_duplicates(encoding_map=encoded, max_distance_threshold=10,
                               num_dist_workers=0)  # fmt: skip
        seconds = time.perf_counter() - start
        codes = np.stack([np.frombuffer(bytes.fromhex(encoded[p]), np.uint8) for p in paths])
        out[f"imagededup {cls.__name__}"] = (codes, seconds, 10)
    return out


def run_tbh(root: Path, paths: list[str], radius: int | None, workers: int | None):
    """tbh's real command on the folder; its codes in `paths` order, and how often each keep
    policy keeps a group's original."""
    import tbhcli.apps.photo_codes  # noqa: F401  imports stay outside the clock, as imagehash's
    from tbhcli.apps.keep import decide
    from tbhcli.apps.photos import folder_duplicates

    start = time.perf_counter()
    found = folder_duplicates(root, radius=radius, workers=workers)
    seconds = time.perf_counter() - start
    shutil.rmtree(root / ".tbh", ignore_errors=True)
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in found.seconds.items())
    print(f"tbh duplicates: {seconds:.1f} s in all; {stages}", file=sys.stderr)
    row = {p: i for i, p in enumerate(found.paths)}
    codes = found.codes[[row[p] for p in paths]]
    kept = {}
    for keep in ("original", "largest"):
        decisions = decide(found.groups, found.root, keep)
        with_original = [d for d in decisions if any(m.path.endswith("/original.png")
                                                     for m in d.members)]  # fmt: skip
        hits = sum(d.members[d.kept].path.endswith("/original.png") for d in with_original)
        kept[keep] = (hits, len(with_original))
    return {"tbh duplicates (default)": (codes, seconds, found.radius)}, kept


def ablations(root: Path, paths: list[str], constants: np.ndarray | None) -> dict:
    """The DCT coefficients of tbh's code thresholded other ways (module doc)."""
    from tbhcli.hashing.perceptual import dct_coefficients
    from tbhcli.imaging.images import load_image
    from tbhcli.imaging.thumbnails import gray_thumbnail

    luma = np.array([0.299, 0.587, 0.114])[:, None, None]
    crops = np.stack([(load_image(root / p, 32) * luma).sum(axis=0) for p in paths])
    whole = dct_coefficients(np.stack([gray_thumbnail(root / p) for p in paths]))
    crop = dct_coefficients(crops)
    out = {
        "tbh ablation: centre crop + folder median (0.1)": crop > np.median(crop, axis=0),
        "tbh ablation: whole + folder median": whole > np.median(whole, axis=0),
    }
    if constants is not None:
        out["tbh ablation: whole + constants fitted on tiles"] = whole > constants
    return {name: (np.packbits(bits, axis=1), 0.0, 32) for name, bits in out.items()}


def tile_constants(originals: int) -> np.ndarray:
    """Per-coefficient medians over the tiles set's originals: "constants fitted once"."""
    from tbhcli.hashing.perceptual import dct_coefficients
    from tbhcli.imaging.thumbnails import gray_thumbnail

    with tempfile.TemporaryDirectory() as tmp:
        write_photo_set(Path(tmp), originals, photo_set="tiles")
        files = sorted(Path(tmp).glob("*/original.png"))
        return np.median(dct_coefficients(np.stack([gray_thumbnail(f) for f in files])), axis=0)


def mirror_rows(root: Path, paths: list[str], family: np.ndarray, transform: np.ndarray) -> None:
    """`tbh duplicates --mirror` at its default radius: overall (non-flip), hflip, rotate-90."""
    from tbhcli.apps.duplicates import variant_distances
    from tbhcli.apps.photos import folder_duplicates

    found = folder_duplicates(root, mirror=True)
    shutil.rmtree(root / ".tbh", ignore_errors=True)
    row = {p: i for i, p in enumerate(found.paths)}
    codes = found.codes[[row[p] for p in paths]]
    i, j = np.triu_indices(len(paths), 1)
    d = variant_distances(codes, i, j, found.variants, found.radius)
    same, flips = family[i] == family[j], np.isin(transform, list(FLIPS))
    print(f"\n`tbh duplicates --mirror` (radius {found.radius}): precision / recall / F1\n")
    print("| rows | precision | recall | F1 |\n|---|---|---|---|")
    for name in ("overall", *FLIPS):
        pair = ["original", name]
        if name == "overall":
            rows = ~flips[i] & ~flips[j]
        else:
            rows = np.isin(transform[i], pair) & np.isin(transform[j], pair)
        t = found.radius
        clipped = np.minimum(d, t + 1)
        same_hist = np.bincount(clipped[rows & same], minlength=t + 2)
        other_hist = np.bincount(clipped[rows & ~same], minlength=t + 2)
        p, r, f = scores(same_hist, other_hist)
        print(f"| {name} | {p[t]:.3f} | {r[t]:.3f} | {f[t]:.3f} |")


def overall_row(name: str, result: dict, threshold: str, t: int, ms: float) -> str:
    precision, recall, f1 = scores(*result["overall"])
    false_groups = float((result["nearest_other"] <= t).mean())
    return (
        f"| {name} | {threshold} {t} | {precision[t]:.3f} | {recall[t]:.3f} | {f1[t]:.3f} | "
        f"{false_groups:.3f} | {ms:.1f} |"
    )


def best_threshold(result: dict) -> int:
    return int(scores(*result["overall"])[2].argmax())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=sorted(SETS), default="tiles", dest="photo_set")
    parser.add_argument("--originals", type=int, default=60, help="distinct originals")
    parser.add_argument("--data", type=Path, help="photo set folder (default: a temporary one)")
    parser.add_argument("--radius", type=int, help="tbh's threshold (default: its default)")
    parser.add_argument("--workers", type=int, help="tbh's decoding processes (default: tbh's)")
    parser.add_argument("--skip", nargs="*", default=[], help="imagehash, imagededup, ablations")
    parser.add_argument("--mirror", action="store_true", help="also tbh duplicates --mirror")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or Path(tmp) / "photos"
        if not root.is_dir():
            start = time.perf_counter()
            write_photo_set(root, args.originals, photo_set=args.photo_set)
            print(f"photo set written in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        from tbhcli.imaging.images import list_images

        paths = [p.as_posix() for p in list_images(root)]
        family, transform = families(paths)
        print(f"{len(paths)} images, {len(set(family))} originals", file=sys.stderr)
        methods, kept = run_tbh(root, paths, args.radius, args.workers)
        if "ablations" not in args.skip:
            methods |= ablations(root, paths, tile_constants(args.originals))
        if "imagehash" not in args.skip:
            methods |= run_imagehash(root, paths)
        if "imagededup" not in args.skip:
            methods |= run_imagededup(root, paths)
        results, times = {}, {}
        for name, (codes, seconds, usual) in methods.items():
            if name.startswith("imagehash"):  # tbh's and imagededup's times include their search
                seconds += pair_search_seconds(codes, usual)
            results[name] = evaluate(codes, family, transform)
            times[name] = 1000 * seconds / len(paths)
        print(
            f"set {args.photo_set}: {len(paths)} images ({len(set(family))} originals x "
            f"{len(set(transform)) - 1} transforms + originals); pair precision / recall / F1 "
            "over non-flip copies; false groups = originals within the threshold of another "
            "original; ms/image = wall time of decode + code + pair search (tbh: its whole "
            "command, default workers; LOADED machine unless stated)\n"
        )
        print("| method | threshold | precision | recall | F1 | false groups | ms/image |")
        print("|---|---|---|---|---|---|---|")
        for name, (_, _, usual) in methods.items():
            result = results[name]
            print(overall_row(name, result, "usual", usual, times[name]))
            print(overall_row(name, result, "F1-best", best_threshold(result), times[name]))
        print()
        for keep, (hits, total) in kept.items():
            print(f"kept original, --keep {keep}: {hits} of {total} groups "
                  f"({100 * hits / max(total, 1):.1f} %)")  # fmt: skip
        print()
        print("Per transform: tbh at its default radius, the others at their F1-best threshold: "
              "precision / recall / F1\n")  # fmt: skip
        print("| transform | " + " | ".join(methods) + " |")
        print("|---|" + "---|" * len(methods))
        for key in results[next(iter(methods))]:
            if key in ("overall", "nearest_other"):
                continue
            cells = []
            for name, (_, _, usual) in methods.items():
                t = usual if name.startswith("tbh duplicates") else best_threshold(results[name])
                p, r, f = (v[t] for v in scores(*results[name][key]))
                cells.append(f"{p:.2f} / {r:.2f} / {f:.2f}")
            print(f"| {key} | " + " | ".join(cells) + " |")
        if args.mirror:
            mirror_rows(root, paths, family, transform)


if __name__ == "__main__":
    main()
