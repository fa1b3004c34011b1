"""``gnn-tt bench kernels`` on CPU: the --quick table, the full table with the Triton kernels
and the --profile mode (Triton under the interpreter, which tests/conftest.py selects)."""
import json
import math

import pytest
import torch

from gnn_tt.bench import kernels as bench
from gnn_tt.common.table import format_table


def printed_table(result: dict, printed: str) -> str:
    """The JSON rows rendered in the printed table's column order (the JSON sorts its keys)."""
    header = next(line for line in printed.splitlines() if line.startswith("| shape "))
    return format_table(result["rows"], [c.strip() for c in header.strip("|").split("|")])


def check_consistent(result: dict, kernel: str, methods: list[str]) -> None:
    """Every derived figure of a row follows from its timings as documented."""
    gbps = result["copy_bandwidth_GBps"]
    for r in result["rows"]:
        shape = bench.SHAPES[r["shape"]]
        assert r["D"] == shape.dim
        ids = bench.make_ids(shape, r["B"], r["ids"], torch.device("cpu"))
        assert r["U12"] == torch.unique(ids // shape.tt_p_shapes[2]).numel()
        for tag, passes in (("fwd", 1), ("fwd+bwd", 2)):
            assert all(r[f"{tag} {m} ns"] > 0 for m in methods)
            # floor = time to write (and read) B*D fp32 at the copy bandwidth / time taken
            assert r[f"{tag} {kernel} floor"] == pytest.approx(
                passes * r["D"] * 4 / (gbps * r[f"{tag} {kernel} ns"]))
            if "triton" in methods:
                assert r[f"{tag} triton/gather"] == pytest.approx(
                    r[f"{tag} triton ns"] / r[f"{tag} gather ns"])
        assert r["Mlookups/s fwd+bwd"] == pytest.approx(1e3 / r[f"fwd+bwd {kernel} ns"])


def test_quick_table_writes_json(tmp_path, capsys):
    out = tmp_path / "kernels.json"
    assert bench.main(["--quick", "--reps", "1", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert [(r["shape"], r["rank"], r["B"], r["ids"]) for r in result["rows"]] == [
        ("products", 8, 2000, "uniform"), ("products", 8, 2000, "local")]
    check_consistent(result, "torch", ["torch", "gather"])
    assert "fwd triton ns" not in result["rows"][0]  # --quick runs no Triton
    assert printed_table(result, printed) in printed
    for r in result["rows"]:
        # Local ids come from 32 windows of 16 prefixes: at most 32 * 17 distinct (i1, i2).
        if r["ids"] == "local":
            assert r["U12"] <= bench.LOCAL_WINDOWS * (bench.LOCAL_PREFIXES_PER_WINDOW + 1)


def test_full_table_with_triton_on_cpu(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "MAX_GATHER_ROWS", 1 << 12)  # a small dense table on CPU
    out = tmp_path / "kernels.json"
    assert bench.main(["--device", "cpu", "--shapes", "target", "--batches", "16",
                       "--ids", "uniform", "local", "--reps", "1", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert [(r["shape"], r["rank"], r["B"], r["ids"]) for r in result["rows"]] == [
        ("target", 32, 16, "uniform"), ("target", 32, 16, "local")]
    check_consistent(result, "triton", ["triton", "torch", "gather"])
    assert printed_table(result, printed) in printed
    (err,) = result["checks"].values()
    assert list(result["checks"]) == ["target/R32"] and err <= 1e-4
    assert f"max relative difference triton vs torch {err:.2e}" in printed
    assert result["gather_max_rows"] == 1 << 12 and not math.isnan(err)
    assert "target" not in result  # the goals are judged at B = 1e6 only


def test_profile_reports_the_triton_autograd_ops(capsys):
    assert bench.main(["--profile", "--device", "cpu", "--shapes", "target", "--batches", "16",
                       "--ids", "uniform", "--reps", "1"]) == 0
    text = capsys.readouterr().out
    assert "## profile target R32 B=16 uniform: fwd+bwd" in text
    assert "TTLookupTritonFunction" in text and "TTLookupTritonFunctionBackward" in text
