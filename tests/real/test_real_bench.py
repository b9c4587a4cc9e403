"""``scripts/bench.py --pretrained``: the benchmark runs the real model (one tiny step)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.real

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench.py"


def test_bench_runs_the_pretrained_model(tmp_path, real_model_dir):
    out = tmp_path / "bench.json"
    lengths = ["--prompt-len", "8", "16", "--response-len", "8", "16", "--max-length", "32"]
    command = [sys.executable, str(SCRIPT), "--pretrained", str(real_model_dir), *lengths]
    command += ["--warmup", "0", "--steps", "1", "--reference", "precomputed", "--json", str(out)]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    assert result["shape"] == f"pretrained {real_model_dir}"
    assert result["matmul_params"] == 134_515_008  # SmolLM2-135M: tied lm_head counted once
    assert result["reference"] == "precomputed" and result["tokens_per_cpu_s"] > 0
