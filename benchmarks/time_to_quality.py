"""Time to quality: wall seconds of training until the validation L1 first reaches a target.

    python benchmarks/time_to_quality.py [--size 128] [--textbook-steps 4000] [--eval-every 200]

Real facades, labels -> photo (needs ../shared/datasets/facades). First the textbook (the
reference's step, train_speed.py) trains for `--textbook-steps` batch-1 steps (4,000 = 10
epochs of the 400 training pairs); its test L1 then is the target. Then each of our variants
trains until its validation L1 (the 100 val pairs) first reaches that target, or until it
has used the textbook's whole time. The clock counts training only: each evaluation (every
`--eval-every` steps, eval-mode generator, float32, the same code for every variant) is
left out. Reported per variant: seconds to target, steps, and test L1 / PSNR / SSIM of the
model at that moment. Each variant runs in its own process.

Variants:
- textbook: fp32, batch 1, plain Adam, 4 DataLoader workers (the reference's train.py);
- ours: the defaults (bf16 autocast on CPUs with native bf16, fp32 elsewhere), batch 1;
- ours-b4: the same with batch 4 and the learning rate scaled by sqrt(4) (4e-4), not tuned
  further.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = {
    "textbook": {},
    "ours": {"batch": 1},
    "ours-b4": {"batch": 4, "lr": 4e-4},
}


def _scores(g, folder: Path, size: int) -> dict:
    from benchmarks.train_speed import _config
    from pix2pix.data import PairedDataset, iter_batches
    from pix2pix.metrics import evaluate

    was_training = g.training
    g.eval()
    try:
        means, _ = evaluate(g, iter_batches(PairedDataset(folder, _config(size, 1).data, train=False)), "cpu")
    finally:
        g.train(was_training)
    return {k: round(v, 5) for k, v in means.items()}


def run_one(variant: str, size: int, max_steps: int, max_seconds: float, target: float | None, eval_every: int) -> dict:
    import torch

    from benchmarks.common import FACADES
    from benchmarks.train_speed import OursRunner, TextbookRunner

    torch.manual_seed(0)
    spec = VARIANTS[variant]
    if variant == "textbook":
        runner, batch = TextbookRunner(FACADES / "train", size, 1), 1
        g = runner.G
    else:
        batch = spec["batch"]
        extra = {"lr": spec["lr"]} if "lr" in spec else {}
        runner = OursRunner(FACADES / "train", size, batch, **extra)
        g = runner.trainer.model.G
    every = max(1, eval_every // batch)  # evaluate after the same number of images
    trained, steps, history, reached = 0.0, 0, [], None
    while steps < max_steps and trained < max_seconds:
        t = time.perf_counter()
        for _ in range(every):
            runner.step()
        trained += time.perf_counter() - t
        steps += every
        val = _scores(g, FACADES / "val", size)["l1"]
        history.append((steps, round(trained, 1), val))
        print(json.dumps({"variant": variant, "step": steps, "train_s": round(trained, 1), "val_l1": val}), file=sys.stderr, flush=True)
        if target is not None and val <= target:
            reached = trained
            break
    return {"variant": variant, "batch": batch, "steps": steps, "images": steps * batch, "train_s": round(trained, 1),
            "reached_target_s": None if reached is None else round(reached, 1), "history": history,
            "test": _scores(g, FACADES / "test", size)}


def main(argv=None) -> None:
    from benchmarks.common import FACADES, machine

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--textbook-steps", type=int, default=4000)
    ap.add_argument("--eval-every", type=int, default=200, help="images between validations")
    ap.add_argument("--variants", nargs="+", default=["ours", "ours-b4"], choices=[v for v in VARIANTS if v != "textbook"])
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--max-steps", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--max-seconds", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--target", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not (FACADES / "val").is_dir():
        sys.exit(f"error: {FACADES} not found; this benchmark needs the real facades dataset beside the repo")
    if args.one:
        print(json.dumps(run_one(args.one, args.size, args.max_steps, args.max_seconds, args.target, args.eval_every)))
        return

    def isolated(variant: str, max_steps: int, max_seconds: float, target: float | None) -> dict:
        cmd = [sys.executable, __file__, "--one", variant, "--size", str(args.size), "--eval-every", str(args.eval_every),
               "--max-steps", str(max_steps), "--max-seconds", str(max_seconds)] + (["--target", str(target)] if target else [])
        out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        if out.returncode:
            raise SystemExit(f"{variant} failed")
        return json.loads(out.stdout.strip().splitlines()[-1])

    print(f"machine: {machine()}", flush=True)
    textbook = isolated("textbook", args.textbook_steps, float("inf"), None)
    target = textbook["test"]["l1"]
    # The textbook's own time to target, by the same rule (its first validation at or below it).
    first = next((s for s, _, v in textbook["history"] if v <= target), None)
    textbook["reached_target_s"] = next((t for s, t, v in textbook["history"] if v <= target), None)
    print(json.dumps({**textbook, "target_l1": target, "first_step_at_target": first}), flush=True)
    rows = [textbook]
    for variant in args.variants:
        rows.append(isolated(variant, 10**9, textbook["train_s"], target))
        print(json.dumps(rows[-1]), flush=True)
    print(f"\ntarget: the textbook's test L1 after {args.textbook_steps} steps = {target}")
    for r in rows:
        reached = r["reached_target_s"]
        ratio = f"x{reached / textbook['train_s']:.2f} of the textbook's {args.textbook_steps}-step time" if reached else "not reached"
        print(f"  {r['variant']:9s} batch {r['batch']}: {reached} s ({r['images']} images) -> {ratio}; "
              f"test L1 {r['test']['l1']} PSNR {r['test']['psnr']} SSIM {r['test']['ssim']}")


if __name__ == "__main__":
    main()
