"""A tiny real "external segmentation model" for tests/test_segmentation.py.

Reads a NIfTI image with SimpleITK and writes a NIfTI label map: 1 where the value is at
least 300 (HU), 7 where it is at least 1000. ``--mode`` makes it misbehave the ways a real
model can, so holo's external-model contract is tested against a real subprocess:

    python tests/external_model_threshold.py INPUT OUTPUT [--mode MODE]
    python tests/external_model_threshold.py -i INPUT -o OUTPUT --ml [--fast]  # TotalSegmentator's

Set ``HOLO_EXTERNAL_MODEL_LOG`` to a file path to have the script append its arguments (and
for ``--mode sleep`` the pid of the child it starts) as JSON lines.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

LOW, HIGH = 300.0, 1000.0
MODES = (
    "threshold",  # the contract: same grid, integer labels 0 / 1 / 7
    "fail",  # a message on stderr, exit status 3
    "crop",  # the labels on a sub-box of the grid (other size and origin)
    "ras",  # the labels reoriented to RAS (same space, other direction and origin)
    "elsewhere",  # the labels 10 m away from the volume
    "float",  # float32 with fractional values
    "integral-float",  # float32 holding whole numbers only
    "none",  # exit 0 and write nothing
    "empty",  # a label map of zeros only
    "garbage",  # a file that is not an image
    "folder",  # a folder of masks instead of one file (TotalSegmentator without --ml)
    "flat",  # a 2-D image
    "sleep",  # never finishes (and starts a child that does not either)
    "table",  # a label table in a NIfTI header extension, as TotalSegmentator 2 writes
    "totalseg",  # TotalSegmentator 2 numbers (75 femur_left, 92 a rib) with its label table
    "totalseg-no-table",  # the same numbers without a table
)


def _log(entry: dict[str, object]) -> None:
    path = os.environ.get("HOLO_EXTERNAL_MODEL_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")


def _threshold(image: sitk.Image, low_label: int = 1, high_label: int = 7) -> sitk.Image:
    values = sitk.GetArrayFromImage(image)
    labels = np.zeros(values.shape, dtype=np.uint8)
    labels[values >= LOW] = low_label
    labels[values >= HIGH] = high_label
    out = sitk.GetImageFromArray(labels)
    out.CopyInformation(image)
    return out


def _write_with_table(labels: sitk.Image, path: Path, table: dict[int, str]) -> None:
    """Write NIfTI-1 with a Caret XML label table extension (the layout TotalSegmentator uses)."""
    body = "".join(
        f'<Label Key="{k}" Red="1" Green="0" Blue="0" Alpha="1"><![CDATA[{v}]]></Label>\n'
        for k, v in table.items()
    )
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?> <CaretExtension> <VolumeInformation Index="0">'
        f"<LabelTable>\n{body}</LabelTable><VolumeType><![CDATA[Label]]></VolumeType>"
        "</VolumeInformation></CaretExtension>\n"
    ).encode()
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "plain.nii"
        sitk.WriteImage(labels, str(plain))
        data = plain.read_bytes()
    assert struct.unpack("<i", data[:4])[0] == 348, "expected a little-endian NIfTI-1 file"
    (vox_offset,) = struct.unpack("<f", data[108:112])
    size = (8 + len(xml) + 15) // 16 * 16
    extension = struct.pack("<ii", size, 0) + xml.ljust(size - 8, b"\0")
    header = bytearray(data[:348])
    header[108:112] = struct.pack("<f", 352.0 + size)
    payload = bytes(header) + b"\x01\0\0\0" + extension + data[int(vox_offset) :]
    with gzip.open(path, "wb") as f:
        f.write(payload)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("paths", nargs="*")
    parser.add_argument("-i", dest="input")
    parser.add_argument("-o", dest="output")
    parser.add_argument("--mode", choices=MODES, default="threshold")
    args, _ = parser.parse_known_args()
    _log({"argv": sys.argv[1:]})
    source = args.input or args.paths[0]
    target = Path(args.output or args.paths[1])
    image = sitk.ReadImage(source)
    labels = _threshold(image)
    mode = args.mode
    if mode == "fail":
        print("loading model weights", file=sys.stderr)
        print("ERROR: model weights not found; run the download step first", file=sys.stderr)
        return 3
    if mode == "sleep":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        _log({"child_pid": child.pid})
        time.sleep(120)
        return 0
    if mode == "none":
        return 0
    if mode == "garbage":
        target.write_bytes(b"this is not a NIfTI file\n" * 100)
        return 0
    if mode == "folder":
        target.mkdir()
        sitk.WriteImage(labels, str(target / "bone.nii.gz"))
        return 0
    if mode == "crop":
        size = image.GetSize()
        start = [n // 4 for n in size]
        labels = sitk.RegionOfInterest(labels, [n // 2 for n in size], start)
    elif mode == "ras":
        labels = sitk.DICOMOrient(labels, "RAS")
    elif mode == "elsewhere":
        labels.SetOrigin([v + 10_000.0 for v in labels.GetOrigin()])
    elif mode == "float":
        labels = sitk.Cast(labels, sitk.sitkFloat32) * 0.5
    elif mode == "empty":
        labels = labels * 0
    elif mode == "integral-float":
        labels = sitk.Cast(labels, sitk.sitkFloat32)
    elif mode == "flat":
        labels = labels[:, :, 0]
    elif mode == "table":
        _write_with_table(labels, target, {1: "cancellous", 7: "cortex", 9: "absent"})
        return 0
    elif mode.startswith("totalseg"):
        labels = _threshold(image, low_label=75, high_label=92)
        if mode == "totalseg":
            _write_with_table(labels, target, {75: "femur_left", 92: "rib_left_1"})
            return 0
    sitk.WriteImage(labels, str(target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
