"""Stage 3: train pix2pix on the manifest's train split (CUDA when present, else CPU).

Writes models/checkpoints/ (last.pt + rotated epoch checkpoints + sample grids),
metrics/train.json (DVC metrics) and per-step / per-epoch CSVs for `dvc plots`.

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
from pathlib import Path

import pandas as pd
import torch

from pix2pix import distributed
from pix2pix.callbacks import Callback, SampleSaver
from pix2pix.checkpoint import atomic_write_text
from pix2pix.data import Pair, PairedDataset
from pix2pix.train import Trainer, select_device

from .params import CHECKPOINTS, MANIFEST, METRICS, PAIRS, StageError, load_params, pix2pix_config, run_stage
from .tracking import MlflowCallback, git_info, project_root, training_run

LOSS_CSV = METRICS / "train_loss.csv"
VAL_CSV = METRICS / "val.csv"
TRAIN_JSON = METRICS / "train.json"
FINGERPRINT = CHECKPOINTS / "fingerprint.json"


def read_manifest(path: Path = MANIFEST) -> pd.DataFrame:
    if not path.is_file():
        raise StageError(f"{path}: missing; run the split stage first (dvc repro split)")
    return pd.read_csv(path, dtype={"id": str})


def split_pairs(manifest: pd.DataFrame, split: str, root: Path = PAIRS) -> list[Pair]:
    rows = manifest[manifest["split"] == split]
    return [Pair(root / a, root / b) for a, b in zip(rows["a_path"], rows["b_path"])]


def data_fingerprint(manifest_path: Path = MANIFEST) -> str:
    """SHA-256 of the manifest, which lists every pair with its source file's hash."""
    return hashlib.sha256(manifest_path.read_bytes()).hexdigest()


def code_fingerprint() -> str:
    """SHA-256 of the training code (the library and this stage's modules): a checkpoint made
    by other code is never resumed, so a fix to a loss or a network retrains from scratch."""
    here = Path(__file__).parent
    files = sorted((here.parent / "pix2pix").glob("*.py")) + [here / n for n in ("train.py", "params.py", "tracking.py")]
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


class CsvHistory(Callback):
    """Per-step losses and per-epoch validation metrics as CSV files (dvc plots)."""

    def __init__(self, loss_csv: Path, val_csv: Path, start_step: int):
        self.loss_csv, self.val_csv = loss_csv, val_csv
        # On resume keep the history up to the checkpoint, drop what came after it.
        self.loss_rows = self._read(loss_csv, start_step)
        self.val_rows = self._read(val_csv, start_step)

    @staticmethod
    def _read(path: Path, upto: int) -> list[dict]:
        if upto == 0 or not path.is_file() or path.stat().st_size == 0:
            return []
        df = pd.read_csv(path)
        return df[df["step"] <= upto].to_dict("records")

    def on_step(self, step, logs):
        self.loss_rows.append({"step": step, **logs})

    def on_epoch_end(self, epoch, step, metrics):
        if metrics:
            self.val_rows.append({"epoch": epoch, "step": step, **metrics})

    def on_checkpoint(self, path, step):
        self.flush()

    def on_train_end(self, summary):
        self.flush()

    def flush(self):
        atomic_write_text(self.loss_csv, pd.DataFrame(self.loss_rows).to_csv(index=False))
        atomic_write_text(self.val_csv, pd.DataFrame(self.val_rows).to_csv(index=False))


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


def main() -> None:
    params = load_params()
    cfg = pix2pix_config(params)
    manifest = read_manifest()
    train_pairs = split_pairs(manifest, "train")
    val_pairs = split_pairs(manifest, "val") or split_pairs(manifest, "test")
    fingerprint = {"data": data_fingerprint(), "code": code_fingerprint(), "config": cfg.to_dict()}
    # Under torchrun (see the README) rank 0 prepares the folder while the others wait.
    ctx = distributed.context()
    distributed.setup(ctx, select_device(cfg.train.device))
    resume = prepare_checkpoint_dir(fingerprint) if ctx.is_main else False
    if ctx.enabled:
        torch.distributed.barrier()
        resume = resume or checkpoint_matches(fingerprint)

    train = PairedDataset(train_pairs, cfg.data, train=True)
    val = PairedDataset(val_pairs, cfg.data, train=False) if val_pairs else None
    METRICS.mkdir(parents=True, exist_ok=True)
    callbacks: list[Callback] = [SampleSaver(CHECKPOINTS / "samples")]
    trainer = Trainer(cfg, train, CHECKPOINTS, val_data=val, callbacks=callbacks, resume=resume)
    if not ctx.is_main:  # the other ranks only compute: no logs, files or MLflow run
        if trainer.fit()["status"] == "interrupted":
            raise KeyboardInterrupt
        return
    history = CsvHistory(LOSS_CSV, VAL_CSV, trainer.step)
    trainer.callbacks.callbacks.append(history)
    start_step = trainer.step
    print(
        f"train: {len(train)} pairs, {trainer.total_epochs} epochs x {trainer.steps_per_epoch} steps on {trainer.device}"
        + (f" x {ctx.world_size} processes" if ctx.enabled else "")
        + (f", resuming at step {start_step}" if start_step else "")
    )
    tags = {"data_fingerprint": fingerprint["data"], "torch": torch.__version__, "preset": str(params.get("preset") or "none"), **git_info(project_root())}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    started = time.perf_counter()
    with training_run(params, tags, resume) as mlflow:
        if mlflow is not None:
            trainer.callbacks.callbacks.append(MlflowCallback(mlflow))
        summary = trainer.fit()
        if summary["status"] == "interrupted":
            raise KeyboardInterrupt
    seconds = time.perf_counter() - started
    steps_run = summary["step"] - start_step
    result = {
        "steps": summary["step"],
        "epochs": summary["epoch"],
        "seconds": round(seconds, 2),
        "images_per_sec": round(steps_run * cfg.train.batch_size * ctx.world_size / seconds, 2) if steps_run else None,
        "resumed_from_step": start_step,
        "device": str(trainer.device),
        **{k: round(v, 5) for k, v in summary.items() if k in ("G_GAN", "G_L1", "D_real", "D_fake")},
    }
    if history.val_rows:
        result.update({k: round(v, 5) for k, v in history.val_rows[-1].items() if k.startswith("val_")})
    atomic_write_text(TRAIN_JSON, json.dumps(result, indent=2) + "\n")
    print(f"train: done in {seconds:.0f} s -> {CHECKPOINTS / 'last.pt'}; {json.dumps(result)}")


if __name__ == "__main__":
    run_stage(main)
