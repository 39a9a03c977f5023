"""Turn a list of images into one normalised, zero-padded batch, and the padding masks of features."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ImageNormalizer(nn.Module):
    """Normalise, pad and batch images the way a backbone expects them.

    Args:
        pixel_mean, pixel_std: per-channel statistics on the 0-255 scale, in ``input_format`` order.
        input_format: "RGB" or "BGR"; images always arrive RGB and are flipped for "BGR".
        size_divisibility: pad height and width up to a multiple of this (0 or 1: batch maximum only).
    """

    def __init__(self, pixel_mean: Sequence[float], pixel_std: Sequence[float], input_format: str = "RGB",
                 size_divisibility: int = 0):
        super().__init__()
        if input_format not in ("RGB", "BGR"):
            raise ValueError(f"input_format must be 'RGB' or 'BGR', got {input_format!r}")
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(3, 1, 1), False)
        self.flip_channels = input_format == "BGR"
        self.size_divisibility = size_divisibility

    def forward(self, images: Sequence[Tensor]) -> tuple[Tensor, list[tuple[int, int]]]:
        """Images [3, H_i, W_i] (uint8 or float, 0-255, RGB) -> batch [B, 3, H, W] and the (H_i, W_i)."""
        if len(images) == 0:
            raise ValueError("expected at least one image")
        normalised = []
        for image in images:
            image = image.to(self.pixel_mean.device, torch.float32)
            if self.flip_channels:
                image = image.flip(0)
            normalised.append((image - self.pixel_mean) / self.pixel_std)
        sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in normalised]
        height, width = (max(s[d] for s in sizes) for d in (0, 1))
        if self.size_divisibility > 1:
            stride = self.size_divisibility
            height, width = -(-height // stride) * stride, -(-width // stride) * stride
        padded = [F.pad(im, (0, width - im.shape[-1], 0, height - im.shape[-2])) for im in normalised]
        batch = torch.stack(padded)
        return batch, sizes


def feature_padding_mask(image_sizes: Sequence[tuple[int, int]], feature_shape: Sequence[int],
                         batch_shape: Sequence[int], stride: int | None = None) -> Tensor:
    """Padding mask [B, h, w] of a feature map (True = padding), DETR convention.

    With ``stride`` the valid region of image ``i`` is ``ceil(H_i / stride) x ceil(W_i / stride)``, as
    IterativeSG's ``MaskedBackbone``; without it the pixel mask is resized by nearest neighbour, as
    DETR (both agree whenever the padded batch size is a multiple of the stride).
    """
    h, w = int(feature_shape[-2]), int(feature_shape[-1])
    if stride is not None:
        rows = torch.arange(h)[None, :, None]
        cols = torch.arange(w)[None, None, :]
        valid_h = torch.tensor([-(-s[0] // stride) for s in image_sizes])[:, None, None]
        valid_w = torch.tensor([-(-s[1] // stride) for s in image_sizes])[:, None, None]
        return (rows >= valid_h) | (cols >= valid_w)
    pixel_mask = torch.ones(len(image_sizes), int(batch_shape[-2]), int(batch_shape[-1]), dtype=torch.bool)
    for mask, (height, width) in zip(pixel_mask, image_sizes):
        mask[:height, :width] = False
    return F.interpolate(pixel_mask[None].float(), size=(h, w)).bool()[0]
