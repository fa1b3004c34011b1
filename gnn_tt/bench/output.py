"""Output shared by every benchmark: the table on stdout and a JSON file with the machine."""
from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from typing import Any, Sequence

import torch

from gnn_tt.common.io import atomic_write_json
from gnn_tt.common.table import format_table


def machine_info() -> dict[str, Any]:
    info = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def report(name: str, rows: Sequence[dict[str, Any]], output: str | None,
           extra: dict[str, Any] | None = None, columns: Sequence[str] | None = None) -> None:
    """Print the table and, if ``output`` is given, write ``{"benchmark", "machine", "rows", ...}``
    as JSON there."""
    print(format_table(rows, columns))
    if output:
        atomic_write_json(output, {"benchmark": name, "machine": machine_info(),
                                   "rows": list(rows), **(extra or {})})
        print(f"wrote {output}")
