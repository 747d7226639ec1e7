"""Start-up overhead: `pix2pix --help` and a no-op `dvc repro`.

    python benchmarks/overhead.py [--project .] [--repeats 5]

The no-op repro is timed in `--project` only when `dvc status` says everything is up to
date there (run `dvc repro` once first); it never starts a real pipeline run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed_run(cmd: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    return time.perf_counter() - t, r


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, default=ROOT)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)

    exe = shutil.which("pix2pix", path=str(Path(sys.executable).parent)) or shutil.which("pix2pix")
    cli = [exe] if exe else [sys.executable, "-m", "pix2pix.cli"]
    times = []
    for _ in range(args.repeats):
        t, r = timed_run([*cli, "--help"], args.project)
        assert r.returncode == 0, r.stderr
        times.append(t)
    print(f"pix2pix --help: median {statistics.median(times):.3f} s over {args.repeats} runs (target < 1 s)")

    dvc = [sys.executable, "-m", "dvc"]
    _, status = timed_run([*dvc, "status", "--json"], args.project)
    if status.returncode != 0 or status.stdout.strip() not in ("{}", ""):
        print(f"dvc repro (no-op): skipped, {args.project} is not up to date; run `dvc repro` there first")
        return
    times = []
    for _ in range(args.repeats):
        t, r = timed_run([*dvc, "repro"], args.project)
        assert r.returncode == 0 and "Running stage" not in r.stdout, r.stdout + r.stderr
        times.append(t)
    print(f"dvc repro (no-op): median {statistics.median(times):.3f} s over {args.repeats} runs (target < 3 s)")


if __name__ == "__main__":
    main()
