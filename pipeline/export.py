"""Stage 5: TorchScript + ONNX generator (parity-checked), a model card in models/export/,
and a new version of the registered model `pix2pix-<dataset>` in the training run."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch

from pix2pix.checkpoint import atomic_write_text
from pix2pix.export import export_generator

from .hashing import sha256
from .manifest import data_fingerprint
from .params import CHECKPOINTS, EVAL_JSON, EXPORT, MANIFEST, PipelineConfig, load_config, run_stage
from .registry import model_name, register_generator
from .tracking import git_info, project_root, shared_run, warn_tracking

MODEL_CARD = EXPORT / "model_card.json"


def register(config: PipelineConfig, report: dict, card: dict) -> dict | None:
    """Register the ONNX generator as a new model version in the training run's MLflow store."""
    name = model_name(config.data.source)
    tags = {"data_fingerprint": card["data_fingerprint"], "checkpoint_sha256": sha256(CHECKPOINTS / "last.pt"), **git_info(project_root())}
    tags.update({f"test_{k}": v for k, v in (card["eval"] or {}).items() if k in ("l1", "psnr", "ssim")})
    data = report["config"]["data"]
    with shared_run() as mlflow:
        if mlflow is None:
            return None
        try:
            mlflow.log_artifact(str(MODEL_CARD), "export")
            version = register_generator(mlflow, name, Path(report["onnx"]["path"]), data["input_nc"], data["output_nc"], tags)
        except Exception as e:  # noqa: BLE001 - the exported files on disk stay valid
            warn_tracking("model registration", e)
            return None
    return {"name": name, "version": version}


def main() -> None:
    config = load_config()
    formats = tuple(config.export.formats)
    report = export_generator(CHECKPOINTS / "last.pt", EXPORT, formats=formats)
    card = {
        "model": "pix2pix U-Net generator (Isola et al. 2017)",
        "files": {k: v["path"] if isinstance(v, dict) else v for k, v in report.items() if k in ("generator", "torchscript", "onnx")},
        "parity_max_abs_diff": {k: report[k]["max_abs_diff"] for k in ("torchscript", "onnx") if k in report},
        "input": {
            "channels": report["config"]["data"]["input_nc"],
            "range": "[-1, 1] float, N x C x H x W; H and W multiples of size_multiple",
            "size_multiple": report["multiple"],
        },
        "trained_steps": report["step"],
        "data_fingerprint": data_fingerprint(MANIFEST),
        "eval": json.loads(EVAL_JSON.read_text()) if EVAL_JSON.is_file() else None,
        "params": report["config"],
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    atomic_write_text(MODEL_CARD, json.dumps(card, indent=2) + "\n")
    if "onnx" in report:
        card["registered_model"] = register(config, report, card)
        atomic_write_text(MODEL_CARD, json.dumps(card, indent=2) + "\n")
    print(f"export: {', '.join(card['files'].values())}; parity {card['parity_max_abs_diff']}; registry {card.get('registered_model')}")


if __name__ == "__main__":
    run_stage(main)
