"""Memory forecasts: a stage that can predict its peak says so before it starts when the
machine does not have that much available."""
from __future__ import annotations

import warnings

import psutil

# Peak memory of one METIS call (pymetis, 64-bit idx_t) beyond its input CSR, per stored
# (directed) edge: the int64 copies pymetis makes plus METIS' own coarsening hierarchy.
# Measured on synthetic-products-like graphs (1M nodes, 50.5M directed edges: 83 B/edge);
# edge weights add an int64 copy of 8 B/edge.
METIS_BYTES_PER_EDGE = 83
# Peak memory of the multilevel partitioner beyond its input CSR, per stored edge, with a
# margin: its temporaries come in pieces of bounded size, so the coarse graphs, METIS on the
# coarsest one and ~100 B of arrays per node dominate (7.4 B/edge measured on
# synthetic-products, docs/benchmarks.md).
MULTILEVEL_BYTES_PER_EDGE = 12


def warn_if_short(stage: str, needed: int, advice: str = "") -> bool:
    """Warn (``RuntimeWarning``) when ``needed`` bytes exceed the memory available now.

    Args:
        stage (str): what is about to run, for the message.
        needed (int): its forecast peak beyond what is already allocated, in bytes.
        advice (str): what to do instead, appended to the message (default: ``""``).

    Returns:
        bool: whether it warned.
    """
    available = psutil.virtual_memory().available
    if needed <= available:
        return False
    warnings.warn(f"{stage} needs about {needed / 1e9:.1f} GB, but only "
                  f"{available / 1e9:.1f} GB are available; it may run out of memory"
                  f"{'. ' + advice if advice else ''}", RuntimeWarning, stacklevel=3)
    return True
