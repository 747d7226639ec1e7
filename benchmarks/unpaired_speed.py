"""Unpaired (CycleGAN) training speed and peak memory against the reference's own train.py.

    python benchmarks/unpaired_speed.py --reference ~/src/pytorch-CycleGAN-and-pix2pix \\
        [--size 256] [--steps 4 12] [--rounds 2] [--work /tmp/p2p-unpaired-speed]

Both run as their users run them, whole processes, one after the other in alternating rounds:
the reference's `train.py --model cycle_gan --dataset_mode unaligned` (its defaults: ResNet-9
generators, instance norm, LSGAN, pool 50, identity 0.5, batch 1, 4 loader threads; `import
wandb` made optional in the checkout, nothing else changed) for one epoch of N images
(`--max_dataset_size N`), and `pix2pix train --kind unpaired --max-steps N` (the cyclegan
recipe: the same networks and losses) on the same unaligned folders: the facades photos of one
half of the training pairs as trainA, the label maps of the other half as trainB, at
`--size`. The seconds per step are the slope between the two step counts (start-up, imports
and data loading cancel out); peak memory is the process's maximum resident set (wait4's
ru_maxrss, loader workers excluded) at the larger count. Needs ../shared/datasets/facades.

Without the reference checkout, `--textbook` times a faithful textbook of its step instead, in
its own process beside ours, alternating `--steps` steps at a time (after warm-up): the
reference's unaligned dataset reduced (each image opened, converted, resized to load_size with
PIL bicubic, randomly cropped and flipped per item, ToTensor + Normalize; B drawn at random; a
DataLoader with shuffle and 4 workers), its networks (ResNet-9, instance norm, 70x70 PatchGANs)
and its `optimize_parameters`: G_A/G_B forward, identity and cycle L1, LSGAN through MSE, one
Adam over both generators (D frozen), then each D on the real and on a pooled fake (halved), one
Adam over both discriminators; plain Adam, eager NCHW.
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

from benchmarks.common import FACADES, machine  # noqa: E402


def build_unaligned(facades: Path, out: Path, size: int) -> Path:
    """trainA/ (photos) and trainB/ (labels) from disjoint halves of the facades training pairs."""
    from PIL import Image

    if (out / "trainB").is_dir():
        return out
    pairs = sorted((facades / "train").glob("*.jpg"))
    if not pairs:
        raise SystemExit(f"{facades / 'train'}: no facades pairs here; pass --facades")
    for name in ("trainA", "trainB"):
        (out / name).mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(pairs):
        img = Image.open(path).convert("RGB")
        w, h = img.size
        half = img.crop((0, 0, w // 2, h)) if i % 2 == 0 else img.crop((w // 2, 0, w, h))
        half.resize((size, size), Image.Resampling.BICUBIC).save(
            out / ("trainA" if i % 2 == 0 else "trainB") / f"{i:03d}.png"
        )
    return out


def timed(cmd: list[str], cwd: Path | None, env: dict) -> tuple[float, float]:
    """(wall-clock seconds, peak RSS in MB) of one whole process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{proc.stderr.read()[-3000:]}")
    return seconds, usage.ru_maxrss / 1024


def reference_cmd(args, data: Path, steps: int, work: Path) -> list[str]:
    return [
        sys.executable, "train.py", "--dataroot", str(data), "--name", f"speed-{steps}", "--model", "cycle_gan",
        "--dataset_mode", "unaligned", "--checkpoints_dir", str(work / "ref-checkpoints"),
        "--load_size", str(round(args.size * 286 / 256)), "--crop_size", str(args.size),
        "--max_dataset_size", str(steps), "--n_epochs", "1", "--n_epochs_decay", "0", "--no_html",
        "--print_freq", "100000", "--display_freq", "100000", "--save_epoch_freq", "100000",
        "--save_latest_freq", "100000000",
    ]  # fmt: skip


def ours_cmd(args, data: Path, steps: int, work: Path) -> list[str]:
    return [
        sys.executable, "-m", "pix2pix.cli", "train", "--kind", "unpaired", "--data", str(data),
        "--out", str(work / f"ours-{steps}"), "--no-resume", "--max-steps", str(steps),
        "--load-size", str(round(args.size * 286 / 256)), "--crop-size", str(args.size), "--direction", "AtoB",
        "--device", "cpu", "--sample-every", "100000", "--log-every", "100000",
    ]  # fmt: skip


class UnalignedTextbook:
    """The reference's unaligned dataset, reduced."""

    def __init__(self, folder: Path, load: int, crop: int):
        from torchvision import transforms

        self.a = sorted((folder / "trainA").iterdir())
        self.b = sorted((folder / "trainB").iterdir())
        self.load, self.crop = load, crop
        self.to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,) * 3, (0.5,) * 3)])

    def __len__(self):
        return max(len(self.a), len(self.b))

    def _view(self, path):
        import random

        from PIL import Image

        img = Image.open(path).convert("RGB").resize((self.load, self.load), Image.BICUBIC)
        x, y = random.randint(0, self.load - self.crop), random.randint(0, self.load - self.crop)
        img = img.crop((x, y, x + self.crop, y + self.crop))
        return self.to_tensor(img.transpose(Image.FLIP_LEFT_RIGHT) if random.random() > 0.5 else img)

    def __getitem__(self, i):
        import random

        return {"A": self._view(self.a[i % len(self.a)]), "B": self._view(random.choice(self.b))}


class TextbookCycleGAN:
    """The reference's cycle_gan_model.optimize_parameters, written out."""

    def __init__(self, folder: Path, size: int):
        import itertools

        import torch
        from torch import nn
        from torch.utils.data import DataLoader

        from pix2pix.config import ModelConfig
        from pix2pix.networks import build_discriminator, build_generator
        from pix2pix.unpaired import ImagePool

        torch.manual_seed(0)
        m = ModelConfig(netG="resnet_9blocks", norm="instance", dropout=0.0)
        self.G_A, self.G_B = build_generator(m, 3, 3, size), build_generator(m, 3, 3, size)
        self.D_A, self.D_B = build_discriminator(m, 0, 3), build_discriminator(m, 0, 3)
        chain = itertools.chain
        self.opt_G = torch.optim.Adam(chain(self.G_A.parameters(), self.G_B.parameters()), lr=2e-4, betas=(0.5, 0.999))
        self.opt_D = torch.optim.Adam(chain(self.D_A.parameters(), self.D_B.parameters()), lr=2e-4, betas=(0.5, 0.999))
        self.pool_A, self.pool_B = ImagePool(50, 1), ImagePool(50, 2)
        self.mse, self.l1 = nn.MSELoss(), nn.L1Loss()
        loader = DataLoader(UnalignedTextbook(folder, round(size * 286 / 256), size), shuffle=True, num_workers=4)
        self.loader, self.it = loader, iter(loader)

    def gan(self, pred, real: bool):
        import torch

        return self.mse(pred, torch.ones_like(pred) if real else torch.zeros_like(pred))

    def step(self):
        try:
            data = next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            data = next(self.it)
        real_A, real_B = data["A"], data["B"]
        fake_B = self.G_A(real_A)
        rec_A = self.G_B(fake_B)
        fake_A = self.G_B(real_B)
        rec_B = self.G_A(fake_A)
        for net in (self.D_A, self.D_B):
            net.requires_grad_(False)
        self.opt_G.zero_grad()
        idt_A, idt_B = self.G_A(real_B), self.G_B(real_A)
        loss_G = (
            self.l1(idt_A, real_B) * 10 * 0.5 + self.l1(idt_B, real_A) * 10 * 0.5
            + self.gan(self.D_A(fake_B), True) + self.gan(self.D_B(fake_A), True)
            + self.l1(rec_A, real_A) * 10 + self.l1(rec_B, real_B) * 10
        )  # fmt: skip
        loss_G.backward()
        self.opt_G.step()
        for net in (self.D_A, self.D_B):
            net.requires_grad_(True)
        self.opt_D.zero_grad()
        for D, real, fake in (
            (self.D_A, real_B, self.pool_B.query(fake_B)),
            (self.D_B, real_A, self.pool_A.query(fake_A)),
        ):
            ((self.gan(D(real), True) + self.gan(D(fake.detach()), False)) * 0.5).backward()
        self.opt_D.step()


class OursCycleGAN:
    def __init__(self, folder: Path, size: int):
        from pix2pix.cli import build_parser
        from pix2pix.cli_config import config_from_args
        from pix2pix.train import Trainer
        from pix2pix.unpaired_data import UnpairedDataset

        args = build_parser().parse_args(
            ["train", "--kind", "unpaired", "--data", str(folder), "--out", "x", "--crop-size", str(size),
             "--load-size", str(round(size * 286 / 256)), "--direction", "AtoB", "--device", "cpu"]
        )  # fmt: skip
        cfg = config_from_args(args)  # the cyclegan recipe, as `pix2pix train --kind unpaired` builds it
        data = UnpairedDataset.from_folder(folder, cfg.data)
        import tempfile

        self.trainer = Trainer(cfg, data, Path(tempfile.mkdtemp(prefix="p2p-cycle-")), progress=False, sample_count=1)
        self.trainer.model.train()
        self.it, self.epoch = iter(self.trainer.loader), 0

    def step(self):
        try:
            batch = next(self.it)
        except StopIteration:
            self.epoch += 1
            self.trainer.sampler.set_epoch(self.epoch)
            self.it = iter(self.trainer.loader)
            batch = next(self.it)
        self.trainer.model.train_step(batch["input"], batch["target"])


def _textbook_worker(kind: str, folder: str, size: int, conn) -> None:
    import warnings

    warnings.filterwarnings("ignore", message="This DataLoader will create")  # 4 workers on 2 cores: on purpose
    runner = TextbookCycleGAN(Path(folder), size) if kind == "textbook" else OursCycleGAN(Path(folder), size)
    conn.send("ready")
    while True:
        n = conn.recv()
        if n == 0:
            import psutil

            me = psutil.Process()
            conn.send(sum(p.memory_full_info().pss for p in [me, *me.children(recursive=True)]) / 2**20)
            return
        times = []
        for _ in range(n):
            t = time.perf_counter()
            runner.step()
            times.append(time.perf_counter() - t)
        conn.send(times)


def textbook(args, data: Path) -> None:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    conns, procs = {}, {}
    for kind in ("textbook", "ours"):
        conns[kind], child = ctx.Pipe()
        procs[kind] = ctx.Process(target=_textbook_worker, args=(kind, str(data), args.size, child))
        procs[kind].start()
        conns[kind].recv()
    times = {k: [] for k in conns}
    for kind in conns:  # warm-up
        conns[kind].send(2)
        conns[kind].recv()
    for r in range(args.rounds):
        for kind in ("textbook", "ours") if r % 2 == 0 else ("ours", "textbook"):
            conns[kind].send(args.steps[0])
            times[kind] += conns[kind].recv()
    pss = {}
    for kind in conns:
        conns[kind].send(0)
        pss[kind] = conns[kind].recv()
        procs[kind].join(30)
    t, o = statistics.median(times["textbook"]), statistics.median(times["ours"])
    print(json.dumps({
        "machine": machine(), "size": args.size, "textbook_s_per_step": round(t, 3), "ours_s_per_step": round(o, 3),
        "speedup": round(t / o, 2), "steps_each": len(times["ours"]),
        "textbook_pss_mb": round(pss["textbook"]), "ours_pss_mb": round(pss["ours"]),
    }, indent=2))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, help="a checkout of the reference repository")
    parser.add_argument("--textbook", action="store_true", help="without a checkout: time the textbook of its step")
    parser.add_argument("--facades", type=Path, default=FACADES)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, nargs=2, default=[4, 12])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/p2p-unpaired-speed"))
    args = parser.parse_args()
    data = build_unaligned(args.facades, args.work / f"unaligned-{args.size}", args.size)
    if args.textbook:
        return textbook(args, data)
    if not args.reference:
        raise SystemExit("give --reference CHECKOUT, or --textbook")
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    ref_env = {**env, "PYTHONPATH": os.environ.get("REFERENCE_PYTHONPATH", "")}
    our_env = {**env, "PYTHONPATH": str(root)}
    low, high = args.steps
    slopes: dict[str, list[float]] = {"reference": [], "ours": []}
    peaks: dict[str, list[float]] = {"reference": [], "ours": []}
    for r in range(args.rounds):
        for who in ("reference", "ours") if r % 2 == 0 else ("ours", "reference"):
            make, cwd, e = (reference_cmd, args.reference, ref_env) if who == "reference" else (ours_cmd, root, our_env)
            t_low, _ = timed(make(args, data, low, args.work), cwd, e)
            t_high, peak = timed(make(args, data, high, args.work), cwd, e)
            slopes[who].append((t_high - t_low) / (high - low))
            peaks[who].append(peak)
            print(
                json.dumps(
                    {"round": r, "who": who, "s_per_step": round(slopes[who][-1], 3), "peak_rss_mb": round(peak)}
                ),
                flush=True,
            )
    ref, ours = statistics.median(slopes["reference"]), statistics.median(slopes["ours"])
    ratios = [a / b for a, b in zip(slopes["reference"], slopes["ours"], strict=True)]
    print(
        json.dumps(
            {
                "machine": machine(),
                "size": args.size,
                "steps": args.steps,
                "reference_s_per_step": round(ref, 3),
                "ours_s_per_step": round(ours, 3),
                "speedup": round(ref / ours, 2),
                "speedup_range": [round(min(ratios), 2), round(max(ratios), 2)],
                "reference_peak_rss_mb": round(max(peaks["reference"])),
                "ours_peak_rss_mb": round(max(peaks["ours"])),
                "memory_ratio": round(max(peaks["ours"]) / max(peaks["reference"]), 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
