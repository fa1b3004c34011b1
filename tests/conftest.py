import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# The real graphs live in ../shared/data beside the repository (absent on some machines).
SHARED_DATA = Path(os.environ.get("GNN_TT_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """Directory holding cora.npz / citeseer.npz; skips the test cleanly when absent."""
    if not (SHARED_DATA / "cora.npz").exists():
        pytest.skip(f"real graphs not found in {SHARED_DATA} (../shared/data)")
    return SHARED_DATA
