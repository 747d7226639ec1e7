"""Render the pipeline's DVC plots to PNG files, offline.

`dvc plots show` writes HTML that loads Vega from a CDN, which renders nothing offline. This
asks DVC for the same Vega-Lite specs (`dvc plots show --json`, data inlined) and renders
them locally with vl-convert:  python -m pipeline.ops.plots [--out reports/plots] [dvc args...]
Extra arguments go to `dvc plots show` (e.g. a revision or experiment names to compare).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from ..stage import StageError, run_stage
from .env import tool_error


def render(specs: dict, out: Path) -> list[Path]:
    try:
        import vl_convert
    except ImportError:
        raise StageError("rendering plots needs vl-convert-python: pip install 'pix2pix-pipeline[pipeline]'") from None
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for plot_id, entries in specs.items():
        for n, entry in enumerate(e for e in entries if e.get("type") == "vega"):
            # A plot per history file (metrics/train/plots/metrics/G_L1.tsv -> G_L1.png).
            name = Path(plot_id).stem if Path(plot_id).suffix else plot_id.replace("/", "_").replace("\\", "_")
            name += f"_{n}" if n else ""
            path = out / f"{name}.png"
            path.write_bytes(vl_convert.vegalite_to_png(entry["content"], scale=2))
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports/plots"))
    args, dvc_args = parser.parse_known_args(argv)
    r = subprocess.run(
        [sys.executable, "-m", "dvc", "plots", "show", "--json", *dvc_args], capture_output=True, text=True
    )
    if r.returncode != 0:
        raise StageError(f"dvc plots show failed: {tool_error(r.stderr + r.stdout)}; run `dvc repro` first")
    specs = json.loads(r.stdout).get("data", {})
    if not specs:
        raise StageError("no plots to render; run `dvc repro` first so metrics/train/plots exists")
    for path in render(specs, args.out):
        print(path)


if __name__ == "__main__":
    run_stage(main)
