"""Test quality at equal wall-clock time: each quality option on/off, against the reference.

    python benchmarks/quality.py --reference ~/src/pytorch-CycleGAN-and-pix2pix \\
        [--task labels2photo|edges2photo] [--size 128] [--reference-epochs 5 5] [--seeds 0 1] \\
        [--variants paper ema feat b4+feat+ssim resnet unpaired unpaired-small] [--work /tmp/p2p-quality]

For each seed: the reference's own train.py runs first, as its users run it (`--model pix2pix`,
batch 1, its defaults, CPU; `import wandb` made optional in the checkout, nothing else changed),
for `--reference-epochs` (constant, then decay); its whole-process seconds become the time
budget of every variant here (`pix2pix train --budget-minutes`, the same constant/decay split).
Each variant is `pix2pix train` with the option's flags, scored with `pix2pix evaluate` on
best.pt and on last.pt. The reference's test.py (its defaults: no --eval, as its README runs
it) writes its test outputs, which are scored against the same test targets with the same
functions (pix2pix.metrics): L1, PSNR, SSIM on [0, 1] images, and the sharpness ratio (the
outputs' high-frequency energy over the targets', 1.0 = as sharp as the photos).

Tasks: labels2photo is the facades (labels -> photo), photo2labels the other way round (an
unpaired variant scores its B -> A generator in that direction too, in a row of its own);
edges2photo builds Canny edges -> photo
pairs offline from the facades photos (pipeline/data/builders.py), a second task with no
download. Needs ../shared/datasets/facades (or --facades). One JSON row per run, then a table.
Without --reference, `--budget-minutes` sets the budget and only our variants run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import FACADES  # noqa: E402

B4 = ["--batch-size", "4", "--lr", "4e-4"]
B4_FEAT_SSIM = [*B4, "--lambda-feat", "10", "--lambda-ssim", "100", "--best-metric", "ssim"]
COARSE_ONLY = ["--lambda-l1", "0", "--lambda-l1-coarse", "1000"]  # L1 on 4x4-block means, none on pixels
UNPAIRED_SMALL = ["--kind", "unpaired", "--pairs-apart", "--netG", "resnet_6blocks", "--ngf", "32"]
UNPAIRED_SMALL_NOIDT = [*UNPAIRED_SMALL, "--lambda-identity", "0"]
# Each variant: the `pix2pix train` flags it adds to the paper's settings.
VARIANTS: dict[str, list[str]] = {
    "paper": [],
    "ema": ["--ema", "0.999"],
    "feat": ["--lambda-feat", "10"],
    "ema+feat": ["--ema", "0.999", "--lambda-feat", "10"],
    "ms2": ["--num-D", "2", "--n-layers-D", "2", "--lambda-feat", "10"],
    "resnet": ["--netG", "resnet_9blocks", "--norm", "instance"],
    "sn": ["--spectral-norm"],
    "recipe-best": ["--recipe", "best"],
    "ssim": ["--lambda-ssim", "100"],
    "ema+feat+ssim": ["--ema", "0.999", "--lambda-feat", "10", "--lambda-ssim", "100"],
    # Four pairs a step at twice the rate (2e-4 x sqrt 4): more images a second on a CPU.
    "b4": B4,
    "b4+feat": [*B4, "--lambda-feat", "10"],
    "b4+feat+ssim": B4_FEAT_SSIM,
    # ... with L1 weighted 3x and 10x against the adversarial terms: how far test L1 falls, and
    # what it costs in sharpness.
    "b4+feat+ssim+l1x3": [*B4_FEAT_SSIM, "--lambda-l1", "300"],
    "b4+feat+ssim+l1x10": [*B4_FEAT_SSIM, "--lambda-l1", "1000"],
    # ... with a (warmed-up) EMA generator: the blur the unwarmed average showed was its init.
    "b4+feat+ssim+ema": [*B4_FEAT_SSIM, "--ema", "0.999"],
    # ... with L1 moved from pixels to 4x4-block means (pixels 10, blocks 1000, where the recipe
    # has pixels 100): colour and layout held tight, fine texture left to the adversarial terms.
    "b4+feat+ssim+coarse": [*B4_FEAT_SSIM, "--lambda-l1", "10", "--lambda-l1-coarse", "1000"],
    # ... and with no pixel L1 at all: only the block means are held to the target.
    "b4+feat+ssim+coarse-only": [*B4_FEAT_SSIM, *COARSE_ONLY],
    # ... with the SSIM term at 30 instead of 100: SSIM's structure term lowers the output's
    # contrast where the structure is uncertain, so a weaker term should leave more texture.
    # (argparse keeps a flag's last value, so the later --lambda-ssim wins.)
    "b4+feat+ssim30+coarse-only": [*B4_FEAT_SSIM, *COARSE_ONLY, "--lambda-ssim", "30"],
    # ... and at 50, between the recipe's 100 (SSIM goal met, sharpness missed on seed 1) and 30
    # (sharpness met, SSIM missed by 0.0055).
    "b4+feat+ssim50+coarse-only": [*B4_FEAT_SSIM, *COARSE_ONLY, "--lambda-ssim", "50"],
    # Unpaired (CycleGAN, the cyclegan recipe) on the training pairs split apart: no pair is ever
    # seen together; scored against the real test pairs like every other row.
    "unpaired": ["--kind", "unpaired", "--pairs-apart"],
    # The same with ResNet-6 generators of half the width: about a third of the step's work, so
    # three times the steps in a short CPU budget.
    "unpaired-small": UNPAIRED_SMALL,
    # ... with an EMA generator: the average of a fast-moving G is smoother, which SSIM rewards.
    "unpaired-small+ema": [*UNPAIRED_SMALL, "--ema", "0.999"],
    # ... with U-Net generators (skip connections carry the input's layout to the output, which
    # SSIM against the real pairs rewards), or without the identity term (a photo fed to the
    # labels -> photo generator need not come back unchanged).
    "unpaired-unet": ["--kind", "unpaired", "--pairs-apart", "--netG", "unet"],
    "unpaired-small-noidt": UNPAIRED_SMALL_NOIDT,
    # ... with best.pt chosen on validation SSIM (the smoothed mean of the last checks).
    "unpaired-small-noidt+ssim-best": [*UNPAIRED_SMALL_NOIDT, "--best-metric", "ssim"],
    # ... with a warmed-up EMA generator: G's swings from one check to the next averaged away.
    "unpaired-small-noidt+ema": [*UNPAIRED_SMALL_NOIDT, "--ema", "0.999"],
}


def sh(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> float:
    """Run `cmd` to completion (output to the log); its whole-process wall-clock seconds."""
    start = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return time.perf_counter() - start


def build_edges_task(facades: Path, work: Path) -> Path:
    """train/val/test folders of edges|photo pairs built from the facades photos (left halves)."""
    from PIL import Image

    from pipeline.config import PairsConfig
    from pipeline.data.builders import build_pairs

    out = work / "edges2photo"
    if (out / "test").is_dir():
        return out
    for split in ("train", "val", "test"):
        photos = work / "facades-photos" / split
        photos.mkdir(parents=True, exist_ok=True)
        for path in sorted((facades / split).glob("*.jpg")):
            image = Image.open(path).convert("RGB")
            image.crop((0, 0, image.width // 2, image.height)).save(photos / f"{path.stem}.png")
        build_pairs(photos, out / split, PairsConfig(builder="edges", size=256), direction="AtoB")
    return out


def targets(data: Path, size: int, direction: str):
    """name -> (target image in [0, 1]) of the test split, as `pix2pix evaluate` sees them."""
    from pix2pix.config import DataConfig
    from pix2pix.data import PairedDataset

    cfg = DataConfig(direction=direction, load_size=size, crop_size=size, flip=False).validate()
    test = PairedDataset(data / "test", cfg, train=False)
    return {test[i]["name"]: (test[i]["target"] + 1) / 2 for i in range(len(test))}


def score_images(fakes: dict, reals: dict) -> dict:
    """Mean L1/PSNR/SSIM and the sharpness ratio of `fakes` against `reals` (both name -> [0, 1])."""

    from pix2pix.metrics import high_frequency_energy, per_image_metrics

    rows, energy = [], {"fake": 0.0, "real": 0.0}
    for name, real in reals.items():
        fake = fakes[name][None]
        rows.append({k: float(v) for k, v in per_image_metrics(fake, real[None]).items()})
        energy["fake"] += float(high_frequency_energy(fake).sum())
        energy["real"] += float(high_frequency_energy(real[None]).sum())
    out = {k: statistics.fmean(r[k] for r in rows) for k in rows[0]}
    out["sharpness"] = energy["fake"] / max(energy["real"], 1e-12)
    return {k: round(v, 5) for k, v in out.items()} | {"test_images": len(rows)}


def run_reference(args, data: Path, direction: str, seed: int, work: Path) -> dict:
    """The reference's train.py then test.py, from its checkout; its outputs scored here."""
    import torch
    from torchvision.io import ImageReadMode, decode_image

    name = f"ref-{args.task}-s{seed}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("REFERENCE_PYTHONPATH")]))}
    common = ["--dataroot", str(data), "--name", name, "--model", "pix2pix", "--direction", direction]
    common += ["--checkpoints_dir", str(work / "ref-checkpoints")]
    n, decay = args.reference_epochs
    train = [sys.executable, "train.py", *common, "--load_size", str(round(args.size * 286 / 256))]
    train += ["--crop_size", str(args.size), "--n_epochs", str(n), "--n_epochs_decay", str(decay), "--no_html"]
    train += ["--print_freq", "100000", "--save_epoch_freq", str(n + decay), "--display_freq", "100000"]
    train += ["--netG", f"unet_{args.size}"]  # its U-Net for this size (ours derives the depth from crop_size)
    seconds = sh(train, cwd=args.reference, env=env)
    test = [sys.executable, "test.py", *common, "--load_size", str(args.size), "--crop_size", str(args.size)]
    test += ["--results_dir", str(work / "ref-results"), "--num_test", "100000", "--netG", f"unet_{args.size}"]
    sh(test, cwd=args.reference, env=env)
    images = work / "ref-results" / name / "test_latest" / "images"
    fakes = {
        p.name.removesuffix("_fake_B.png"): decode_image(str(p), ImageReadMode.RGB).to(torch.float32) / 255
        for p in images.glob("*_fake_B.png")
    }
    return {"variant": "reference train.py", "seed": seed, "train_s": round(seconds, 1)} | score_images(
        fakes, targets(data, args.size, direction)
    )


def run_ours(args, data: Path, direction: str, variant: str, seed: int, minutes: float, work: Path) -> dict:
    out = work / f"{args.task}-{variant}-s{seed}"
    cli = [sys.executable, "-m", "pix2pix.cli"]
    train = [*cli, "train", "--data", str(data), "--out", str(out), "--no-resume", "--direction", direction]
    train += ["--load-size", str(round(args.size * 286 / 256)), "--crop-size", str(args.size), "--seed", str(seed)]
    train += ["--budget-minutes", f"{minutes:.4f}", "--epochs", "1", "--epochs-decay", "1", "--sample-every", "100000"]
    seconds = sh([*train, *VARIANTS[variant]])
    row = {"variant": variant, "seed": seed, "train_s": round(seconds, 1)}
    row |= {kept: evaluate(cli, out / f"{kept}.pt", data, out / f"test-{kept}.json") for kept in ("best", "last")}
    if "unpaired" in VARIANTS[variant]:
        # An unpaired run trains both directions: its B -> A generator (a model of its own,
        # `pix2pix export --generator BA`) scored on the same test pairs the other way round.
        row["reverse"] = {}
        for kept in ("best", "last"):
            folder = out / f"reverse-{kept}"
            sh([*cli, "export", "--checkpoint", str(out / f"{kept}.pt"), "--out", str(folder), "--generator", "BA",
                "--formats", "torchscript"])  # fmt: skip
            row["reverse"][kept] = evaluate(cli, folder / "generator.pt", data, folder / "test.json")
    return row


def evaluate(cli: list[str], model: Path, data: Path, scores: Path) -> dict:
    """`pix2pix evaluate` of `model` on the test pairs: L1, PSNR, SSIM and sharpness."""
    sh([*cli, "evaluate", "--model", str(model), "--data", str(data / "test"), "--out", str(scores)])
    result = json.loads(scores.read_text())
    return {k: round(result[k], 5) for k in ("l1", "psnr", "ssim", "sharpness")}


def input_baseline(args, data: Path, direction: str) -> dict:
    """The test input returned as the output (resized like the outputs): the bar a translation
    must clear."""
    from pix2pix.config import DataConfig
    from pix2pix.data import PairedDataset, iter_batches
    from pix2pix.metrics import evaluate

    cfg = DataConfig(direction=direction, load_size=args.size, crop_size=args.size)
    means, _ = evaluate(lambda x: x, iter_batches(PairedDataset(data / "test", cfg, train=False)))
    return {"variant": "input as output", "seed": "-", "train_s": 0.0, **{k: round(v, 5) for k, v in means.items()}}


def with_reverse_rows(rows: list[dict]):
    """Each row, then an unpaired run's B -> A generator as a row of its own."""
    for r in rows:
        yield r
        if "reverse" in r:
            yield {**r, **r["reverse"], "variant": f"{r['variant']}, its B -> A generator"}


def table(rows: list[dict]) -> str:
    lines = ["| variant | seed | train s | test L1 | PSNR | SSIM | sharpness | last.pt L1 / SSIM |", "|---" * 8 + "|"]
    for r in with_reverse_rows(rows):
        s = r.get("best", r)
        last = f"{r['last']['l1']:.4f} / {r['last']['ssim']:.4f}" if "last" in r else ""
        lines.append(
            f"| {r['variant']} | {r['seed']} | {r['train_s']:.0f} | {s['l1']:.4f} | {s['psnr']:.2f} | "
            f"{s['ssim']:.4f} | {s['sharpness']:.3f} | {last} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=("labels2photo", "photo2labels", "edges2photo"), default="labels2photo")
    p.add_argument("--facades", type=Path, default=FACADES)
    p.add_argument("--reference", type=Path, help="a local checkout of junyanz/pytorch-CycleGAN-and-pix2pix")
    p.add_argument("--reference-epochs", type=int, nargs=2, default=(5, 5), metavar=("N", "DECAY"))
    p.add_argument("--budget-minutes", type=float, help="without --reference: every variant's time budget")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["paper", "ema", "feat", "ema+feat"])
    p.add_argument("--work", type=Path, default=Path("/tmp/p2p-quality"))
    args = p.parse_args()
    if not (args.facades / "test").is_dir():
        raise SystemExit(f"{args.facades}: the facades dataset is not there (see --facades)")
    if not args.reference and not args.budget_minutes:
        raise SystemExit("give --reference CHECKOUT (its time sets the budget) or --budget-minutes")
    from benchmarks.common import machine

    print(f"# {machine()}", flush=True)
    args.work.mkdir(parents=True, exist_ok=True)
    data, direction = args.facades, "BtoA"
    if args.task == "edges2photo":
        data, direction = build_edges_task(args.facades, args.work), "AtoB"
    elif args.task == "photo2labels":  # the facades the other way round (A is the photo)
        direction = "AtoB"
    rows = [input_baseline(args, data, direction)]
    print(json.dumps(rows[-1]), flush=True)
    for seed in args.seeds:
        minutes = args.budget_minutes
        if args.reference:
            rows.append(run_reference(args, data, direction, seed, args.work))
            print(json.dumps(rows[-1]), flush=True)
            minutes = rows[-1]["train_s"] / 60
        for variant in args.variants:
            rows.append(run_ours(args, data, direction, variant, seed, minutes, args.work))
            print(json.dumps(rows[-1]), flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
