"""The CUDA code paths on a real GPU: bf16 autocast, fp16 with GradScaler, exact resume in both,
channels_last, cudnn.benchmark, torch.compile and the GPU benchmark's quick mode. Marked `cuda`;
every test skips where torch sees no GPU (CI never has one). On one GPU the tier takes a few
minutes: `bash benchmarks/gpu_check.sh` runs it with the GPU benchmark and prints one summary."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, tiny_config

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here (the cuda tier runs where one is)"),
]


@pytest.fixture
def deterministic(monkeypatch):
    """Bit-exact comparisons need kernels that give the same bits every time."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)


def _data(synthetic_root, cfg):
    from pix2pix.data import PairedDataset

    return PairedDataset(synthetic_root / "train", cfg.data), PairedDataset(
        synthetic_root / "val", cfg.data, train=False
    )


def _straight_and_resumed(tmp_path, synthetic_root, cfg):
    from pix2pix.train import Trainer

    train, val = _data(synthetic_root, cfg)
    straight = Trainer(cfg, train, tmp_path / "straight", val_data=val, progress=False)
    straight.fit()
    first = Trainer(cfg, train, tmp_path / "resumed", val_data=val, progress=False)
    assert first.fit(max_steps=4)["status"] == "stopped"
    second = Trainer(cfg, train, tmp_path / "resumed", val_data=val, progress=False)
    assert second.step == 4
    second.fit()
    return straight, second


def _same_weights(a, b) -> None:
    for net in ("G", "D"):
        sa, sb = getattr(a.model, net).state_dict(), getattr(b.model, net).state_dict()
        for name, tensor in sa.items():
            assert torch.equal(tensor, sb[name]), f"{net}.{name}"


def test_bf16_autocast_trains_and_resumes_exactly(tmp_path, synthetic_root, deterministic):
    cfg = tiny_config(device="cuda", amp="auto", cudnn_benchmark=False, epochs=2, epochs_decay=1)
    straight, resumed = _straight_and_resumed(tmp_path, synthetic_root, cfg)
    assert straight.model.amp_dtype == torch.bfloat16 and straight.device.type == "cuda"
    assert not straight.model.scaler.is_enabled()  # bf16 needs no loss scaling
    assert all(torch.isfinite(v) for v in straight.last_losses.values())
    _same_weights(straight, resumed)


def test_fp16_with_gradscaler_trains_and_resumes_exactly(tmp_path, synthetic_root, deterministic, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # a GPU without bf16
    cfg = tiny_config(device="cuda", amp="auto", cudnn_benchmark=False, epochs=2, epochs_decay=1)
    straight, resumed = _straight_and_resumed(tmp_path, synthetic_root, cfg)
    assert straight.model.amp_dtype == torch.float16 and straight.model.scaler.is_enabled()
    assert straight.model.scaler.get_scale() == resumed.model.scaler.get_scale()  # the scaler's state resumed
    _same_weights(straight, resumed)


def test_channels_last_and_cudnn_benchmark_are_on_by_default(tmp_path, synthetic_root):
    from pix2pix.train import Trainer

    cfg = tiny_config(device="cuda")
    trainer = Trainer(cfg, *_data(synthetic_root, cfg)[:1], tmp_path, progress=False)
    assert trainer.model.channels_last and torch.backends.cudnn.benchmark
    weights = [p for p in trainer.model.G.parameters() if p.dim() == 4]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    summary = trainer.fit(max_steps=3)
    assert summary["step"] == 3 and all(torch.isfinite(torch.tensor(summary[k])) for k in ("G_L1", "D_real"))


def test_compile_trains_to_the_same_losses_as_eager(tmp_path, synthetic_root, deterministic):
    from pix2pix.train import Trainer

    losses = {}
    for compiled in (False, True):
        cfg = tiny_config(device="cuda", compile=compiled, amp="false", cudnn_benchmark=False)
        trainer = Trainer(cfg, *_data(synthetic_root, cfg)[:1], tmp_path / str(compiled), progress=False)
        losses[compiled] = trainer.fit(max_steps=3)["G_L1"]
    assert losses[True] == pytest.approx(losses[False], rel=0.05)


def test_gpu_benchmark_quick_mode(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "benchmarks/gpu_speed.py",
            "--size",
            "64",
            "--batches",
            "1",
            "--steps",
            "5",
            "--warmup",
            "2",
            "--variants",
            "textbook",
            "ours",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert {row["variant"] for row in rows} >= {"textbook", "ours"} and all(row["images_per_s"] > 0 for row in rows)
