"""``gnn-tt bench kernels`` on CPU: the --quick table and the --profile mode (Triton under the
interpreter, which tests/conftest.py selects)."""
import json

from gnn_tt.bench import kernels as bench


def test_quick_table_writes_json(tmp_path, capsys):
    out = tmp_path / "kernels.json"
    assert bench.main(["--quick", "--reps", "1", "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [(r["shape"], r["ids"]) for r in result["rows"]] == [("products", "uniform"),
                                                                 ("products", "local")]
    for r in result["rows"]:
        assert r["B"] == 2000 and r["fwd+bwd torch ns"] > 0 and r["fwd+bwd gather ns"] > 0
        # Local ids come from 32 windows of 16 prefixes: at most 32 * 17 distinct (i1, i2).
        if r["ids"] == "local":
            assert r["U12"] <= 32 * (bench.LOCAL_PREFIXES_PER_WINDOW + 1)
    assert "| products" in capsys.readouterr().out


def test_profile_reports_the_triton_autograd_ops(capsys):
    assert bench.main(["--profile", "--device", "cpu", "--shapes", "target", "--batches", "16",
                       "--ids", "uniform", "--reps", "1"]) == 0
    text = capsys.readouterr().out
    assert "## profile target R32 B=16 uniform: fwd+bwd" in text
    assert "TTLookupTritonFunction" in text and "TTLookupTritonFunctionBackward" in text
