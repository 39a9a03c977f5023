"""Image decoding: the same pixels as PIL with EXIF orientation (detectron2's reader), one-line errors."""

import numpy as np
import pytest
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
