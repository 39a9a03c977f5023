"""Mixed precision, shared by training and evaluation: ``train.precision`` and ``evaluate.precision``.

A ground-floor module (torch only), so that evaluation need not import the training engine.

May import: nothing of itersg.
"""

from __future__ import annotations

import contextlib

import torch


class Precision:
    """Autocast and gradient scaling for ``train.precision`` (bf16, fp16 or fp32); fp32 off CUDA."""

    def __init__(self, precision: str, device: torch.device) -> None:
        self.device = device
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision) \
            if device.type == "cuda" else None
        self.name = precision if self.dtype is not None else "fp32"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)
