"""Image decoding: the same pixels as PIL with EXIF orientation (detectron2's reader), one-line errors."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torchvision.transforms.v2.functional import pil_to_tensor

from itersg.data.image_io import read_image
from itersg.errors import UserError


def _pil(path):
    with Image.open(path) as file:
        return pil_to_tensor(ImageOps.exif_transpose(file).convert("RGB"))


def _rotated_jpeg(image: Image.Image, path) -> None:
    exif = image.getexif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    image.save(path, exif=exif.tobytes())


WRITERS = {
    "photo.jpg": lambda image, path: image.save(path, quality=90),
    "exif-rotated.jpg": _rotated_jpeg,
    "gray.jpg": lambda image, path: image.convert("L").save(path),
    "cmyk.jpg": lambda image, path: image.convert("CMYK").save(path),
    "alpha.png": lambda image, path: image.convert("RGBA").save(path),
    "palette.png": lambda image, path: image.convert("P").save(path),
    "image.webp": lambda image, path: image.save(path),
    "image.bmp": lambda image, path: image.save(path),  # not a torchvision format: PIL decodes it
}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_pixels_equal_pils_with_exif_orientation(tmp_path, name):
    rng = np.random.default_rng(0)
    gradient = np.linspace(0, 255, 64)[None, :, None] * np.ones((48, 1, 3))
    pixels = np.clip(gradient + rng.normal(0, 25, (48, 64, 3)), 0, 255).astype(np.uint8)
    path = tmp_path / name
    WRITERS[name](Image.fromarray(pixels), path)
    image = read_image(path)
    expected = _pil(path)
    assert image.dtype == expected.dtype and image.shape == expected.shape
    assert image.equal(expected)
    if name == "exif-rotated.jpg":
        assert image.shape[1:] == (64, 48)


@pytest.mark.parametrize("content", [b"\xff\xd8\xff\xe0 truncated", b"not an image at all"])
def test_an_undecodable_file_is_one_line_naming_it(tmp_path, content):
    path = tmp_path / "broken.jpg"
    path.write_bytes(content)
    with pytest.raises(UserError) as error:
        read_image(path)
    message = str(error.value)
    assert message.startswith(f"{path}: cannot decode the image") and "\n" not in message
    assert ".cpp" not in message


def _png(path, pixels: np.ndarray, bit_depth: int = 16, size: tuple[int, int] | None = None) -> None:
    """``pixels`` (grey [H, W] or RGB [H, W, 3]) as a PNG of ``bit_depth``; ``size`` (W, H) overrides the header's."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    dtype = ">u2" if bit_depth == 16 else "u1"
    rows = b"".join(b"\x00" + row.astype(dtype).tobytes() for row in pixels)
    width, height = size or (pixels.shape[1], pixels.shape[0])
    header = struct.pack(">IIBBBBB", width, height, bit_depth, 2 if pixels.ndim == 3 else 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("shape", [(6, 7, 3), (6, 7)])
def test_a_16_bit_png_is_read_as_its_high_bytes(tmp_path, shape):
    """PIL clips 16-bit grey to white when converting; the high byte is what 8 bits of the image are."""
    pixels = np.random.default_rng(0).integers(0, 65536, shape, dtype=np.uint16)
    _png(tmp_path / "deep.png", pixels)
    image = read_image(tmp_path / "deep.png")
    expected = np.broadcast_to((pixels >> 8).astype(np.uint8).reshape(6, 7, -1), (6, 7, 3))
    assert image.dtype == torch.uint8 and image.permute(1, 2, 0).numpy().tolist() == expected.tolist()


def test_a_header_claiming_a_huge_image_is_refused_before_decoding(tmp_path):
    path = tmp_path / "huge.png"
    _png(path, np.zeros((2, 2, 3), dtype=np.uint8), bit_depth=8, size=(100000, 100000))
    with pytest.raises(UserError, match=rf"^{path}: too large to decode safely: .*10000000000 pixels"):
        read_image(path)


def test_an_image_between_pils_warning_and_error_limits_is_read_quietly(tmp_path, monkeypatch):
    """Past ``MAX_IMAGE_PIXELS`` PIL only warns; below twice that the image is read, without the warning."""
    import warnings

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 30)
    _png(tmp_path / "big.png", np.full((6, 7, 3), 9, dtype=np.uint8), bit_depth=8)  # 42 pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        assert read_image(tmp_path / "big.png").shape == (3, 6, 7)
    _png(tmp_path / "bigger.png", np.full((8, 8, 3), 9, dtype=np.uint8), bit_depth=8)  # 64 pixels
    with pytest.raises(UserError, match="too large to decode safely"):
        read_image(tmp_path / "bigger.png")
