"""The pix2pix model and its update: generator, discriminator, optimisers, one training step.

One iteration = one discriminator update on (input, real) vs (input, G(input)), then one
generator update on the GAN loss (fooling D) plus lambda * L1 to the target (plus, with
`model.lambda_feat`, pix2pixHD's matching of D's features). Both networks use Adam and a
schedule that keeps the learning rate for `epochs` and decays it linearly to zero over
`epochs_decay` more. With `train.ema`, an exponential moving average of G's weights is kept
beside G (warmed up, see `ema_decay`) and is the generator that validation, sample grids and
export use. The loop around it (data, checkpoints, callbacks) is `pix2pix.train.Trainer`.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from .config import Config
from .distributed import DistContext
from .losses import GANLoss, coarse_l1_loss, discriminator_loss, feature_matching_loss, l1_loss, ssim_loss
from .networks import build_discriminator, build_generator, count_parameters
from .performance import autocast_dtype, use_channels_last

# What one training step reports, in this order: the keys of `train_step`'s result, of the
# loss metrics sent to callbacks (MLflow, DVC metrics and plots) and of metrics/train.json.
# G_feat only when feature matching is on (model.lambda_feat > 0), G_SSIM only with train.lambda_ssim,
# G_L1_coarse only with train.lambda_l1_coarse.
# G_cycle and G_idt: the unpaired model's (pix2pix.unpaired), instead of G_L1.
LOSS_NAMES = ("G_GAN", "G_L1", "D_real", "D_fake", "G_feat", "G_SSIM", "G_L1_coarse", "G_cycle", "G_idt")


def linear_decay(epochs: int, epochs_decay: int):
    """LR multiplier for epoch e: 1 for the first `epochs`, then linear towards 0."""

    def factor(epoch: int) -> float:
        return 1.0 - max(0, epoch + 1 - epochs) / float(epochs_decay + 1)

    return factor


def ema_decay(decay: float, updates: int) -> float:
    """The decay of the EMA update that follows `updates` earlier ones: TensorFlow's warm-up,
    min(decay, (1 + n) / (10 + n)). Without it the random init keeps the weight decay ** n in the
    average (0.37 after 1,000 steps at 0.999): a short run's average is mostly noise. With it the
    average spans about the last tenth of the steps until that reaches 1 / (1 - decay)."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


def build_model(cfg: Config, device: torch.device) -> nn.Module:
    """The model `model.kind` names: `Pix2Pix` (paired) or `CycleGAN` (unpaired); the trainer
    drives either through the same methods."""
    if cfg.model.kind == "unpaired":
        from .unpaired import CycleGAN

        return CycleGAN(cfg, device)
    return Pix2Pix(cfg, device)


class GANModel(nn.Module):
    """What the trainer drives in both kinds of model (`Pix2Pix`, `pix2pix.unpaired.CycleGAN`):
    the generator to judge (`G`, or its average `G_ema`), mixed precision, and the learning
    rates of `opt_G` / `opt_D` with their schedulers. Subclasses build those and `train_step`."""

    def train(self, mode: bool = True) -> GANModel:
        super().train(mode)
        if self.G_ema is not None:
            self.G_ema.eval()  # an average is never trained: no dropout, BatchNorm statistics copied
        return self

    @property
    def inference_G(self) -> nn.Module:
        """The generator to judge and export: the EMA one when kept, else G."""
        return self.G_ema if self.G_ema is not None else self.G

    ema_updates = 0  # how many updates the average has had: its warm-up (`ema_decay`)

    def average_of_G(self) -> nn.Module | None:
        """With `train.ema`, the EMA generator (a copy of G, to call after G is built): weights
        averaged after every G step, buffers (BatchNorm's running statistics) copied from G,
        always in eval mode, never trained or wrapped."""
        if self.cfg.train.ema <= 0:
            return None
        return copy.deepcopy(self.G).eval().requires_grad_(False)

    @torch.no_grad()
    def update_ema(self) -> None:
        """ema = d * ema + (1 - d) * G for every weight, d = ema_decay(train.ema, updates so far);
        G's buffers copied as they are."""
        if self.G_ema is None:
            return
        ema, live = list(self.G_ema.parameters()), list(self.G.parameters())
        torch._foreach_lerp_(ema, live, 1.0 - ema_decay(self.cfg.train.ema, self.ema_updates))
        self.ema_updates += 1
        for ema_buffer, buffer in zip(self.G_ema.buffers(), self.G.buffers(), strict=True):
            ema_buffer.copy_(buffer)

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def schedulers_step(self) -> None:
        self.sched_G.step()
        self.sched_D.step()

    def set_lr_factor(self, factor: float) -> None:
        """Both learning rates at `factor` times their base (a time budget's schedule)."""
        t = self.cfg.train
        for opt, base in ((self.opt_G, t.lr), (self.opt_D, t.lr if t.lr_D is None else t.lr_D)):
            for group in opt.param_groups:
                group["lr"] = base * factor

    def training_state(self) -> dict[str, Any]:
        """Everything exact resume needs that both kinds share; subclasses add their own parts."""
        extra = {}
        if self.G_ema is not None:
            extra = {"generator_ema": self.G_ema.state_dict(), "ema_updates": self.ema_updates}
        return {
            **extra,
            "generator": self.G.state_dict(),
            "discriminator": self.D.state_dict(),
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "sched_G": self.sched_G.state_dict(),
            "sched_D": self.sched_D.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.G.load_state_dict(state["generator"])
        self.D.load_state_dict(state["discriminator"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.sched_G.load_state_dict(state["sched_G"])
        self.sched_D.load_state_dict(state["sched_D"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.G_ema is not None:  # a run that turned EMA on when resumed starts its average at G
            self.G_ema.load_state_dict(state.get("generator_ema", state["generator"]))
            # ... and its warm-up at 0; a checkpoint from before the warm-up existed is past it.
            self.ema_updates = state.get("ema_updates", 10**9 if "generator_ema" in state else 0)

    @property
    def lr(self) -> float:
        return self.opt_G.param_groups[0]["lr"]


class Pix2Pix(GANModel):
    """Generator `G`, discriminator `D` and, with `train.ema`, the averaged generator `G_ema`
    (its only submodules), their optimisers and schedulers, and one training step."""

    kind = "paired"

    def __init__(self, cfg: Config, device: torch.device):
        super().__init__()
        self.cfg = cfg
        self.device = device
        d, m, t = cfg.data, cfg.model, cfg.train
        # Mixed precision: bf16 on CUDA and on CPUs that have it natively (pix2pix/performance.py).
        self.amp_dtype = autocast_dtype(t.amp, device)
        self.channels_last = use_channels_last(t.channels_last, device, self.amp_dtype)
        memory_format = torch.channels_last if self.channels_last else torch.preserve_format
        self.G = build_generator(m, d.input_nc, d.output_nc, d.crop_size).to(device, memory_format=memory_format)
        self.D = build_discriminator(m, d.input_nc, d.output_nc).to(device, memory_format=memory_format)
        self.G_ema = self.average_of_G()
        # What train_step calls: G and D themselves, or DDP/torch.compile wrappers of them
        # (see `accelerate`). A plain dict, so the wrappers are not registered as submodules
        # and state_dict() holds each weight once, under G. and D.
        self.runners: dict[str, nn.Module] = {"G": self.G, "D": self.D, "D_frozen": self.D}
        self.gan_loss = GANLoss(t.gan_mode)
        # Fused Adam: one pass over each parameter tensor instead of ~10 (measured 5x faster
        # on CPU for the 57M parameters, ~0.15 s of every 256x256 step).
        fused = device.type in ("cpu", "cuda")
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=t.lr, betas=(t.beta1, t.beta2), fused=fused)
        lr_d = t.lr if t.lr_D is None else t.lr_D
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=lr_d, betas=(t.beta1, t.beta2), fused=fused)
        decay = linear_decay(t.epochs, t.epochs_decay)
        self.sched_G = torch.optim.lr_scheduler.LambdaLR(self.opt_G, decay)
        self.sched_D = torch.optim.lr_scheduler.LambdaLR(self.opt_D, decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    def parameter_counts(self) -> dict[str, int]:
        return {"params_G": count_parameters(self.G), "params_D": count_parameters(self.D)}

    def accelerate(self, ctx: DistContext) -> None:
        """Wrap for multi-process (DDP) and/or compiled execution; call after loading state."""
        t = self.cfg.train
        run = self.runners
        if ctx.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            if t.sync_batchnorm and self.device.type == "cuda" and self.cfg.model.norm == "batch":
                # Same Parameter objects, so the optimisers stay valid.
                self.G = nn.SyncBatchNorm.convert_sync_batchnorm(self.G)
                self.D = nn.SyncBatchNorm.convert_sync_batchnorm(self.D)
                run["D_frozen"] = self.D
            ids = [self.device.index] if self.device.type == "cuda" else None
            run["G"] = DDP(self.G, device_ids=ids)
            run["D"] = DDP(self.D, device_ids=ids)
        if t.compile:
            run["G"] = torch.compile(run["G"])
            run["D"] = torch.compile(run["D"])
            run["D_frozen"] = torch.compile(self.D) if ctx.enabled else run["D"]

    def train_step(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """One D update then one G update; returns the detached losses named in LOSS_NAMES."""
        run = self.runners
        if self.channels_last:
            real_a = real_a.contiguous(memory_format=torch.channels_last)
            real_b = real_b.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            fake_b = run["G"](real_a)

        m = self.cfg.model
        t = self.cfg.train
        matching, structural, coarse = m.lambda_feat > 0, t.lambda_ssim > 0, t.lambda_l1_coarse > 0
        # Discriminator: real pairs towards 1, generated pairs towards 0.
        self.D.requires_grad_(True)
        self.opt_D.zero_grad(set_to_none=True)
        with self.autocast():
            pred_fake = run["D"](torch.cat([real_a, fake_b.detach()], 1))
            pred_real = run["D"](torch.cat([real_a, real_b], 1), matching)
            if matching:  # the real pair's features: the generator's targets below
                pred_real, real_feats = pred_real
            loss_d, loss_d_real, loss_d_fake = discriminator_loss(self.gan_loss, pred_real, pred_fake)
        self.scaler.scale(loss_d).backward()
        self.scaler.step(self.opt_D)

        # Generator: fool D, and stay close to the target in L1. D's weights get no gradient
        # (so under DDP this pass bypasses D's wrapper: it has nothing to all-reduce).
        self.D.requires_grad_(False)
        self.opt_G.zero_grad(set_to_none=True)
        with self.autocast():
            pred_fake = run["D_frozen"](torch.cat([real_a, fake_b], 1), matching)
            if matching:
                pred_fake, fake_feats = pred_fake
            loss_g_gan = self.gan_loss(pred_fake, True, for_discriminator=False)
            loss_g_l1 = l1_loss(fake_b, real_b, t.lambda_l1)
            loss_g = loss_g_gan + loss_g_l1
            if matching:
                loss_g_feat = feature_matching_loss(real_feats, fake_feats, m.n_layers_D, m.lambda_feat)
                loss_g = loss_g + loss_g_feat
            if structural:
                loss_g_ssim = ssim_loss(fake_b, real_b, t.lambda_ssim)
                loss_g = loss_g + loss_g_ssim
            if coarse:
                loss_g_coarse = coarse_l1_loss(fake_b, real_b, t.l1_coarse_factor, t.lambda_l1_coarse)
                loss_g = loss_g + loss_g_coarse
        self.scaler.scale(loss_g).backward()
        self.scaler.step(self.opt_G)
        self.scaler.update()
        self.update_ema()
        losses = {"G_GAN": loss_g_gan, "G_L1": loss_g_l1, "D_real": loss_d_real, "D_fake": loss_d_fake}
        if matching:
            losses["G_feat"] = loss_g_feat
        if structural:
            losses["G_SSIM"] = loss_g_ssim
        if coarse:
            losses["G_L1_coarse"] = loss_g_coarse
        return {name: loss.detach() for name, loss in losses.items()}
