"""Reading an image file as the model's input: uint8 RGB, EXIF orientation applied."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from PIL import Image, ImageOps
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2.functional import pil_to_tensor, to_dtype

from itersg.errors import UserError

# Formats torchvision decodes itself (libjpeg-turbo / libpng / libwebp / giflib); others go through PIL.
TORCHVISION_FORMATS = {b"\xff\xd8\xff": "JPEG", b"\x89PNG": "PNG", b"RIFF": "WEBP", b"GIF8": "GIF"}


def _torchvision_decodes(path: Path) -> bool:
    with path.open("rb") as file:
        head = file.read(4)
    return any(head.startswith(magic) for magic in TORCHVISION_FORMATS)


def _open_checked(path: Path) -> Image.Image:
    """The file opened by PIL (header only), which refuses an image past its decompression-bomb limit.

    The limit (``2 * Image.MAX_IMAGE_PIXELS``, about 179 megapixels) then holds for every format, also
    those torchvision decodes, which would otherwise allocate whatever size a header claims.
    """
    with warnings.catch_warnings():  # PIL warns from half the limit on, but such an image is read: noise
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(path)


def read_image(path: str | Path) -> torch.Tensor:
    """uint8 [3, H, W] RGB, EXIF orientation applied (as detectron2's ``read_image``, which uses PIL).

    JPEG, PNG, WebP and GIF are decoded by ``torchvision.io.decode_image``: the same pixels as PIL's
    ``exif_transpose(...).convert("RGB")`` (tested) in about two thirds of the time; other formats by PIL.
    16-bit PNGs are scaled to 8 bits (their high byte; PIL would clip grey ones to white). Images past
    PIL's decompression-bomb limit are refused before they are decoded.
    """
    path = Path(path)
    try:
        with _open_checked(path) as file:
            if not _torchvision_decodes(path):
                return pil_to_tensor(ImageOps.exif_transpose(file).convert("RGB"))
        image = decode_image(str(path), mode=ImageReadMode.RGB, apply_exif_orientation=True)
        return image if image.dtype == torch.uint8 else to_dtype(image, torch.uint8, scale=True)
    except Image.DecompressionBombError as err:
        size = str(err).split(", could be")[0]  # "Image size (N pixels) exceeds limit of M pixels"
        raise UserError(f"{path}: too large to decode safely: {size}; shrink the image first (the model "
                        "sees at most data.test_max_size pixels of its longer side anyway)") from None
    except (OSError, RuntimeError) as err:
        # torchvision's messages start with the C++ function and source line: keep the reason only.
        reason = str(err).splitlines()[0].rsplit(", ", 1)[-1] if str(err) else type(err).__name__
        raise UserError(f"{path}: cannot decode the image ({reason}); download it again") from None
