"""Reading an image file as the model's input: uint8 RGB, EXIF orientation applied."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageOps
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2.functional import pil_to_tensor

from itersg.errors import UserError

# Formats torchvision decodes itself (libjpeg-turbo / libpng / libwebp / giflib); others go through PIL.
TORCHVISION_FORMATS = {b"\xff\xd8\xff": "JPEG", b"\x89PNG": "PNG", b"RIFF": "WEBP", b"GIF8": "GIF"}


def _torchvision_decodes(path: Path) -> bool:
    with path.open("rb") as file:
        head = file.read(4)
    return any(head.startswith(magic) for magic in TORCHVISION_FORMATS)


def read_image(path: str | Path) -> torch.Tensor:
    """uint8 [3, H, W] RGB, EXIF orientation applied (as detectron2's ``read_image``, which uses PIL).

    JPEG, PNG, WebP and GIF are decoded by ``torchvision.io.decode_image``: the same pixels as PIL's
    ``exif_transpose(...).convert("RGB")`` (tested) in about two thirds of the time; other formats by PIL.
    """
    path = Path(path)
    try:
        if _torchvision_decodes(path):
            return decode_image(str(path), mode=ImageReadMode.RGB, apply_exif_orientation=True)
        with Image.open(path) as file:
            return pil_to_tensor(ImageOps.exif_transpose(file).convert("RGB"))
    except (OSError, RuntimeError) as err:
        # torchvision's messages start with the C++ function and source line: keep the reason only.
        reason = str(err).splitlines()[0].rsplit(", ", 1)[-1] if str(err) else type(err).__name__
        raise UserError(f"{path}: cannot decode the image ({reason}); download it again") from None
