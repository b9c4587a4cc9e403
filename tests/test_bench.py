"""The benchmark script runs on CPU (tiny shape) and reports every number it promises."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench.py"
SMALL = [
    "--shape",
    "tiny",
    "--warmup",
    "1",
    "--steps",
    "2",
    "--prompt-len",
    "8",
    "16",
    "--response-len",
    "8",
    "16",
    "--max-length",
    "32",
]


@pytest.mark.parametrize("extra", [["--loss", "DPO"], ["--loss", "SimPO", "--logps", "naive"]])
def test_bench_smoke(tmp_path, extra):
    out = tmp_path / "bench.json"
    subprocess.run(
        [sys.executable, str(SCRIPT), *SMALL, *extra, "--json", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    result = json.loads(out.read_text())
    assert result["tokens_per_s"] > 0 and result["pairs_per_s"] > 0
    assert 0 < result["mfu"] < 1 and result["peak_memory_gib"] > 0
    assert result["matmul_params"] > 0 and result["steps"] == 2


def test_bench_rejects_lengths_over_max():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--max-length", "16"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "--max-length" in proc.stderr
