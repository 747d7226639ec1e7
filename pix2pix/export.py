"""Export the generator to TorchScript and ONNX, each checked against eager PyTorch.

Both exports take any batch size and any height/width that is a multiple of the network's
2**depth. The training config travels inside each file (TorchScript extra file, ONNX
metadata) so `predict` knows the channels and size multiple without the checkpoint.
"""

from __future__ import annotations

import copy
import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from . import drift
from .checkpoint import load_checkpoint, save_checkpoint
from .errors import ExportError
from .files import atomic_write_bytes
from .loading import CONFIG_KEY, OnnxGenerator, generator_from_state, load_torchscript
from .networks import UNetGenerator

PARITY_TOLERANCE = 1e-4


def fold_batchnorm(g: nn.Module) -> nn.Module:
    """An eval-mode copy of `g` with every BatchNorm folded into the conv before it.

    Inference then skips one pass over every activation map; the exports run this copy
    (freezing folds Conv2d+BN by itself, but not ConvTranspose2d+BN, half of the U-Net).
    """
    g = copy.deepcopy(g).cpu().eval()
    for seq in g.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if (
                isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d))
                and isinstance(bn, nn.BatchNorm2d)
                and bn.track_running_stats
            ):
                seq[i] = fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, nn.ConvTranspose2d))
                seq[i + 1] = nn.Identity()
    return g


def _parity_inputs(g: UNetGenerator, input_nc: int, crop_size: int) -> list[torch.Tensor]:
    """Random inputs at the training size and at a different batch and aspect ratio."""
    gen = torch.Generator().manual_seed(0)
    m = g.multiple
    shapes = [(1, input_nc, crop_size, crop_size), (2, input_nc, crop_size, crop_size + m)]
    return [torch.rand(s, generator=gen) * 2 - 1 for s in shapes]


def _max_diff(runner, g: UNetGenerator, inputs: list[torch.Tensor]) -> float:
    diff = 0.0
    with torch.no_grad():
        for x in inputs:
            diff = max(diff, float((runner(x) - g(x)).abs().max()))
    return diff


def _require_parity(kind: str, path: Path, diff: float, tolerance: float) -> None:
    if not diff <= tolerance:
        raise ExportError(
            f"{path}: {kind} output differs from PyTorch by {diff:.3g} (> {tolerance}); the export is not trustworthy"
        )


def export_torchscript(
    g: UNetGenerator, config: dict, path: Path | str, tolerance: float = PARITY_TOLERANCE
) -> dict[str, Any]:
    """Trace + freeze, BatchNorm folded; returns {"path", "max_abs_diff"} against eager `g`."""
    path = Path(path)
    g = g.cpu().eval()
    inputs = _parity_inputs(g, config["data"]["input_nc"], config["data"]["crop_size"])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.freeze(torch.jit.trace(fold_batchnorm(g), inputs[0]))
        buffer = io.BytesIO()
        torch.jit.save(module, buffer, _extra_files={CONFIG_KEY: json.dumps(config), "multiple": str(g.multiple)})
    atomic_write_bytes(path, buffer.getvalue())
    loaded, _, _ = load_torchscript(path)
    diff = _max_diff(loaded, g, inputs)
    _require_parity("TorchScript", path, diff, tolerance)
    return {"path": str(path), "max_abs_diff": diff}


def export_onnx(
    g: UNetGenerator, config: dict, path: Path | str, opset: int = 17, tolerance: float = PARITY_TOLERANCE
) -> dict[str, Any]:
    """ONNX with dynamic batch/height/width, BatchNorm folded, checked with onnxruntime."""
    try:
        import onnx
    except ImportError:
        raise ExportError("ONNX export needs the onnx extra: pip install 'pix2pix-pipeline[onnx]'") from None
    path = Path(path)
    g = g.cpu().eval()
    inputs = _parity_inputs(g, config["data"]["input_nc"], config["data"]["crop_size"])
    buffer = io.BytesIO()
    dynamic = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript-based exporter handles symbolic H/W through the U-Net's skips;
        # torch.export (dynamo=True) specialises them to the example size.
        torch.onnx.export(
            fold_batchnorm(g),
            (inputs[0],),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": dynamic, "output": dynamic},
        )
    model = onnx.load_from_string(buffer.getvalue())
    for key, value in ((CONFIG_KEY, json.dumps(config)), ("multiple", str(g.multiple))):
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.checker.check_model(model)
    atomic_write_bytes(path, model.SerializeToString())
    diff = _max_diff(OnnxGenerator(path), g, inputs)
    _require_parity("ONNX", path, diff, tolerance)
    return {"path": str(path), "max_abs_diff": diff, "opset": opset}


def export_generator(
    checkpoint: Path | str, out_dir: Path | str, formats=("torchscript", "onnx"), which: str = "AB"
) -> dict[str, Any]:
    """Write `generator.pt` (weights + config) and the requested formats into `out_dir`; an
    unpaired model's A -> B generator, or with `which="BA"` its B -> A one (a model of its own).

    Returns a report with each file and its parity result, for model cards and logs.
    """
    out_dir = Path(out_dir)
    state = load_checkpoint(checkpoint)
    g, cfg = generator_from_state(state, which)
    config = cfg.to_dict()
    weights = out_dir / "generator.pt"
    save_checkpoint({"generator": g.state_dict(), "config": config, "step": state.get("step", 0), "format": 1}, weights)
    report: dict[str, Any] = {
        "generator": str(weights),
        "step": state.get("step", 0),
        "multiple": g.multiple,
        "config": config,
        "selection": state.get("selection") or {},  # how best.pt was chosen, when it was
        "generator_direction": which,
    }
    unknown = set(formats) - {"torchscript", "onnx"}
    if unknown:
        raise ExportError(f"unknown export format(s) {sorted(unknown)}; use torchscript and/or onnx")
    if "torchscript" in formats:
        report["torchscript"] = export_torchscript(g, config, out_dir / "generator.ts")
    if "onnx" in formats:
        report["onnx"] = export_onnx(g, config, out_dir / "generator.onnx")
    # The reference of the training inputs travels with the model (translate finds it); it
    # describes domain A, so the reverse generator of an unpaired model goes without one.
    reference = drift.reference_beside(checkpoint) if which == "AB" else None
    if reference is not None:
        report["input_reference"] = str(atomic_write_bytes(out_dir / drift.REFERENCE_NAME, reference.read_bytes()))
    return report
