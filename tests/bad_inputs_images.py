"""Image files ``itersg predict`` meets: huge (claimed) sizes, 16-bit PNGs, cut-off files.

An image past PIL's decompression-bomb limit (about 179 megapixels) is refused, whatever its format,
before anything is decoded; a 16-bit PNG is read as its high bytes and predicted like any other image.
The huge images are headers that only claim their size: refusing them must not need the pixels.
"""

from __future__ import annotations

import json
import struct
import zlib
from io import BytesIO

import numpy as np
from PIL import Image

from bad_inputs_cases import Case
from cli_inputs import demo_sets

TOO_LARGE = "too large to decode safely"


def _predict(name: str):
    def argv(f) -> list[str]:
        return ["predict", str(f.root / name), "--variant", "r101-detr", "--checkpoint", str(f.checkpoint),
                "--out", str(f.root / "pred"), *demo_sets(f.data)]
    return argv


def _png(width: int, height: int, bit_depth: int, color_type: int, rows: bytes) -> bytes:
    """A PNG of filter-free ``rows`` (each led by its filter byte), written by hand: PIL writes no 16-bit RGB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def _png16(pixels: np.ndarray) -> bytes:
    """16-bit grey ([H, W]) or RGB ([H, W, 3]) pixels as a PNG."""
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)
    return _png(pixels.shape[1], pixels.shape[0], 16, 2 if pixels.ndim == 3 else 0, rows)


PIXELS16 = np.random.default_rng(0).integers(0, 65536, (40, 50, 3), dtype=np.uint16)


def _encoded(fmt: str) -> bytes:
    out = BytesIO()
    Image.new("RGB", (16, 16), (120, 80, 40)).save(out, fmt)
    return out.getvalue()


def _huge_jpeg() -> bytes:
    """A small JPEG whose frame header (SOF0) claims 60000 x 60000 pixels."""
    data = bytearray(_encoded("JPEG"))
    frame = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, frame + 5, 60000, 60000)
    return bytes(data)


def _huge_bmp() -> bytes:
    data = bytearray(_encoded("BMP"))
    struct.pack_into("<ii", data, 18, 100000, 100000)  # BITMAPINFOHEADER width, height
    return bytes(data)


def _cut_png() -> bytes:
    out = BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()[: len(out.getvalue()) // 2]


def _write(name: str, data: bytes):
    return lambda f: (f.root / name).write_bytes(data)


def _refused(name: str, data: bytes, *says: str) -> Case:
    return Case(_predict(name), lambda f: (f"{f.root / name}: ", *says), setup=_write(name, data))


def _predicted(name: str, width: int, height: int):
    """The scene graph JSON of ``name`` was written for an image of ``width`` x ``height``."""
    def check(f) -> None:
        document = json.loads((f.root / "pred" / name).with_suffix(".json").read_text())
        assert (document["width"], document["height"]) == (width, height), document
        assert (f.root / "pred" / name).with_suffix(".png").is_file()
    return check


CASES = {
    "huge-png-header": _refused("huge.png", _png(100000, 100000, 8, 2, b"\x00" * 100), TOO_LARGE,
                                "10000000000 pixels"),
    "huge-bmp-header": _refused("huge.bmp", _huge_bmp(), TOO_LARGE, "10000000000 pixels"),
    "huge-jpeg-header": _refused("huge.jpg", _huge_jpeg(), TOO_LARGE, "3600000000 pixels"),
    "cut-off-png": _refused("cut.png", _cut_png(), "cannot decode the image"),
    "png-16-bit-rgb": Case(_predict("deep.png"), "", setup=_write("deep.png", _png16(PIXELS16)),
                           check=_predicted("deep.png", 50, 40)),
    "png-16-bit-grey": Case(_predict("grey.png"), "", setup=_write("grey.png", _png16(PIXELS16[..., 0])),
                            check=_predicted("grey.png", 50, 40)),
}
