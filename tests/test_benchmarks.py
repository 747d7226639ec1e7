"""The benchmarks still run: a CPU smoke of the GPU benchmark and a tiny data-scale run (their
numbers are measured on real machines, see benchmarks/README.md; here only that they work)."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT, tool_env

pytestmark = pytest.mark.slow


def _run(*args, timeout=600):
    r = subprocess.run(
        [sys.executable, *map(str, args)], cwd=ROOT, env=tool_env(), capture_output=True, text=True, timeout=timeout
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_gpu_benchmark_runs_as_a_cpu_smoke():
    out = _run("benchmarks/gpu_speed.py", "--smoke")
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert {(r["variant"], r["batch"]) for r in rows} == {
        (v, b) for v in ("textbook", "ours", "ours DDP x2") for b in (1, 2)
    }
    assert all(r["images_per_s"] > 0 and r["device"] == "cpu" for r in rows)
    assert "x" in out.split("vs textbook")[0]  # the ratio table is printed


def test_data_scale_benchmark_runs_on_a_small_set(tmp_path):
    out = _run("benchmarks/data_scale.py", "--pairs", 60, "--steps", 0, "--work", tmp_path)
    row = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
    assert row["pairs"] == 60 and row["disk_over_source"] < 1.2  # one copy on disk, DVC links included


def test_time_to_quality_runs_on_facades():
    """A few steps each: the target is the mean of the textbook's own last two validations (L1
    and SSIM), which it meets by definition at its last one; a variant stopped by the time cap
    after a single validation cannot have a two-validation mean, so it reports "not reached"."""
    from benchmarks.common import FACADES

    if not (FACADES / "val").is_dir():
        pytest.skip(f"{FACADES} not found (the real facades beside the repo)")
    out = _run(
        "benchmarks/time_to_quality.py",
        "--textbook-steps",
        6,
        "--eval-every",
        2,
        "--window",
        2,
        "--variants",
        "ours",
        "--cap",
        0.01,
        "--pairs",
        8,  # the code path is the same on 8 val/test pairs as on all 100/106, in a fifth of the time
    )
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    textbook, ours = rows
    assert textbook["steps"] == 6 and len(textbook["history"]) == 3
    last_two = textbook["history"][-2:]
    assert textbook["target_val"]["l1"] == pytest.approx(sum(h[2] for h in last_two) / 2, abs=1e-5)
    assert textbook["target_val"]["ssim"] == pytest.approx(sum(h[3] for h in last_two) / 2, abs=1e-5)
    assert textbook["reached_target_s"] is not None and textbook["reached_target_s"] <= textbook["train_s"]
    assert len(ours["history"]) == 1 and ours["reached_target_s"] is None  # the cap stopped it after one validation
    assert "not reached" in out.splitlines()[-1] and "SSIM >=" in out
