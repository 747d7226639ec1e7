"""Stage 3: train pix2pix on the manifest's train split (CUDA when present, else CPU).

Writes models/checkpoints/ (last.pt + rotated epoch checkpoints + sample grids + the drift
reference of the training inputs, input_reference.json) and, through
dvclive (pipeline/history.py), metrics/train/metrics.json (DVC metrics) and one history file
per reported quantity for `dvc plots`.

A run killed half-way resumes from models/checkpoints/last.pt on the next `dvc repro` when
the data manifest, the data/model/train params and the training code are unchanged (their
fingerprint is kept beside the checkpoint); otherwise training starts over.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time

import torch

from pix2pix import distributed, drift
from pix2pix.callbacks import Callback, SampleSaver
from pix2pix.data import PairedDataset
from pix2pix.distributed import select_device
from pix2pix.files import atomic_write_text
from pix2pix.model import LOSS_NAMES
from pix2pix.train import Status, Trainer
from pix2pix.unpaired_data import UnpairedDataset

from ..config import load_config
from ..data.manifest import data_fingerprint, is_unpaired, read_manifest, split_domains, split_pairs
from ..imports import ROOT, project_files, relative
from ..paths import CHECKPOINTS, MANIFEST
from ..stage import StageError, run_stage
from ..tracking.callback import MlflowCallback
from ..tracking.history import DvcLiveHistory
from ..tracking.run import git_info, project_root, training_run

FINGERPRINT = CHECKPOINTS / "fingerprint.json"


def code_fingerprint() -> str:
    """SHA-256 of the code this stage runs (its project imports, pipeline/imports.py): a
    checkpoint made by other code is never resumed, so a fix to a loss or a network retrains
    from scratch."""
    h = hashlib.sha256()
    for name in relative(project_files(__spec__.name if __spec__ else "pipeline.stages.train")):
        h.update(name.encode() + b"\0" + (ROOT / name).read_bytes())
    return h.hexdigest()


def checkpoint_matches(fingerprint: dict) -> bool:
    """True when the checkpoints belong to this exact data+params+code (resume them)."""
    if FINGERPRINT.is_file() and (CHECKPOINTS / "last.pt").is_file():
        try:
            return json.loads(FINGERPRINT.read_text()) == fingerprint
        except json.JSONDecodeError:
            pass
    return False


def prepare_checkpoint_dir(fingerprint: dict) -> bool:
    """True when the checkpoints can be resumed; else wipe them and start a new folder."""
    if checkpoint_matches(fingerprint):
        return True
    shutil.rmtree(CHECKPOINTS, ignore_errors=True)
    CHECKPOINTS.mkdir(parents=True)
    atomic_write_text(FINGERPRINT, json.dumps(fingerprint, indent=2))
    return False


def training_data(cfg, manifest):
    """(train, val) as the model kind trains on them: pairs; for model.kind unpaired, the two
    domains of an unpaired manifest (validated by cycle errors), or with data.pairs_apart the
    pairs split apart (validated against the real pairs)."""
    if is_unpaired(manifest):
        if cfg.model.kind != "unpaired":
            raise StageError(f"{MANIFEST}: holds two unpaired domains (trainA/ trainB/); set model.kind: unpaired")
        train = UnpairedDataset(*split_domains(manifest, "train"), cfg.data, train=True)
        for split in ("val", "test"):
            a, b = split_domains(manifest, split)
            if a and b:
                return train, UnpairedDataset(a, b, cfg.data, train=False)
        return train, None
    train_pairs = split_pairs(manifest, "train")
    val_pairs = split_pairs(manifest, "val") or split_pairs(manifest, "test")
    val = PairedDataset(val_pairs, cfg.data, train=False) if val_pairs else None  # real pairs, either kind
    if cfg.model.kind == "paired":
        return PairedDataset(train_pairs, cfg.data, train=True), val
    if not cfg.data.pairs_apart:
        raise StageError(
            f"{MANIFEST}: holds pairs and model.kind is unpaired; train them as pairs (model.kind: paired), or "
            "unpaired on purpose with data.pairs_apart: true (the facades_unpaired preset)"
        )
    return UnpairedDataset.from_pairs(train_pairs, cfg.data, seed=cfg.train.seed), val


def main() -> None:
    config = load_config()
    cfg = config.library()
    manifest = read_manifest()
    fingerprint = {"data": data_fingerprint(), "code": code_fingerprint(), "config": cfg.to_dict()}
    # Under torchrun (see the README) rank 0 prepares the folder while the others wait.
    ctx = distributed.context()
    distributed.setup(ctx, select_device(cfg.train.device))
    resume = prepare_checkpoint_dir(fingerprint) if ctx.is_main else False
    if ctx.enabled:
        torch.distributed.barrier()
        resume = resume or checkpoint_matches(fingerprint)
    train, val = training_data(cfg, manifest)

    if not ctx.is_main:  # the other ranks only compute: no logs, files or MLflow run
        if Trainer(cfg, train, CHECKPOINTS, val_data=val, resume=resume).fit()["status"] is Status.INTERRUPTED:
            raise KeyboardInterrupt
        return
    reference = CHECKPOINTS / drift.REFERENCE_NAME  # the inputs' statistics: what batch jobs check for drift
    if not reference.is_file():
        drift.write_reference(drift.reference_of(train, cfg.data), reference)
    tags = {
        "data_fingerprint": fingerprint["data"],
        "torch": torch.__version__,
        "preset": config.preset,
        "recipe": config.recipe,
        **git_info(project_root()),
    }
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    with training_run(config, tags, resume) as mlflow:
        history = DvcLiveHistory()
        callbacks: list[Callback] = [SampleSaver(CHECKPOINTS / "samples"), history]
        if mlflow is not None:
            callbacks.append(MlflowCallback(mlflow))
        trainer = Trainer(cfg, train, CHECKPOINTS, val_data=val, callbacks=callbacks, resume=resume)
        apart = " pairs apart" if cfg.data.pairs_apart else " unpaired images"
        what = f"{len(train)} pairs" if train.paired else f"{len(train.inputs)} + {len(train.targets)}{apart}"
        print(
            f"train: {cfg.model.kind}, {what}, {trainer.total_epochs} epochs x {trainer.steps_per_epoch} steps on "
            f"{trainer.device}"
            + (f" x {ctx.world_size} processes" if ctx.enabled else "")
            + (
                f", {trainer.num_workers} DataLoader worker(s) decoding"
                if trainer.num_workers
                else ", decoded images cached in memory"
            )
            + (f", resuming at step {trainer.step}" if trainer.resumed_from else "")
        )
        started = time.perf_counter()
        summary = trainer.fit()
        if summary["status"] is Status.INTERRUPTED:
            raise KeyboardInterrupt
    seconds = time.perf_counter() - started
    steps_run = summary["step"] - summary["start_step"]
    result = history.finish(
        {
            "steps": summary["step"],
            "epochs": summary["epoch"],
            "seconds": round(seconds, 2),
            "images_per_sec": round(steps_run * cfg.train.batch_size * ctx.world_size / seconds, 2)
            if steps_run
            else None,
            "resumed_from_step": summary["start_step"],
            "device": str(trainer.device),
            **{k: round(summary[k], 5) for k in LOSS_NAMES if k in summary},
        }
    )
    print(f"train: done in {seconds:.0f} s -> {CHECKPOINTS / 'last.pt'}; {json.dumps(result)}")


if __name__ == "__main__":
    run_stage(main)
