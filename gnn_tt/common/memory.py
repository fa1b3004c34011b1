"""Process memory figures for benchmarks and run summaries."""
from __future__ import annotations

import resource
import sys

import psutil
import torch


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB


def current_rss_bytes() -> int:
    return int(psutil.Process().memory_info().rss)


def peak_memory_bytes(device: torch.device | str | None = None) -> int:
    """Peak CUDA memory allocated on ``device`` if it is a GPU, else the peak RSS."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return peak_rss_bytes()
