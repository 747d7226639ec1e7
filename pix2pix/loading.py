"""Load a trained generator from any of its files: a training checkpoint, an exported
`generator.pt`, TorchScript (`.ts`) or ONNX (`.onnx`).

A leaf module: `export` writes these files and `predict` runs them; both import from here,
neither imports the other.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from .checkpoint import load_checkpoint
from .config import Config
from .errors import CheckpointError, ExportError
from .networks import UNetGenerator, build_generator
from .performance import autocast_dtype

CONFIG_KEY = "pix2pix_config"  # the training config inside TorchScript extra files / ONNX metadata


class GeneratorRunner:
    """A callable N x C x H x W tensor in [-1, 1] -> same, plus what it needs to know:
    input/output channels and the size multiple. `module` is the eager generator, where there
    is one (a checkpoint; not an export), so tiling can hold its InstanceNorm statistics fixed."""

    def __init__(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        input_nc: int,
        output_nc: int,
        multiple: int,
        config: dict,
        module: torch.nn.Module | None = None,
        device: str | torch.device = "cpu",
    ):
        self.fn, self.input_nc, self.output_nc, self.multiple, self.config = fn, input_nc, output_nc, multiple, config
        self.module, self.device = module, torch.device(device)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def in_precision(
    fn: Callable[[torch.Tensor], torch.Tensor], amp: str, device: str | torch.device
) -> Callable[[torch.Tensor], torch.Tensor]:
    """`fn` run under bf16 autocast where `amp` (auto/true/false, as train.amp) turns it on for
    this device (CPUs with native bf16, CUDA), with float32 outputs either way."""
    device = torch.device(device)
    dtype = autocast_dtype(amp, device)
    if dtype is None:
        return lambda x: fn(x).float()

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=dtype):
            return fn(x).float()

    return run


def generator_from_state(state: dict, which: str = "AB") -> tuple[UNetGenerator, Config]:
    """Rebuild the generator (eval mode) from a loaded checkpoint dict: the EMA weights when the
    run kept them (train.ema), else the trained ones. `which="BA"`: an unpaired model's reverse
    generator, with a config that describes it as a model of its own (channels and direction
    swapped), so every consumer loads it like any generator."""
    cfg = Config.from_dict(state["config"])
    if which == "AB":
        g = build_generator(cfg.model, cfg.data.input_nc, cfg.data.output_nc, cfg.data.crop_size)
        g.load_state_dict(state.get("generator_ema", state["generator"]))
        return g.eval(), cfg
    if which != "BA" or "generator_BA" not in state:
        why = "only an unpaired model has a B -> A generator" if which == "BA" else "use AB or BA"
        raise CheckpointError(f"generator {which!r}: {why}")
    values = cfg.to_dict()
    d = values["data"]
    d["input_nc"], d["output_nc"] = d["output_nc"], d["input_nc"]
    d["direction"] = "BtoA" if d["direction"] == "AtoB" else "AtoB"
    cfg = Config.from_dict(values)
    g = build_generator(cfg.model, cfg.data.input_nc, cfg.data.output_nc, cfg.data.crop_size)
    g.load_state_dict(state["generator_BA"])
    return g.eval(), cfg


def generator_from_checkpoint(path: Path | str, device: str | torch.device = "cpu") -> tuple[UNetGenerator, Config]:
    """Rebuild the generator from a training checkpoint or an exported `generator.pt`."""
    g, cfg = generator_from_state(load_checkpoint(path, map_location=device))
    return g.to(device), cfg


def load_torchscript(path: Path | str, device: str | torch.device = "cpu"):
    """(module, training config dict, size multiple) of an exported TorchScript file."""
    extra = {CONFIG_KEY: "", "multiple": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    if not extra[CONFIG_KEY]:
        raise ExportError(
            f"{path}: not a pix2pix TorchScript export (no {CONFIG_KEY}); export it with `pix2pix export`"
        )
    return module.eval(), json.loads(extra[CONFIG_KEY]), int(extra["multiple"])


class OnnxGenerator:
    """Runs an exported generator with onnxruntime on torch tensors."""

    def __init__(self, path: Path | str, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ExportError("running .onnx files needs onnxruntime: pip install 'pix2pix-pipeline[onnx]'") from None
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        if CONFIG_KEY not in meta:
            raise ExportError(
                f"{path}: not a pix2pix ONNX export (no {CONFIG_KEY} metadata); export it with `pix2pix export`"
            )
        self.config = json.loads(meta[CONFIG_KEY])
        self.multiple = int(meta["multiple"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {"input": x.detach().cpu().float().numpy()})[0]
        return torch.from_numpy(out)


def _enable_dropout(g: torch.nn.Module) -> None:
    for m in g.modules():
        if isinstance(m, torch.nn.Dropout):
            m.train()


def load_runner(
    path: Path | str,
    device: str | torch.device = "cpu",
    keep_dropout: bool = False,
    amp: str = "auto",
    threads: int | None = None,
) -> GeneratorRunner:
    """Pick the loader by file type: .onnx (onnxruntime, float32, `threads` intra-op threads),
    .ts/.torchscript, else a checkpoint; the last two run in bf16 where `amp` (auto/true/false)
    turns it on."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        ort_g = OnnxGenerator(path, threads)
        c = ort_g.config
        return GeneratorRunner(ort_g, c["data"]["input_nc"], c["data"]["output_nc"], ort_g.multiple, c)
    if suffix in (".ts", ".torchscript"):
        module, config, multiple = load_torchscript(path, device)
        run = in_precision(module, amp, device)
        return GeneratorRunner(
            lambda x: run(x.to(device)).cpu(), config["data"]["input_nc"], config["data"]["output_nc"], multiple, config
        )
    g, cfg = generator_from_checkpoint(path, device)
    if keep_dropout:
        _enable_dropout(g)  # the paper's test-time noise: dropout stays on
    run = in_precision(g, amp, device)
    return GeneratorRunner(
        lambda x: run(x.to(device)).cpu(),
        cfg.data.input_nc,
        cfg.data.output_nc,
        g.multiple,
        cfg.to_dict(),
        module=g,
        device=device,
    )
