"""Stage 5: TorchScript + ONNX generator (parity-checked), a model card in models/export/,
and a new version of the registered model `pix2pix-<dataset>` in the tracking store in force.
With `export.reverse` an unpaired model's B -> A generator goes the same way, into
models/export/reverse/ and the registered model `pix2pix-<dataset>-BA`."""

from __future__ import annotations

import json
import platform

import torch

from pix2pix.export import export_generator
from pix2pix.files import atomic_write_text

from ..config import load_config
from ..data.manifest import data_fingerprint
from ..paths import EVAL_JSON, EXPORT, MANIFEST, MODEL_CARD, kept_checkpoint
from ..stage import StageError, run_stage
from ..tracking.registry import register_export

REVERSE = EXPORT / "reverse"  # an unpaired model's B -> A generator (export.reverse)


def model_card(report: dict, checkpoint, which: str = "AB") -> dict:
    unpaired = report["config"]["model"]["kind"] == "unpaired"
    method = "CycleGAN, Zhu et al. 2017" if unpaired else "Isola et al. 2017"
    direction = {"AB": " A -> B", "BA": " B -> A"}[which] if unpaired else ""
    return {
        "model": f"pix2pix generator{direction} ({report['config']['model']['netG']}; {method})",
        "files": {
            k: v["path"] if isinstance(v, dict) else v
            for k, v in report.items()
            if k in ("generator", "torchscript", "onnx")
        },
        "parity_max_abs_diff": {k: report[k]["max_abs_diff"] for k in ("torchscript", "onnx") if k in report},
        "input": {
            "channels": report["config"]["data"]["input_nc"],
            "range": "[-1, 1] float, N x C x H x W; H and W multiples of size_multiple",
            "size_multiple": report["multiple"],
        },
        "trained_steps": report["step"],
        # Which checkpoint this is (evaluate.keep) and, for best.pt, the validations that chose it.
        "kept": {
            "checkpoint": checkpoint.name,
            "path": str(checkpoint),
            "step": report["step"],
            "best": report["selection"].get("best"),
        },
        "data_fingerprint": data_fingerprint(MANIFEST),
        "eval": json.loads(EVAL_JSON.read_text()) if EVAL_JSON.is_file() else None,
        "params": report["config"],
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def main() -> None:
    config = load_config()
    formats = tuple(config.export.formats)
    checkpoint = kept_checkpoint(config.evaluate.keep)
    report = export_generator(checkpoint, EXPORT, formats=formats)
    card = model_card(report, checkpoint)
    if config.export.reverse:
        if report["config"]["model"]["kind"] != "unpaired":
            raise StageError("export.reverse: only an unpaired model (model.kind: unpaired) has a B -> A generator")
        reverse = model_card(
            export_generator(checkpoint, EXPORT / "reverse", formats=formats, which="BA"), checkpoint, "BA"
        )
        atomic_write_text(EXPORT / "reverse" / "model_card.json", json.dumps(reverse, indent=2) + "\n")
    atomic_write_text(MODEL_CARD, json.dumps(card, indent=2) + "\n")
    if "onnx" in report:
        card["registered_model"] = register_export(config, card)
        if config.export.reverse:
            registered = register_export(config, reverse, "-BA", REVERSE / "model_card.json")
            reverse["registered_model"] = card["reverse_registered_model"] = registered
            atomic_write_text(REVERSE / "model_card.json", json.dumps(reverse, indent=2) + "\n")
        atomic_write_text(MODEL_CARD, json.dumps(card, indent=2) + "\n")
    print(
        f"export: {', '.join(card['files'].values())}; parity {card['parity_max_abs_diff']}; registry "
        f"{card.get('registered_model')}"
    )


if __name__ == "__main__":
    run_stage(main)
