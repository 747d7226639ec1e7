"""The unpaired model (CycleGAN, Zhu et al. 2017) behind the same interface as `Pix2Pix`.

Two generators, G: A -> B (`G`, the one that is judged and exported) and F: B -> A (`G_BA`),
and two unconditional discriminators, `D` on domain B and `D_A` on domain A. One iteration, in
the reference's order: the generators' update (adversarial loss of each direction, cycle L1
F(G(a)) ~ a weighted `lambda_A` and G(F(b)) ~ b weighted `lambda_B`, and identity L1 G(b) ~ b,
F(a) ~ a weighted `lambda_identity` times those), then the discriminators' update on real
images against fakes drawn from an `ImagePool` of past generated images. The trainer, its data
order, exact resume (the pools' images and random state included), AMP/bf16, channels_last,
EMA, callbacks and SIGTERM handling are the paired model's, unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .config import Config
from .distributed import DistContext
from .losses import GANLoss, cycle_loss, discriminator_loss, identity_loss
from .model import GANModel, linear_decay
from .networks import build_discriminator, build_generator, count_parameters
from .performance import autocast_dtype, use_channels_last


class ImagePool:
    """A buffer of up to `size` past generated images (Shrivastava et al. 2017, as CycleGAN uses
    it): each new image is returned as it is while the pool fills; after that, half the time it
    replaces a stored one at random and the stored one is returned instead. The draws come from
    its own seeded generator, and `state_dict` holds the images and that generator's state, so a
    resumed run gets exactly the fakes an uninterrupted one would. size 0: no pool."""

    def __init__(self, size: int, seed: int):
        self.size = size
        self.images: list[torch.Tensor] = []
        self.generator = torch.Generator().manual_seed(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images.detach()
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand((), generator=self.generator) < 0.5:
                i = int(torch.randint(0, self.size, (), generator=self.generator))
                out.append(self.images[i].clone())
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state_dict(self) -> dict[str, Any]:
        return {"images": [im.cpu() for im in self.images], "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.images = [im.to(device) for im in state["images"]]
        self.generator.set_state(state["generator"])


class CycleGAN(GANModel):
    """`G` (A -> B), `G_BA`, `D` (judges B), `D_A` (judges A) and, with `train.ema`, `G_ema`;
    one optimiser for both generators and one for both discriminators, as the reference."""

    kind = "unpaired"

    def __init__(self, cfg: Config, device: torch.device):
        super().__init__()
        self.cfg = cfg
        self.device = device
        d, m, t = cfg.data, cfg.model, cfg.train
        self.amp_dtype = autocast_dtype(t.amp, device)
        self.channels_last = use_channels_last(t.channels_last, device, self.amp_dtype)
        fmt = torch.channels_last if self.channels_last else torch.preserve_format
        self.G = build_generator(m, d.input_nc, d.output_nc, d.crop_size).to(device, memory_format=fmt)
        self.G_BA = build_generator(m, d.output_nc, d.input_nc, d.crop_size).to(device, memory_format=fmt)
        # Unconditional: each discriminator sees one domain's images alone (no input to stack).
        self.D = build_discriminator(m, 0, d.output_nc).to(device, memory_format=fmt)
        self.D_A = build_discriminator(m, 0, d.input_nc).to(device, memory_format=fmt)
        self.G_ema = self.average_of_G()
        # What train_step calls (DDP/compile wrappers, see `accelerate`); the generators' pass
        # goes through the bare discriminators, which get no gradient then (nothing to all-reduce).
        self.runners: dict[str, nn.Module] = {
            "G": self.G, "G_BA": self.G_BA, "D": self.D, "D_A": self.D_A, "D_frozen": self.D, "D_A_frozen": self.D_A
        }  # fmt: skip
        self.gan_loss = GANLoss(t.gan_mode)
        fused = device.type in ("cpu", "cuda")
        betas = (t.beta1, t.beta2)
        self.opt_G = torch.optim.Adam([*self.G.parameters(), *self.G_BA.parameters()], t.lr, betas, fused=fused)
        lr_d = t.lr if t.lr_D is None else t.lr_D
        self.opt_D = torch.optim.Adam([*self.D.parameters(), *self.D_A.parameters()], lr_d, betas, fused=fused)
        decay = linear_decay(t.epochs, t.epochs_decay)
        self.sched_G = torch.optim.lr_scheduler.LambdaLR(self.opt_G, decay)
        self.sched_D = torch.optim.lr_scheduler.LambdaLR(self.opt_D, decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        # Pools of past fakes per domain, each with its own seeded draws.
        self.pool_B = ImagePool(t.pool_size, t.seed * 2 + 1)
        self.pool_A = ImagePool(t.pool_size, t.seed * 2 + 2)
        self.distributed = False  # set by `accelerate` under DDP

    def parameter_counts(self) -> dict[str, int]:
        return {
            "params_G": count_parameters(self.G) + count_parameters(self.G_BA),
            "params_D": count_parameters(self.D) + count_parameters(self.D_A),
        }

    def accelerate(self, ctx: DistContext) -> None:
        """DDP and/or torch.compile wrappers. Each network runs more than once before a backward
        (a cycle passes through both generators), which DDP supports with a static graph."""
        run = self.runners
        self.distributed = ctx.enabled
        if ctx.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            for name in ("G", "G_BA", "D", "D_A"):
                run[name] = DDP(run[name], device_ids=ids, static_graph=True)
        if self.cfg.train.compile:
            for name in run:
                run[name] = torch.compile(run[name])

    def train_step(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """One update of both generators, then of both discriminators; `real_a` and `real_b`
        are unrelated images of the two domains. Returns the detached losses (each summed over
        the two directions; D_real / D_fake averaged over the two discriminators)."""
        run, t = self.runners, self.cfg.train
        if self.channels_last:
            real_a = real_a.contiguous(memory_format=torch.channels_last)
            real_b = real_b.contiguous(memory_format=torch.channels_last)
        identity = t.lambda_identity > 0
        # Generators: the discriminators' weights get no gradient here. Each term's graph is
        # backpropagated as soon as it is built (gradients add up in .grad), so at most one
        # round trip's activations are alive at a time instead of all six generator passes' —
        # the same gradients, in well under half the memory. Under DDP one backward of the sum
        # (a static graph allows one per step).
        self.D.requires_grad_(False)
        self.D_A.requires_grad_(False)
        self.opt_G.zero_grad(set_to_none=True)
        one_backward = self.distributed
        total = []

        def backward(*losses):
            loss = sum(losses)
            if one_backward:
                total.append(loss)
            else:
                self.scaler.scale(loss).backward()

        gan = self.gan_loss
        with self.autocast():  # A -> B -> A: G fools D (on B), F brings it back
            fake_b = run["G"](real_a)
            gan_b = gan(run["D_frozen"](fake_b), True, for_discriminator=False)
            cycle_a = cycle_loss(run["G_BA"](fake_b), real_a, t.lambda_A)
        backward(gan_b, cycle_a)
        with self.autocast():  # B -> A -> B
            fake_a = run["G_BA"](real_b)
            gan_a = gan(run["D_A_frozen"](fake_a), True, for_discriminator=False)
            cycle_b = cycle_loss(run["G"](fake_a), real_b, t.lambda_B)
        backward(gan_a, cycle_b)
        loss_gan, loss_cycle = gan_b.detach() + gan_a.detach(), cycle_a.detach() + cycle_b.detach()
        if identity:
            with self.autocast():
                idt_b = identity_loss(run["G"](real_b), real_b, t.lambda_B * t.lambda_identity)
            backward(idt_b)
            with self.autocast():
                idt_a = identity_loss(run["G_BA"](real_a), real_a, t.lambda_A * t.lambda_identity)
            backward(idt_a)
            loss_idt = idt_b.detach() + idt_a.detach()
        if one_backward:
            self.scaler.scale(sum(total)).backward()
        self.scaler.step(self.opt_G)
        del total[:]

        # Discriminators: real images towards 1, pooled past fakes towards 0; one at a time.
        self.D.requires_grad_(True)
        self.D_A.requires_grad_(True)
        self.opt_D.zero_grad(set_to_none=True)
        pooled_b, pooled_a = self.pool_B.query(fake_b), self.pool_A.query(fake_a)
        with self.autocast():
            d_b, real_b_loss, fake_b_loss = discriminator_loss(gan, run["D"](real_b), run["D"](pooled_b))
        backward(d_b)
        with self.autocast():
            d_a, real_a_loss, fake_a_loss = discriminator_loss(gan, run["D_A"](real_a), run["D_A"](pooled_a))
        backward(d_a)
        if one_backward:
            self.scaler.scale(sum(total)).backward()
        self.scaler.step(self.opt_D)
        self.scaler.update()
        self.update_ema()
        losses = {
            "G_GAN": loss_gan,
            "G_cycle": loss_cycle,
            "D_real": 0.5 * (real_b_loss + real_a_loss),
            "D_fake": 0.5 * (fake_b_loss + fake_a_loss),
        }
        if identity:
            losses["G_idt"] = loss_idt
        return {name: loss.detach() for name, loss in losses.items()}

    @torch.no_grad()
    def cycle_errors(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, float]:
        """Mean absolute cycle error per direction, in [0, 1] image units: A -> B -> A and
        B -> A -> B (what unpaired validation and evaluation report)."""
        g, f = self.inference_G, self.G_BA
        modes = g.training, f.training
        g.eval(), f.eval()
        try:
            with self.autocast():
                aba = f(g(real_a)).float()
                bab = g(f(real_b)).float()
        finally:
            g.train(modes[0]), f.train(modes[1])
        return {
            "cycle_A": float((aba - real_a).abs().mean() / 2),
            "cycle_B": float((bab - real_b).abs().mean() / 2),
        }

    def training_state(self) -> dict[str, Any]:
        return {
            **super().training_state(),
            "kind": self.kind,
            "generator_BA": self.G_BA.state_dict(),  # `generator` is A -> B: what loading, export and the page use
            "discriminator_A": self.D_A.state_dict(),
            "pools": {"B": self.pool_B.state_dict(), "A": self.pool_A.state_dict()},
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        super().load_training_state(state)
        self.G_BA.load_state_dict(state["generator_BA"])
        self.D_A.load_state_dict(state["discriminator_A"])
        self.pool_B.load_state_dict(state["pools"]["B"], self.device)
        self.pool_A.load_state_dict(state["pools"]["A"], self.device)
