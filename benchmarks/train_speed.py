"""Training throughput: our trainer against a plain, textbook pix2pix step, side by side.

    python benchmarks/train_speed.py [--configs 256x1 128x4] [--rounds 5] [--steps 4]

Both run the same U-Net + 70x70 PatchGAN with the same losses, labels -> photo on the real
facades train split when ../shared is beside the repo (else generated A|B pairs):

- textbook: what the reference repos and tutorials do - an AlignedDataset that opens, splits,
  resizes, crops and flips each JPEG per item, the usual DataLoader (shuffle, 4 workers),
  default Adam, eager NCHW, glibc's default allocator behaviour;
- ours: `pix2pix.train.Trainer` as the pipeline builds it (decoded-image cache, 0 workers,
  fused Adam, glibc told to keep freed memory, bf16 autocast + NHWC where the CPU has native
  bf16; see pix2pix/performance.py); `ours-fp32` with amp and channels_last off, and
  `ours-bf16-nchw` / `ours-bf16-nhwc` to see what each switch gives (`--variants`).

The textbook follows the reference's own files (junyanz/pytorch-CycleGAN-and-pix2pix:
models/pix2pix_model.py, data/aligned_dataset.py, data/base_dataset.py): the A|B JPEG opened
and converted to RGB per item, cut in halves, resized to load_size with PIL bicubic, the same
random crop and flip for both halves, ToTensor + Normalize(0.5); DataLoader(shuffle, 4
workers); G forward once, D on the detached fake pair and on the real pair (loss halved), then
D again on the fake pair for G's GAN loss + 100 x L1; plain Adam(lr 2e-4, betas 0.5/0.999).

Each variant lives in its own process (so process-wide settings stay apart); the parent
makes them take turns - `--steps` steps each, `--rounds` times, after warm-up - so machine
drift hits both alike. A step is timed from fetching its batch to the end of the G update.
Peak memory is the proportional set size (PSS) of each variant's whole process tree,
DataLoader workers included, sampled over a few extra steps with every image cached.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TEXTBOOK_WORKERS = 4  # the reference's --num_threads default


# Our variants: train.* settings over the defaults. "ours" is what `dvc repro` runs (amp and
# channels_last auto: bf16 + NHWC on CPUs with native bf16, fp32 NCHW elsewhere).
OURS = {
    "ours": {},
    "ours-fp32": {"amp": "false", "channels_last": "false"},
    "ours-bf16-nchw": {"amp": "true", "channels_last": "false"},
    "ours-bf16-nhwc": {"amp": "true", "channels_last": "true"},
}


def _config(size: int, batch: int, device: str = "cpu", **train):
    from pix2pix.config import Config

    cfg = Config()
    cfg.data.direction = "BtoA"  # facades: labels (right half) -> photo
    cfg.data.crop_size, cfg.data.load_size = size, round(size * 286 / 256)
    cfg.train.batch_size = batch
    cfg.train.device = device
    for key, value in train.items():
        setattr(cfg.train, key, value)
    return cfg.validate()


class AlignedDataset:
    """The reference's aligned dataset, reduced: open, split, resize, crop, flip per item."""

    def __init__(self, folder: Path, load: int, crop: int):
        from torchvision import transforms

        self.paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".png"))
        self.load, self.crop = load, crop
        self.to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,) * 3, (0.5,) * 3)])

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from PIL import Image

        load, crop = self.load, self.crop
        ab = Image.open(self.paths[i]).convert("RGB")
        w, h = ab.size
        a, b = ab.crop((0, 0, w // 2, h)), ab.crop((w // 2, 0, w, h))
        x, y = random.randint(0, load - crop), random.randint(0, load - crop)
        flip = random.random() > 0.5

        def view(img):
            img = img.resize((load, load), Image.BICUBIC).crop((x, y, x + crop, y + crop))
            return self.to_tensor(img.transpose(Image.FLIP_LEFT_RIGHT) if flip else img)

        return {"A": view(b), "B": view(a)}  # BtoA: labels -> photo


class TextbookRunner:
    """The reference-style loop, written out as a tutorial would."""

    def __init__(self, folder: Path, size: int, batch: int, device: str = "cpu", ngf: int | None = None):
        import torch
        from torch import nn
        from torch.utils.data import DataLoader

        from pix2pix.networks import build_discriminator, build_generator

        cfg = _config(size, batch)
        if ngf:
            cfg.model.ngf = cfg.model.ndf = ngf
        load, crop = cfg.data.load_size, cfg.data.crop_size

        torch.manual_seed(0)
        self.device = torch.device(device)
        self.G = build_generator(cfg.model, 3, 3, crop).to(self.device)
        self.D = build_discriminator(cfg.model, 3, 3).to(self.device)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.bce, self.l1 = nn.BCEWithLogitsLoss(), nn.L1Loss()
        self.dataset = AlignedDataset(folder, load, crop)
        self.loader = DataLoader(self.dataset, batch_size=batch, shuffle=True, num_workers=TEXTBOOK_WORKERS)
        self.it = iter(self.loader)
        self.torch = torch

    def set_requires_grad(self, net, flag):
        for p in net.parameters():
            p.requires_grad = flag

    def next_batch(self):
        try:
            return next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            return next(self.it)

    def step(self):
        torch = self.torch
        data = self.next_batch()
        real_a, real_b = data["A"].to(self.device), data["B"].to(self.device)  # the reference's set_input
        fake_b = self.G(real_a)
        self.set_requires_grad(self.D, True)
        self.opt_D.zero_grad()
        pred_fake = self.D(torch.cat((real_a, fake_b), 1).detach())
        loss_d_fake = self.bce(pred_fake, torch.zeros_like(pred_fake))
        pred_real = self.D(torch.cat((real_a, real_b), 1))
        loss_d_real = self.bce(pred_real, torch.ones_like(pred_real))
        ((loss_d_fake + loss_d_real) * 0.5).backward()
        self.opt_D.step()
        self.set_requires_grad(self.D, False)
        self.opt_G.zero_grad()
        pred_fake = self.D(torch.cat((real_a, fake_b), 1))
        loss_g = self.bce(pred_fake, torch.ones_like(pred_fake)) + self.l1(fake_b, real_b) * 100.0
        loss_g.backward()
        self.opt_G.step()

    def fill_cache(self):
        pass  # nothing is kept between items


class OursRunner:
    """`Trainer`'s own loader and step, as `pipeline.stages.train` runs them (with `train` overrides)."""

    def __init__(self, folder: Path, size: int, batch: int, ngf: int | None = None, **train):
        from pix2pix.data import PairedDataset
        from pix2pix.train import Trainer

        cfg = _config(size, batch, **train)
        if ngf:
            cfg.model.ngf = cfg.model.ndf = ngf
        self.data = PairedDataset(folder, cfg.data)
        self.trainer = Trainer(
            cfg, self.data, Path(tempfile.mkdtemp(prefix="p2p-speed-")), progress=False, sample_count=1
        )
        self.trainer.model.train()
        self.epoch = 0
        self.it = iter(self.trainer.loader)

    def next_batch(self):
        try:
            return next(self.it)
        except StopIteration:
            self.epoch += 1
            self.trainer.sampler.set_epoch(self.epoch)
            self.it = iter(self.trainer.loader)
            return next(self.it)

    def step(self):
        batch = self.next_batch()
        device = self.trainer.device
        self.trainer.model.train_step(
            batch["input"].to(device, non_blocking=True), batch["target"].to(device, non_blocking=True)
        )

    def fill_cache(self):
        for i in range(len(self.data)):
            self.data.decoded(i)


def _tree_pss_mb() -> float:
    import psutil

    me = psutil.Process()
    total = 0
    for p in [me, *me.children(recursive=True)]:
        try:
            total += p.memory_full_info().pss
        except psutil.Error:
            pass
    return total / 2**20


def worker(kind: str, folder: str, size: int, batch: int, conn) -> None:
    import warnings

    import torch

    warnings.filterwarnings("ignore", message="This DataLoader will create")  # 4 workers on 2 cores: on purpose

    runner = (
        TextbookRunner(Path(folder), size, batch)
        if kind == "textbook"
        else OursRunner(Path(folder), size, batch, **OURS[kind])
    )
    flops = 0
    if kind == "ours-fp32":  # counted in float32 (the same work in every variant)
        from benchmarks.common import count_flops

        flops = count_flops(runner.step)
    conn.send({"ready": True, "flops": flops, "threads": torch.get_num_threads()})
    while True:
        cmd, n = conn.recv()
        if cmd == "steps":
            times = []
            for _ in range(n):
                t = time.perf_counter()
                runner.step()
                times.append(time.perf_counter() - t)
            conn.send(times)
        elif cmd == "memory":
            runner.fill_cache()
            peak, done = [0.0], threading.Event()

            def sample(peak=peak, done=done):
                while not done.is_set():
                    peak[0] = max(peak[0], _tree_pss_mb())
                    time.sleep(0.05)

            th = threading.Thread(target=sample)
            th.start()
            for _ in range(n):
                runner.step()
            done.set()
            th.join()
            conn.send(peak[0])
        else:
            conn.send(None)
            return


def _recv(conn, proc):
    """The worker's answer; a clear error instead of a hang when the worker died."""
    while not conn.poll(1.0):
        if not proc.is_alive():
            raise RuntimeError(f"benchmark worker {proc.name} died (exit code {proc.exitcode}); its traceback is above")
    return conn.recv()


def run_config(
    folder: Path,
    size: int,
    batch: int,
    rounds: int,
    steps: int,
    warmup: int,
    peak_gflops: float,
    variants: tuple[str, ...] = ("textbook", "ours-fp32", "ours"),
) -> dict:
    from benchmarks.common import median

    ctx = mp.get_context("spawn")
    procs, conns, info = {}, {}, {}
    if "ours-fp32" not in variants:
        variants = (*variants, "ours-fp32")  # it counts the FLOPs
    for kind in variants:
        parent, child = ctx.Pipe()
        procs[kind] = ctx.Process(target=worker, args=(kind, str(folder), size, batch, child), name=kind)
        procs[kind].start()
        conns[kind] = parent
        info[kind] = _recv(parent, procs[kind])  # built (one at a time, so set-up does not overlap)
    try:
        for kind in conns:  # warm-up
            conns[kind].send(("steps", warmup))
            _recv(conns[kind], procs[kind])
        times = {k: [] for k in conns}
        for r in range(rounds):
            order = variants if r % 2 == 0 else variants[::-1]
            for kind in order:
                conns[kind].send(("steps", steps))
                times[kind] += _recv(conns[kind], procs[kind])
        memory = {}
        for kind in conns:
            conns[kind].send(("memory", 3))
            memory[kind] = _recv(conns[kind], procs[kind])
    finally:
        for kind in conns:
            try:
                conns[kind].send(("stop", 0))
                _recv(conns[kind], procs[kind])
            except (OSError, EOFError, RuntimeError):
                pass
            procs[kind].join(timeout=30)
            if procs[kind].is_alive():
                procs[kind].kill()
    flops = info["ours-fp32"]["flops"]
    result = {
        "size": size,
        "batch": batch,
        "gflop_per_step": flops / 1e9,
        "peak_gflops": peak_gflops,
        "variants": variants,
    }
    for kind in variants:
        m = median(times[kind])
        result[kind] = {
            "s_per_step": m,
            "images_per_s": batch / m,
            "gflops": flops / m / 1e9,
            "peak_pss_mb": memory[kind],
            "n": len(times[kind]),
        }
        if "textbook" in variants:
            result[kind]["speedup"] = result["textbook"]["s_per_step"] / m
    return result


def main(argv=None) -> None:
    from benchmarks.common import machine, matmul_peak_gflops, paired_train_folder

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["256x1", "128x4"], help="SIZExBATCH")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=4, help="steps per turn")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--variants", nargs="+", default=["textbook", "ours-fp32", "ours"], choices=["textbook", *OURS])
    args = ap.parse_args(argv)

    folder = paired_train_folder()
    peak = matmul_peak_gflops()
    print(f"machine: {machine()}\ndata: {folder}\nfloat32 matmul peak: {peak:.0f} GFLOP/s")
    for spec in args.configs:
        size, batch = (int(v) for v in spec.lower().split("x"))
        r = run_config(folder, size, batch, args.rounds, args.steps, args.warmup, peak, tuple(args.variants))
        print(
            f"\n{size}x{size}, batch {batch}: {r['gflop_per_step']:.1f} GFLOP per step (fp32 count); "
            f"median of {r['ours-fp32']['n']} alternating steps each"
        )
        for kind in r["variants"]:
            k = r[kind]
            vs = f"  x{k['speedup']:.2f} vs textbook" if "speedup" in k else ""
            print(
                f"  {kind:15s} {k['s_per_step']:6.3f} s/step  {k['images_per_s']:6.2f} images/s  "
                f"{k['gflops']:5.0f} GFLOP/s ({k['gflops'] / peak:4.0%} of fp32 matmul peak)  peak PSS "
                f"{k['peak_pss_mb']:6.0f} MB{vs}"
            )


if __name__ == "__main__":
    main()
