"""Training: the loop around the pix2pix update (`pix2pix.model.Pix2Pix`).

`Trainer.fit` runs epochs of steps over a deterministic, resumable data order, reports to
callbacks, validates after each epoch and keeps `out_dir/last.pt` as the exact resume point and
`out_dir/best.pt` as the state where the smoothed validation score was best.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable
from enum import Enum
from pathlib import Path
from typing import Any

import torch

from . import distributed
from .budget import TimeBudget
from .callbacks import Callback, CallbackList
from .checkpoint import load_checkpoint, save_checkpoint
from .config import Config, patch_receptive_fields
from .data import EpochSampler, PairedDataset, collate, loader_workers, training_loader
from .distributed import select_device
from .errors import CheckpointError, ConfigError, TrainingDiverged
from .grid import comparison_grid
from .model import LOSS_NAMES, Pix2Pix, build_model, linear_decay
from .performance import configure_backends, flush_denormals, retain_freed_memory
from .runstate import StopRequest, rng_state, set_rng_state, with_defaults
from .selection import BestSelector
from .validation import validation_scores

__all__ = ["LOSS_NAMES", "Pix2Pix", "Status", "Trainer", "TrainingDiverged", "linear_decay", "select_device"]


class Status(str, Enum):
    """How `fit` ended: the whole schedule, at `max_steps`, or on SIGINT/SIGTERM."""

    FINISHED = "finished"
    STOPPED = "stopped"
    INTERRUPTED = "interrupted"


def _check_data_kind(cfg: Config, *datasets) -> None:
    """An unpaired model is trained on two unrelated domains, never on pairs (it would see each
    image with its partner), and a paired model on pairs; validation of an unpaired model may
    use real pairs (scored against them)."""
    train = datasets[0]
    unpaired_data = not getattr(train, "paired", True)
    if cfg.model.kind == "unpaired" and not unpaired_data:
        raise ConfigError(
            "model.kind: unpaired training got paired data; give it two domain folders (trainA/ + trainB/), "
            "or split the pairs apart on purpose (data.pairs_apart)"
        )
    if cfg.model.kind == "paired" and (unpaired_data or any(not getattr(d, "paired", True) for d in datasets if d)):
        raise ConfigError("model.kind: paired training got two unpaired domains; set model.kind unpaired")


class Trainer:
    """The training loop: data order, checkpoints with exact resume, validation, callbacks.

    Construction builds everything (device, model, data order, loader) and then restores the
    position in the schedule: from `out_dir/last.pt` when `resume` and it exists, else from the
    seed. `out_dir/last.pt` is the resume point; it is rewritten atomically at the end of every
    epoch, every `train.checkpoint_every` steps, on SIGINT/SIGTERM and at `max_steps`.
    """

    def __init__(
        self,
        cfg: Config,
        train_data: PairedDataset,
        out_dir: Path | str,
        val_data: PairedDataset | None = None,
        callbacks: Iterable[Callback] = (),
        resume: bool = True,
        progress: bool = True,
        sample_count: int = 4,
        val_images: int = 64,
    ):
        self.cfg = cfg.validate()
        _check_data_kind(cfg, train_data, val_data)
        self.out_dir = Path(out_dir)
        self.train_data, self.val_data = train_data, val_data
        self.val_images = val_images
        # Under torchrun every rank trains; rank 0 alone reports, validates and checkpoints.
        self.dist = distributed.context()
        self.callbacks = CallbackList(callbacks if self.dist.is_main else ())
        self.progress = progress and self.dist.is_main

        # -- building: device, model, data order and loader --------------------------------
        self.device = self._prepare_device()
        torch.manual_seed(cfg.train.seed)  # network init (identical on every rank) and dropout
        self.model = build_model(cfg, self.device)
        self.sampler = EpochSampler(
            len(train_data), seed=cfg.train.seed, rank=self.dist.rank, num_replicas=self.dist.world_size
        )
        self.num_workers = loader_workers(cfg.train.num_workers, train_data)
        if self.num_workers:  # each worker would grow its own cache: decode every item instead
            train_data.cache_enabled = False
        self.loader = training_loader(
            train_data,
            self.sampler,
            cfg.train.batch_size,
            self.num_workers,
            self.device.type == "cuda" and cfg.train.pin_memory,
            seed=cfg.train.seed,
        )
        self.steps_per_epoch = math.ceil(math.ceil(len(train_data) / self.dist.world_size) / cfg.train.batch_size)
        self.total_epochs = cfg.train.epochs + cfg.train.epochs_decay
        samples_from = val_data if val_data is not None else train_data
        self.sample_batch = collate([samples_from[i] for i in range(min(sample_count, len(samples_from)))])

        # -- the position in the schedule, then restoring it ----------------------------------
        self.epoch, self.batches_done, self.step = 0, 0, 0
        self.last_losses: dict[str, torch.Tensor] = {}  # of the latest step, named as LOSS_NAMES
        self.resumed_from: int | None = None  # the step last.pt was restored at, if it was
        self.selector = BestSelector(cfg.train.best_metric, cfg.train.best_window)  # chooses best.pt
        self.budget = TimeBudget(cfg.train.budget_minutes, cfg.train.epochs, cfg.train.epochs_decay)
        # fit()'s bookkeeping: the step it stops at, the images/s window, the progress bar.
        self._target = self.total_steps
        self._window_start, self._window_images = 0.0, 0
        self._bar: Any = None
        self._restore(resume)
        self.model.accelerate(self.dist)

    def _prepare_device(self) -> torch.device:
        """Join torchrun's process group (if any) and set the backend switches for the device."""
        t = self.cfg.train
        device = distributed.setup(self.dist, select_device(t.device))
        configure_backends(device, t.cudnn_benchmark)
        if device.type == "cpu" and t.retain_memory:
            retain_freed_memory()
        if device.type == "cpu" and t.flush_denormal:
            flush_denormals()
        return device

    def _restore(self, resume: bool) -> None:
        """Resume from last.pt when asked and present (weights, optimizers, RNG, position); a
        fresh run keeps the seeded state. Either way, leftovers of a killed write go first."""
        if self.dist.is_main:
            for stale in self.out_dir.glob(".*.tmp"):  # a kill during a checkpoint write
                stale.unlink(missing_ok=True)
        if resume and self.last_checkpoint.is_file():
            self.resume_from(self.last_checkpoint)
        if self.dist.enabled:  # different dropout masks on each rank, reproducible on resume
            torch.manual_seed(self.cfg.train.seed + 7919 * self.dist.rank + self.step)

    @property
    def last_checkpoint(self) -> Path:
        return self.out_dir / "last.pt"

    @property
    def best_checkpoint(self) -> Path:
        return self.out_dir / "best.pt"

    @property
    def receptive_fields_D(self) -> list[int]:
        """What one output unit of each discriminator scale sees, in input pixels (finest first)."""
        m = self.cfg.model
        return patch_receptive_fields(m.n_layers_D, m.num_D) if m.netD == "patch" else [1]

    # -- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            **self.model.training_state(),
            "config": self.cfg.to_dict(),
            "epoch": self.epoch,
            "batches_done": self.batches_done,
            "step": self.step,
            "rng": rng_state(),
            "selection": self.selector.state_dict(),
            "budget_elapsed_s": self.budget.elapsed(),
            "format": 1,
        }

    def save(self, path: Path | None = None) -> Path:
        """Checkpoint atomically; a diverged model is never written over a good one."""
        path = path or self.last_checkpoint
        self._check_finite()
        if not self.dist.is_main:
            return path
        save_checkpoint(self.state_dict(), path)
        self.callbacks.on_checkpoint(path, self.step)
        return path

    def resume_from(self, path: Path) -> None:
        state = load_checkpoint(path, map_location=self.device)
        saved = with_defaults(state["config"])
        if saved["model"]["kind"] != self.cfg.model.kind:
            raise CheckpointError(
                f"{path}: is a {saved['model']['kind']} checkpoint and this run is {self.cfg.model.kind}; "
                f"resume it with model.kind {saved['model']['kind']}, or train into a new folder"
            )
        for section in ("data", "model"):
            if saved.get(section) != self.cfg.to_dict()[section]:
                raise CheckpointError(
                    f"{path}: was trained with different {section} settings ({saved.get(section)}); "
                    "train into a new folder or pass resume=False (--no-resume) to start over"
                )
        self.model.load_training_state(state)
        self.epoch, self.batches_done, self.step = state["epoch"], state["batches_done"], state["step"]
        self.resumed_from = self.step
        if "selection" in state:
            self.selector.load_state_dict(state["selection"])
        self.budget.spent_before = state.get("budget_elapsed_s", 0.0)
        set_rng_state(state["rng"])

    def _rotate_epoch_checkpoint(self) -> None:
        keep = self.cfg.train.keep_checkpoints
        if keep == 0 or not self.dist.is_main:
            return
        self.save(self.out_dir / f"epoch_{self.epoch:04d}.pt")
        old = sorted(self.out_dir.glob("epoch_*.pt"))[:-keep]
        for p in old:
            p.unlink(missing_ok=True)

    # -- reporting ---------------------------------------------------------------------
    def sample_grid(self) -> torch.Tensor:
        return comparison_grid(self.model.inference_G, self.sample_batch, self.device)

    def validate(self) -> dict[str, float]:
        if self.val_data is None or not self.dist.is_main:
            return {}
        return validation_scores(self.model, self.val_data, self.val_images, self.device)

    def _check_finite(self) -> None:
        """Refuse to go on (or to checkpoint) once a loss is NaN or infinite."""
        bad = {k: float(v) for k, v in self.last_losses.items() if not torch.isfinite(v)}
        if bad:
            kept = (
                f"the last good checkpoint is {self.last_checkpoint}"
                if self.last_checkpoint.is_file()
                else "no checkpoint was written"
            )
            raise TrainingDiverged(
                f"training diverged at step {self.step}: non-finite loss {bad}; {kept}; "
                "lower train.lr, use gan_mode=lsgan, or check the data for blank images"
            )

    # -- the loop ----------------------------------------------------------------------
    @property
    def total_steps(self) -> int | None:
        """Steps of the whole schedule; None under a time budget (the clock ends the run)."""
        return None if self.budget.enabled else self.total_epochs * self.steps_per_epoch

    def fit(self, max_steps: int | None = None) -> dict[str, Any]:
        """Train to the end of the schedule (or `max_steps` global steps); returns a summary.

        Whatever the ending (finished, stopped at max_steps, SIGINT/SIGTERM), `last.pt` is
        written last and the callbacks see `on_train_end` once."""
        target = self.total_steps or math.inf
        target = target if max_steps is None else min(max_steps, target)
        self._target = target
        self.budget.start()
        self._window_start, self._window_images = time.perf_counter(), 0
        start_step = self.step
        self._announce_start()
        self._bar = self._progress_bar()
        self.model.train()
        with StopRequest() as stop:
            status = self._train_until(target, stop)
            self.save()
        self._bar.close()
        return self._finish(status, start_step)

    def _announce_start(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.callbacks.on_train_start(
            {
                "config": self.cfg.to_dict(),
                "device": str(self.device),
                "amp_dtype": str(self.model.amp_dtype).replace("torch.", "") if self.model.amp_dtype else "float32",
                **self.model.parameter_counts(),
                "receptive_fields_D": self.receptive_fields_D,
                "train_size": len(self.train_data),
                "val_size": len(self.val_data) if self.val_data is not None else 0,
                "start_step": self.step,
                "world_size": self.dist.world_size,
                "total_steps": self.total_steps,
            }
        )

    def _train_until(self, target: float, stop: StopRequest) -> Status:
        """Epochs of steps until the schedule (or the time budget) ends, `target` is reached or a
        stop is asked."""
        while (self.budget.enabled or self.epoch < self.total_epochs) and self.step < target:
            ended = self._run_epoch(target, stop)
            if ended == "stop":
                return Status.INTERRUPTED
            if ended == "budget":  # the clock ran out mid-epoch: fully decayed, validated, checkpointed
                self.model.set_lr_factor(0.0)
                self._end_epoch()
                return Status.FINISHED
            if self.batches_done < self.steps_per_epoch:  # reached `target` mid-epoch
                break
            self._end_epoch()
        return Status.FINISHED if self.total_steps is not None and self.step >= self.total_steps else Status.STOPPED

    def _run_epoch(self, target: float, stop: StopRequest) -> str | None:
        """The rest of the current epoch's steps (up to `target`); "stop" when asked to stop,
        "budget" when the time budget is spent (every rank agrees on both)."""
        self.sampler.set_epoch(self.epoch, start=self.batches_done * self.cfg.train.batch_size)
        for batch in self.loader:
            if self.budget.enabled:  # checked before each step: a resumed, spent budget trains no more
                if distributed.any_rank(self.budget.spent(), self.dist, self.device):
                    self._refuse_a_budget_shorter_than_a_step()
                    return "budget"
                self.model.set_lr_factor(self.budget.lr_factor())
            self._step(batch)
            if distributed.any_rank(stop.signal is not None, self.dist, self.device):
                return "stop"
            if self.step >= target:
                break
        return None

    def _refuse_a_budget_shorter_than_a_step(self) -> None:
        if self.step <= 1 and self.resumed_from is None:  # spent before or by the first step
            raise ConfigError(
                f"train.budget_minutes: {self.cfg.train.budget_minutes:g} min is shorter than one training step here "
                f"({self.budget.elapsed():.1f} s); give the run at least a few minutes, or train by epochs (0)"
            )

    def _step(self, batch: dict) -> None:
        """One update, then whatever is due: a report, a sample grid, a checkpoint."""
        cfg = self.cfg.train
        real_a = batch["input"].to(self.device, non_blocking=True)
        real_b = batch["target"].to(self.device, non_blocking=True)
        self.last_losses = self.model.train_step(real_a, real_b)
        self.step += 1
        self.batches_done += 1
        self._window_images += real_a.shape[0] * self.dist.world_size
        if self.step % cfg.log_every == 0 or self.step == self._target:
            self._report()
        self._bar.update(1)
        if self.step % cfg.sample_every == 0 and self.dist.is_main:
            self.callbacks.on_samples(self.step, self.sample_grid())
        if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
            self.save()

    def _report(self) -> None:
        self._check_finite()
        elapsed = time.perf_counter() - self._window_start
        logs = {k: float(v) for k, v in self.last_losses.items()}
        logs["lr"] = self.model.lr
        logs["images_per_sec"] = self._window_images / max(elapsed, 1e-9)
        self.callbacks.on_step(self.step, logs)
        self._bar.set_postfix({k: f"{v:.3g}" for k, v in logs.items()}, refresh=False)
        self._window_start, self._window_images = time.perf_counter(), 0

    def _end_epoch(self) -> None:
        """Decay the LR, validate, report, checkpoint (last.pt, best.pt when this validation's
        window is the best so far, and the rotated epoch file)."""
        self.epoch += 1
        self.batches_done = 0
        if not self.budget.enabled:  # under a budget the clock sets the rate, step by step
            self.model.schedulers_step()
        metrics = self.validate()
        self.callbacks.on_epoch_end(self.epoch, self.step, metrics)
        if self.dist.is_main and self._bar.disable:
            losses = {k: float(v) for k, v in self.last_losses.items()}
            shown = " ".join(f"{k}={v:.4g}" for k, v in {**losses, **metrics}.items())
            of = (
                f"{self.budget.elapsed() / 60:.1f}/{self.budget.seconds / 60:g} min"
                if self.budget.enabled
                else self.total_epochs
            )
            print(f"epoch {self.epoch}/{of} step {self.step}: {shown}", file=sys.stderr, flush=True)
        best = self.dist.is_main and self.selector.offer(self.step, self.epoch, metrics)
        self.save()  # last.pt knows this validation too: a resume judges the next one the same way
        if best:
            self.save(self.best_checkpoint)
        self._rotate_epoch_checkpoint()

    def _finish(self, status: Status, start_step: int) -> dict[str, Any]:
        if self.dist.is_main:
            self.callbacks.on_samples(self.step, self.sample_grid())
        summary = {
            "status": status,  # a Status (a str enum: JSON and "finished" == Status.FINISHED hold)
            "start_step": start_step,
            "step": self.step,
            "epoch": self.epoch,
            "checkpoint": str(self.last_checkpoint),
            **{k: float(v) for k, v in self.last_losses.items()},
        }
        self.callbacks.on_train_end(summary)
        return summary

    def _progress_bar(self):
        from tqdm.auto import tqdm

        return tqdm(
            total=self.total_steps,
            initial=self.step,
            desc="train",
            unit="step",
            dynamic_ncols=True,
            disable=not self.progress or not sys.stderr.isatty(),
        )
