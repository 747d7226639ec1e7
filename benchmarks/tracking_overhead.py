"""What MLflow tracking costs the default training: none vs synchronous vs asynchronous logging.

    python benchmarks/tracking_overhead.py [--steps 450] [--rounds 2]

Trains the default configuration (params.yaml: synthetic 64x64 facades, batch 4, metrics every
10 steps, a sample grid every 250) for `--steps` steps, each variant in its own process and
its own sqlite store, in alternating order:

- none: no MLflow run;
- sync: the shipped `pipeline.tracking.callback.MlflowCallback` in a run with system metrics: each
  report (every 10 steps) one log_batch on the training thread, the sample grid as an image;
- async: the same calls with `synchronous=False` (MLflow's asynchronous logging: queued and
  sent by a background thread; flushed before end_run).

Reports wall seconds of training plus end_run (so queued values reaching the store are paid
for; opening the store and the run, once per training, is not counted) and the overhead of
each tracked variant over `none` (best of the rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run_variant(variant: str, steps: int, data: Path, store: Path) -> dict:
    import mlflow

    from pipeline.config import PipelineConfig
    from pipeline.tracking.callback import MlflowCallback
    from pix2pix.data import PairedDataset
    from pix2pix.train import Trainer

    cfg = PipelineConfig().library()
    cfg.train.device = "cpu"
    train = PairedDataset(data / "train", cfg.data)
    val = PairedDataset(data / "val", cfg.data, train=False)
    trainer = Trainer(cfg, train, store / "ckpt", val_data=val, progress=False)
    if variant != "none":
        mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
        mlflow.start_run(log_system_metrics=True)
        callback = MlflowCallback(mlflow)
        if variant == "async":
            log_metrics, log_image = mlflow.log_metrics, mlflow.log_image

            class Async:  # the same calls, queued for MLflow's background thread
                def __getattr__(self, name):
                    return getattr(mlflow, name)

                def log_metrics(self, *a, synchronous=None, **k):
                    return log_metrics(*a, synchronous=False, **k)

                def log_image(self, *a, synchronous=None, **k):
                    return log_image(*a, synchronous=False, **k)

            callback.mlflow = Async()
        trainer.callbacks.callbacks.append(callback)
    started = time.perf_counter()  # the store exists and the run is open: what every step pays
    trainer.fit(max_steps=steps)
    if variant != "none":
        mlflow.flush_async_logging()
        mlflow.end_run()
    seconds = time.perf_counter() - started
    return {"variant": variant, "steps": trainer.step, "seconds": round(seconds, 2)}


def main(argv=None) -> None:
    from benchmarks.common import machine

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=450, help="training steps per run (the default run has 2250)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--variant", help=argparse.SUPPRESS)  # internal: one run in this process
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.steps, args.data, args.store)))
        return

    from pipeline.config import PipelineConfig
    from pipeline.data.synthetic import generate

    print(f"machine: {machine()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="p2p-tracking-"))
    syn = PipelineConfig().data.synthetic
    generate(work / "data", {"train": syn.train, "val": syn.val}, size=syn.size, seed=syn.seed)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    seconds: dict[str, list[float]] = {"none": [], "sync": [], "async": []}
    for r in range(args.rounds):
        for variant in list(seconds) if r % 2 == 0 else list(seconds)[::-1]:
            store = Path(tempfile.mkdtemp(dir=work))
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--variant",
                    variant,
                    "--steps",
                    str(args.steps),
                    "--data",
                    str(work / "data"),
                    "--store",
                    str(store),
                ],
                capture_output=True,
                text=True,
                env=env,
            )
            if out.returncode:
                raise SystemExit(out.stderr[-3000:])
            result = json.loads(out.stdout.strip().splitlines()[-1])
            seconds[variant].append(result["seconds"])
            print(json.dumps(result), flush=True)
    base = min(seconds["none"])
    for variant, values in seconds.items():
        best = min(values)
        print(f"{variant:6s} best {best:7.2f} s of {values}  overhead {100 * (best - base) / base:+.1f}%")


if __name__ == "__main__":
    main()
