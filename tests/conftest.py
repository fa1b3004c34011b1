import os
import shutil
import tempfile
from pathlib import Path

import pytest

# The Triton kernels are tested on CPU under the interpreter, which must be chosen before triton
# is first imported (torch_geometric imports it): set it before any test module is collected.
# GNN_TT_TRITON_CUDA=1 (launch/gpu_check.sh) compiles them for the GPU instead.
if os.environ.get("GNN_TT_TRITON_CUDA") != "1":
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Datasets loaded without an explicit cache_dir are cached under $GNN_TT_CACHE: one folder per
# test session (inherited by spawned workers), so no test reads an entry another run left in
# the working tree.
_SESSION_CACHE = None
if "GNN_TT_CACHE" not in os.environ:
    _SESSION_CACHE = os.environ["GNN_TT_CACHE"] = tempfile.mkdtemp(prefix="gnn_tt_test_cache_")


def pytest_sessionfinish(session, exitstatus):
    if _SESSION_CACHE is not None:
        shutil.rmtree(_SESSION_CACHE, ignore_errors=True)

REPO_ROOT = Path(__file__).resolve().parents[1]
# The real graphs live in ../shared/data beside the repository (absent on some machines).
SHARED_DATA = Path(os.environ.get("GNN_TT_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """Directory holding cora.npz / citeseer.npz; skips the test cleanly when absent."""
    if not (SHARED_DATA / "cora.npz").exists():
        pytest.skip(f"real graphs not found in {SHARED_DATA} (../shared/data)")
    return SHARED_DATA
