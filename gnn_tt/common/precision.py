"""Mixed precision: the one autocast policy that training, evaluation and inference share."""
from __future__ import annotations

from contextlib import nullcontext

import torch


def autocast(device: torch.device, amp: bool):
    """bf16 autocast on CUDA when ``amp`` is set; a no-op context elsewhere."""
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()
