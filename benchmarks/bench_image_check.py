"""How long checking every image of a folder up front takes (``data.on_bad_image``).

Run:  .venv/bin/python benchmarks/bench_image_check.py            (3,000 images per kind)
      .venv/bin/python benchmarks/bench_image_check.py --n 500    (quicker)

Writes N small PNGs (28x28 grayscale, like Fashion-MNIST) and N JPEGs (96x96 RGB, like
STL-10) into a temporary folder, then times, per kind, the median of 3 interleaved passes:
- header: what mimkit's up-front check does (PIL opens the file and parses its header and,
  for PNG, checks every chunk's CRC with ``verify()`` and inflates the compressed pixels
  without unfiltering or keeping them);
- decode: opening and fully decoding every image to RGB, what one epoch of loading costs.
Files are in the OS cache (just written): a cold disk adds its read time to both.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from mimkit.data.image_folder import _open_rgb, check_header


def write_images(root: Path, n: int, kind: str) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        if kind == "png":
            arr = rng.integers(0, 256, (28, 28), dtype=np.uint8)
            path = root / "png" / f"{i:05d}.png"
        else:
            arr = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
            path = root / "jpg" / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(path)
        paths.append(str(path))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="images per kind")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sets = {kind: write_images(Path(tmp), args.n, kind) for kind in ("png", "jpg")}
        ways = {"header": check_header, "decode": _open_rgb}
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(3):
            for kind, paths in sets.items():
                for way, fn in ways.items():
                    t0 = time.perf_counter()
                    for p in paths:
                        fn(p)
                    times.setdefault((kind, way), []).append(time.perf_counter() - t0)
    print(f"| images ({args.n} each) | header check, s | full decode, s | header / decode |")
    print("|---|---:|---:|---:|")
    for kind in sets:
        h = statistics.median(times[(kind, "header")])
        d = statistics.median(times[(kind, "decode")])
        print(f"| {kind} | {h:.3f} | {d:.3f} | {h / d:.2f} |")


if __name__ == "__main__":
    main()
