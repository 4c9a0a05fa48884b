"""Near-duplicate detection on real photos: tbh against imagehash and imagededup, one run.

    nice -n 10 .venv/bin/python bench/dedup_quality.py [--originals 60] [--data DIR]

Builds the offline photo set of bench/dedup_photos.py (distinct originals = tiles of the
photographs that scikit-image, scikit-learn and matplotlib ship; one copy per named transform),
then for each method computes every image's code and scores *pairs*: a pair is predicted a
duplicate when its codes are within the threshold, and is one when both come from one original.
- `overall`: all pairs among the originals and their non-flip copies;
- one row per transform: the originals and that transform's copies (hflip and rotate-90 apart);
- `false groups`: the fraction of distinct originals within the threshold of another original.
Each method is scored at its usual threshold and at the one that maximises overall F1; the time
is the method's own wall time for every image (decode + code) + the pair search; imagehash runs
and imagededup in one process, tbh with its default decoding workers (one per core).
tbh runs its real command (`tbhcli.folder_duplicates`: embed, fit the binariser on the folder,
export, store, group) and its pair scores come from the codes in the store it wrote.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from dedup_photos import FLIPS, write_photo_set  # noqa: E402

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


def run_tbh(
    root: Path, paths: list[str], workdir: Path, radius: int | None, workers: int, backbone: str
):
    """tbh's real command on the folder; codes read back from its store in `paths` order."""
    import tbhcli.deploy.export  # noqa: F401  imports stay outside the clock, as imagehash's do
    import tbhcli.imaging.embed  # noqa: F401
    import tbhcli.storage.writer  # noqa: F401
    from tbhcli.apps.duplicates import duplicates
    from tbhcli.apps.photos import fitted_radius, update_store
    from tbhcli.storage.store import open_store

    start = time.perf_counter()
    cache = update_store(
        root, workdir / f"tbh-{backbone}.zarr", backbone, workers=workers, device="cpu"
    )
    radius = fitted_radius(cache) if radius is None else radius
    began = time.perf_counter()
    duplicates(cache.store, radius, threads=1)
    cache.seconds["group"] = time.perf_counter() - began
    seconds = time.perf_counter() - start
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in cache.seconds.items())
    print(f"tbh duplicates: {seconds:.1f} s in all; {stages}", file=sys.stderr)
    table = open_store(cache.store)
    row = {str(p): i for i, p in enumerate(table.paths)}
    codes = table.read_codes()[[row[p] for p in paths]]
    return {f"tbh duplicates --backbone {backbone}": (codes, seconds, radius)}, cache.seconds


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
    parser.add_argument("--originals", type=int, default=60, help="distinct originals")
    parser.add_argument("--data", type=Path, help="photo set folder (default: a temporary one)")
    parser.add_argument("--radius", type=int, help="tbh's threshold (default: its default)")
    parser.add_argument("--workers", type=int, help="tbh's decoding processes (default: tbh's)")
    parser.add_argument("--skip", nargs="*", default=[], help="imagehash, imagededup")
    parser.add_argument(
        "--backbones", nargs="+", default=["gray32"], help="tbh's backbones (first: the default)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or Path(tmp) / "photos"
        if not root.is_dir():
            start = time.perf_counter()
            write_photo_set(root, args.originals)
            print(f"photo set written in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        from tbhcli.imaging.images import list_images

        paths = [p.as_posix() for p in list_images(root)]
        family, transform = families(paths)
        print(f"{len(paths)} images, {len(set(family))} originals", file=sys.stderr)
        methods, stages = {}, {}
        for backbone in args.backbones:
            found, seconds = run_tbh(root, paths, Path(tmp), args.radius, args.workers, backbone)
            methods |= found
            stages[backbone] = seconds
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
            f"{len(paths)} images ({len(set(family))} originals x {len(set(transform)) - 1} "
            "transforms + originals); pair precision / recall / F1 over non-flip copies; false "
            "groups = originals within the threshold of another original; ms/image = wall time "
            "of decode + code + pair search (tbh: its whole command, default workers)\n"
        )
        print("| method | threshold | precision | recall | F1 | false groups | ms/image |")
        print("|---|---|---|---|---|---|---|")
        for name, (_, _, usual) in methods.items():
            result = results[name]
            print(overall_row(name, result, "usual", usual, times[name]))
            print(overall_row(name, result, "F1-best", best_threshold(result), times[name]))
        for backbone, seconds in stages.items():
            total = sum(seconds.values())
            shares = ", ".join(f"{k} {100 * v / total:.0f} %" for k, v in seconds.items())
            print(f"\ntbh {backbone} stages ({1000 * total / len(paths):.1f} ms/image): {shares}")
        print()
        print("Per transform, each method at its F1-best threshold: precision / recall / F1\n")
        print("| transform | " + " | ".join(methods) + " |")
        print("|---|" + "---|" * len(methods))
        for key in results[next(iter(methods))]:
            if key in ("overall", "nearest_other"):
                continue
            cells = []
            for name in methods:
                t = best_threshold(results[name])
                p, r, f = (v[t] for v in scores(*results[name][key]))
                cells.append(f"{p:.2f} / {r:.2f} / {f:.2f}")
            print(f"| {key} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
