"""Output helpers shared by every benchmark: a fixed-width table on stdout and a JSON file."""
from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from typing import Any, Sequence

import torch

from gnn_tt.io import atomic_write_json


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Render ``rows`` (dicts) as a GitHub-markdown table; floats get 4 significant digits."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    body = [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(columns)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(columns), sep, *(line(b) for b in body)])


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
