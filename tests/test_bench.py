"The benchmark script runs (a smoke run at tiny sizes) and writes its JSON and markdown: it cannot rot unnoticed. Its numbers are not checked here."
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_benchmark_smoke_run_writes_both_files(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "comet_bench.py"), "--smoke", "--amp", "--device", "cpu", "--out", str(tmp_path), "--name", "s"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads((tmp_path / "s.json").read_text())
    md = (tmp_path / "s.md").read_text()
    assert "## Training epoch on cached features" in md and "## Targets" in md and "κ slider" in md and "### Mixed precision" in md
    amp = [r for r in data["inference"] if "amp_ips" in r]
    assert amp and amp[0]["amp_dtype"] == "bfloat16" and 0 <= amp[0]["amp_score_rel"] < 0.1
    assert "machine" in json.dumps(data) and not list(tmp_path.glob("*.tmp"))
