"""Benchmark: read a real CT series into a Volume, against a plain SimpleITK read.

Both read ``ct_skull_phantom_philips_bone_1mm`` (512 x 512 x 140, 72 MiB) from the same
warm page cache, alternately, several times; the medians and their ratio are printed.
holo does more than the reference: it indexes headers, checks orientation, size, spacing,
duplicates and gaps, and rescales to HU. Target: holo / SimpleITK <= 1.2.

Usage: python benchmarks/read.py [--repeat N] [--data DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import SimpleITK as sitk

from holo.imaging import read_series

DEFAULT_DATA = Path(
    os.environ.get("HOLO_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def read_plain_sitk(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    folder = args.data / "ct_skull_phantom_philips_bone_1mm"
    read_series(folder)  # warm the page cache and imports for both
    read_plain_sitk(folder)
    holo_s, sitk_s = [], []
    for _ in range(args.repeat):
        t = time.perf_counter()
        volume = read_series(folder)
        holo_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        image = read_plain_sitk(folder)
        sitk_s.append(time.perf_counter() - t)
    h, s = statistics.median(holo_s), statistics.median(sitk_s)
    print(f"series: {folder.name}  shape {volume.shape}  sitk size {image.GetSize()}")
    print(f"{'reader':<28}{'median s':>10}{'min s':>10}")
    print(f"{'holo read_series':<28}{h:>10.3f}{min(holo_s):>10.3f}")
    print(f"{'SimpleITK ImageSeriesReader':<28}{s:>10.3f}{min(sitk_s):>10.3f}")
    print(f"ratio holo / SimpleITK: {h / s:.2f}  (target <= 1.20)")


if __name__ == "__main__":
    main()
