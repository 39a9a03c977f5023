"""What a run was made from: the params that decide its result (a fingerprint) and the software.

The params schema marks every key with the stages whose results it changes (``x-stages``); the
fingerprint of a stage hashes exactly those values (plus the variant's own settings), so a
checkpoint or a finished run is reused only when none of them changed, while keys such as
``train.checkpoint_every`` can change freely between restarts.
"""

from __future__ import annotations

import hashlib
import json
import platform
import socket
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from itersg.config import params_schema, stage_values


def stage_params(params: Mapping[str, Any], stage: str, variant: str | None = None) -> dict[str, Any]:
    """The resolved values of the keys whose ``x-stages`` name ``stage`` (dotted key -> value).

    With a ``variant`` its name is included, and its ``variants.<name>`` settings when they change
    ``stage``.
    """
    selected = stage_values(params, stage)
    if variant is not None:
        selected["variant"] = variant
        variant_stages = params_schema()["properties"]["variants"]["x-stages"]
        if stage in variant_stages or "all" in variant_stages:
            selected[f"variants.{variant}"] = params.get("variants", {}).get(variant)
    return selected


def fingerprint(params: Mapping[str, Any], stage: str, variant: str | None = None) -> str:
    """sha256 (hex) of ``stage_params``: equal fingerprints mean the same training run."""
    text = json.dumps(stage_params(params, stage, variant), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def software() -> dict[str, Any]:
    """Versions, host and git commit (when run inside the repository)."""
    import numpy
    import torch

    info: dict[str, Any] = {
        "python": sys.version.split()[0], "torch": torch.__version__, "numpy": numpy.__version__,
        "cuda": torch.version.cuda, "host": socket.gethostname(), "platform": platform.platform(),
    }
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            info["git_commit"] = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info
