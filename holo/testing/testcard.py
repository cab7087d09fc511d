"""A synthetic operative-camera picture with its frame number burned in, and its reader.

The frame number is drawn twice: as a binary barcode across the top of the picture, which
:func:`read_test_card` decodes, and as seven-segment digits for a human looking at the
video. Everything is laid out in fractions of the picture size, so a card survives being
scaled (320 x 240 to 1920 x 1080, aspect ratio changes included) and lossy H.264 at modest
bitrates: each bit is a block of at least 10 x 30 pixels at 320 x 240, a whole macroblock
row high, read as the mean of its central half against a black and a white reference block.

Barcode layout (32 blocks of equal width across the top eighth of the picture)::

    [white][black][20 bits of the frame number, MSB first][8 bits CRC-8][black][white]

White is a 1 bit. The CRC-8 (polynomial 0x07, as in SMBus/ATM HEC) is over the frame
number as 3 big-endian bytes; it detects every error of up to 8 adjacent blocks and every
single or double block error, so a misread is reported instead of returned.

Pure numpy: no font, no PIL.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["MAX_INDEX", "make_test_card", "read_test_card"]

RGBImage = npt.NDArray[np.uint8]

_DATA_BITS = 20
_CRC_BITS = 8
_BLOCKS = 2 + _DATA_BITS + _CRC_BITS + 2
#: Largest frame number a card can carry (2**20 - 1: 9.7 hours at 30 fps).
MAX_INDEX = (1 << _DATA_BITS) - 1
_BAND = 1 / 8  # barcode band height, fraction of the picture height
_DIGITS = 7  # enough for MAX_INDEX
_MIN_SIZE = (_BLOCKS * 2, 48)  # (width, height): 2 px per block, 6 px band

# Segments a-g of a seven-segment digit, on for each of 0-9 (bit 0 = a ... bit 6 = g).
_SEGMENTS = (0x3F, 0x06, 0x5B, 0x4F, 0x66, 0x6D, 0x7D, 0x07, 0x7F, 0x6F)


def _crc8(value: int) -> int:
    crc = 0
    for byte in value.to_bytes(3, "big"):
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _bits(index: int) -> list[int]:
    word = (index << _CRC_BITS) | _crc8(index)
    n = _DATA_BITS + _CRC_BITS
    return [1, 0] + [(word >> (n - 1 - k)) & 1 for k in range(n)] + [0, 1]


def _block_edges(width: int) -> npt.NDArray[np.int64]:
    return np.round(np.linspace(0, width, _BLOCKS + 1)).astype(np.int64)


def _draw_digit(img: RGBImage, digit: int, x0: int, y0: int, w: int, h: int) -> None:
    t = max(1, w // 5)  # stroke width
    half = y0 + h // 2
    boxes = (  # (y_start, y_end, x_start, x_end) of segments a-g
        (y0, y0 + t, x0, x0 + w),
        (y0, half, x0 + w - t, x0 + w),
        (half, y0 + h, x0 + w - t, x0 + w),
        (y0 + h - t, y0 + h, x0, x0 + w),
        (half, y0 + h, x0, x0 + t),
        (y0, half, x0, x0 + t),
        (half - t // 2, half - t // 2 + t, x0, x0 + w),
    )
    for bit, (ya, yb, xa, xb) in enumerate(boxes):
        if _SEGMENTS[digit] >> bit & 1:
            img[ya:yb, xa:xb] = 255


def make_test_card(index: int, width: int, height: int) -> RGBImage:
    """Draw test card number ``index``.

    Parameters
    ----------
    index
        Frame number, ``0 <= index <= MAX_INDEX``.
    width, height
        Picture size in pixels, at least 64 x 48.

    Returns
    -------
    numpy.ndarray
        Shape ``(height, width, 3)``, uint8 RGB, row 0 at the top. Below the barcode: a
        colour gradient, a bright disc that circles the picture once every 120 frames (so
        the encoder has motion to code) and the number in seven-segment digits.
    """
    if not 0 <= index <= MAX_INDEX:
        raise ValueError(f"test card index {index} is outside 0..{MAX_INDEX}")
    if width < _MIN_SIZE[0] or height < _MIN_SIZE[1]:
        raise ValueError(f"test card size {width}x{height} is below {_MIN_SIZE[0]}x{_MIN_SIZE[1]}")
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / width, y / height
    img = np.empty((height, width, 3), dtype=np.uint8)
    # Tissue-like gradient that drifts slowly with the frame number.
    phase = (index % 300) / 300.0
    img[..., 0] = 120 + 80 * u
    img[..., 1] = 40 + 60 * np.abs(np.sin(np.pi * (v + phase)))
    img[..., 2] = 50 + 40 * (1 - u)
    # A disc (an instrument tip, say) moving on an ellipse.
    angle = 2 * np.pi * (index % 120) / 120.0
    cx, cy = 0.5 + 0.3 * np.cos(angle), 0.55 + 0.25 * np.sin(angle)
    disc = ((u - cx) * width) ** 2 + ((v - cy) * height) ** 2 < (0.08 * height) ** 2
    img[disc] = (230, 230, 200)

    band = max(6, round(height * _BAND))
    edges = _block_edges(width)
    for k, bit in enumerate(_bits(index)):
        img[:band, edges[k] : edges[k + 1]] = 255 if bit else 0

    # Digits on a black panel in the lower left (digit cell 1/12 of the width; 2:1 aspect).
    cell = max(4, width // 12)
    dw, dh = cell * 3 // 4, cell * 3 // 2
    px, py = cell // 2, height - dh - cell // 2
    img[py - cell // 4 : py + dh + cell // 4, px - cell // 4 : px + _DIGITS * cell] = 0
    for k, ch in enumerate(f"{index:0{_DIGITS}d}"):
        _draw_digit(img, int(ch), px + k * cell, py, dw, dh)
    return img


def read_test_card(rgb: RGBImage) -> int:
    """Decode the frame number from the barcode of a (possibly compressed, scaled) test card.

    Parameters
    ----------
    rgb
        Shape ``(height, width, 3)``, RGB (any integer or float dtype on a 0-255 scale), as
        :func:`make_test_card` drew it, scaled to any size.

    Raises
    ------
    ValueError
        If the picture is not a test card, or its barcode fails the checksum.
    """
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an RGB picture of shape (height, width, 3), got {arr.shape}")
    height, width = arr.shape[:2]
    band = max(6, round(height * _BAND))
    luma = arr[band // 4 : band - band // 4].astype(np.float64).mean(axis=2)
    edges = _block_edges(width)
    means = []
    for k in range(_BLOCKS):
        a, b = edges[k], edges[k + 1]
        margin = (b - a) // 4
        means.append(luma[:, a + margin : b - margin].mean())
    white = (means[0] + means[-1]) / 2
    black = (means[1] + means[-2]) / 2
    if white - black < 64:
        raise ValueError(
            f"no test card barcode found (reference blocks white {white:.0f}, black {black:.0f})"
        )
    bits = [int(m > (white + black) / 2) for m in means[2:-2]]
    word = int("".join(map(str, bits)), 2)
    index, crc = word >> _CRC_BITS, word & 0xFF
    if _crc8(index) != crc:
        raise ValueError(
            f"test card barcode checksum failed (read {index}, crc {crc:#04x}, "
            f"expected {_crc8(index):#04x}): picture too damaged to read"
        )
    return index
