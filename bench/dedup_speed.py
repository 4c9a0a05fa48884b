"""Speed of `tbh duplicates` on a photo folder against imagehash pHash, in one run.

    nice -n 10 .venv/bin/python bench/dedup_speed.py [--photos 5000] [--small 76]

Two numbers, each beside its reference measured in the same run (run it on a quiet machine;
the first line prints `uptime`, so a loaded run says so):
- images/s: tbh's photo codes of a folder of JPEG photos (decode in draft mode + DCT, default
  workers, no cache) against imagehash.phash on the same files in one process;
- cold start: `tbh duplicates FOLDER` as a new process on a folder of `--small` photos (no
  cache: the first run a user makes), against a new process that imports imagehash and hashes
  the same files with phash.
The photos are the Debian wallpapers and scikit-image photographs of bench/dedup_photos.py,
saved as 1024-pixel JPEGs and repeated with small edits up to the count asked for.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageEnhance

sys.path.insert(0, str(Path(__file__).parent))
from dedup_photos import debian_wallpapers, whole_photos  # noqa: E402
from timing import best_of  # noqa: E402

PHASH_SCRIPT = """
import sys, imagehash
from pathlib import Path
from PIL import Image
for f in sorted(Path(sys.argv[1]).glob("*.jpg")):
    with Image.open(f) as img:
        imagehash.phash(img)
"""


def write_jpegs(folder: Path, count: int) -> None:
    """`count` JPEG photos, longest side 1024: the sources, then brightened variants of them."""
    sources = list({**whole_photos(max_side=1024), **debian_wallpapers(max_side=1024)}.values())
    folder.mkdir(parents=True)
    for i in range(count):
        img = sources[i % len(sources)].convert("RGB")
        if i >= len(sources):  # a distinct file, not a byte copy (the cache is off anyway)
            img = ImageEnhance.Brightness(img).enhance(0.8 + 0.4 * (i / count))
        img.save(folder / f"photo{i:05d}.jpg", quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=5000)
    parser.add_argument("--small", type=int, default=76)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    import imagehash

    from tbhcli.apps.photo_codes import folder_codes
    from tbhcli.imaging.images import default_workers

    print(f"uptime: {os.popen('uptime').read().strip()}; cores: {len(os.sched_getaffinity(0))}")
    with tempfile.TemporaryDirectory() as tmp:
        big, small = Path(tmp) / "big", Path(tmp) / "small"
        write_jpegs(big, args.photos)
        write_jpegs(small, args.small)
        files = sorted(big.iterdir())
        tbh = best_of(lambda: folder_codes(big, None, default_workers()), args.runs)

        def phash_all() -> None:
            for f in files:
                with Image.open(f) as img:
                    imagehash.phash(img)

        phash = best_of(phash_all, 1)
        print(f"\n{len(files)} JPEGs (1024 px): tbh {len(files) / tbh:.0f} images/s "
              f"({default_workers()} workers), imagehash pHash {len(files) / phash:.0f} images/s "
              f"(1 process): {phash / tbh:.1f}x")  # fmt: skip
        tbh_cmd = [shutil.which("tbh") or "tbh", "duplicates", str(small)]
        phash_cmd = [sys.executable, "-c", PHASH_SCRIPT, str(small)]

        def cold_tbh() -> None:
            shutil.rmtree(small / ".tbh", ignore_errors=True)
            subprocess.run(tbh_cmd, check=True, capture_output=True)

        cold = best_of(cold_tbh, args.runs)
        reference = best_of(lambda: subprocess.run(phash_cmd, check=True), args.runs)
        print(f"cold start on {args.small} photos: tbh duplicates {cold:.2f} s, a new process "
              f"hashing them with imagehash pHash {reference:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
