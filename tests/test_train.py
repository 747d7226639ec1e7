import os
import signal
import threading

import pytest
import torch

from pix2pix.callbacks import Callback
from pix2pix.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from pix2pix.data import PairedDataset
from pix2pix.train import Trainer, TrainingDiverged, linear_decay

from conftest import tiny_config


class Recorder(Callback):
    def __init__(self):
        self.steps, self.epochs, self.samples, self.checkpoints, self.start, self.end = [], [], [], [], None, None

    def on_train_start(self, info):
        self.start = info

    def on_step(self, step, logs):
        self.steps.append((step, logs))

    def on_samples(self, step, grid):
        self.samples.append((step, grid))

    def on_epoch_end(self, epoch, step, metrics):
        self.epochs.append((epoch, step, metrics))

    def on_checkpoint(self, path, step):
        self.checkpoints.append((path, step))

    def on_train_end(self, summary):
        self.end = summary


def _datasets(root, cfg):
    return PairedDataset(root / "train", cfg.data), PairedDataset(root / "val", cfg.data, train=False)


def test_linear_decay_schedule():
    f = linear_decay(epochs=3, epochs_decay=3)
    assert [round(f(e), 4) for e in range(6)] == [1.0, 1.0, 1.0, 0.75, 0.5, 0.25]


def test_overfitting_one_pair_halves_its_l1(tmp_path, synthetic_root):
    cfg = tiny_config(epochs=1, epochs_decay=0, batch_size=1, lambda_l1=100.0)
    cfg.data.preprocess, cfg.data.flip, cfg.data.crop_size = "resize", False, 64
    cfg.model.dropout, cfg.model.ngf = 0.0, 16
    # One epoch of the same pair 100 times: the 100 steps of 100 one-pair epochs, with one
    # end-of-epoch checkpoint instead of 100.
    one = PairedDataset(sorted((synthetic_root / "train").iterdir())[:1] * 100, cfg.data)
    trainer = Trainer(cfg, one, tmp_path, progress=False)
    batch = one[0]
    x, y = batch["input"][None], batch["target"][None]

    def l1() -> float:
        trainer.model.G.eval()
        with torch.no_grad():
            value = float((trainer.model.G(x) - y).abs().mean())
        trainer.model.G.train()
        return value

    before = l1()
    trainer.fit()
    after = l1()
    assert trainer.step == 100
    assert after < 0.5 * before, (before, after)


def test_exact_resume_gives_identical_weights(tmp_path, synthetic_root):
    cfg = tiny_config(epochs=2, epochs_decay=2)  # 6 pairs, batch 2: 3 steps/epoch, 12 steps
    train, val = _datasets(synthetic_root, cfg)
    straight = Trainer(cfg, train, tmp_path / "straight", val_data=val, progress=False)
    straight.fit()
    assert straight.step == 12

    # Stop mid-epoch (step 7 = epoch 3, batch 1), then resume in a fresh Trainer.
    first = Trainer(cfg, train, tmp_path / "resumed", val_data=val, progress=False)
    summary = first.fit(max_steps=7)
    assert summary["status"] == "stopped" and summary["step"] == 7
    second = Trainer(cfg, train, tmp_path / "resumed", val_data=val, progress=False)
    assert (second.step, second.epoch, second.batches_done) == (7, 2, 1)
    second.fit()
    assert second.step == 12

    a, b = straight.model, second.model
    for name, tensor in a.G.state_dict().items():
        assert torch.equal(tensor, b.G.state_dict()[name]), name
    for name, tensor in a.D.state_dict().items():
        assert torch.equal(tensor, b.D.state_dict()[name]), name
    assert a.opt_G.state_dict()["state"][0]["step"] == b.opt_G.state_dict()["state"][0]["step"]
    assert a.lr == b.lr


def test_workers_and_resume_give_the_weights_of_a_straight_run_in_process(tmp_path, synthetic_root):
    """DataLoader workers (what `num_workers: auto` starts for data larger than memory) decode
    every item themselves, seeded per item: stopped mid-epoch and resumed with 2 workers, the
    run ends with the same weights as a straight run without workers."""
    cfg = tiny_config(epochs=1, epochs_decay=1, num_workers=0)  # 6 pairs, batch 2: 6 steps
    straight = Trainer(cfg, PairedDataset(synthetic_root / "train", cfg.data), tmp_path / "straight", progress=False)
    straight.fit()
    cfg_w = tiny_config(epochs=1, epochs_decay=1, num_workers=2)
    train = PairedDataset(synthetic_root / "train", cfg_w.data)
    first = Trainer(cfg_w, train, tmp_path / "workers", progress=False)
    assert first.num_workers == 2 and not train.cache_enabled  # workers decode; no cache copied into each
    first.fit(max_steps=4)
    second = Trainer(cfg_w, PairedDataset(synthetic_root / "train", cfg_w.data), tmp_path / "workers", progress=False)
    second.fit()
    assert second.step == straight.step == 6
    for name, tensor in straight.model.G.state_dict().items():
        assert torch.equal(tensor, second.model.G.state_dict()[name]), name


def test_checkpoint_holds_everything_needed_to_resume(tmp_path, synthetic_root):
    cfg = tiny_config()
    train, val = _datasets(synthetic_root, cfg)
    Trainer(cfg, train, tmp_path, val_data=val, progress=False).fit(max_steps=2)
    state = load_checkpoint(tmp_path / "last.pt")
    for key in (
        "generator",
        "discriminator",
        "opt_G",
        "opt_D",
        "sched_G",
        "sched_D",
        "scaler",
        "epoch",
        "step",
        "rng",
        "config",
    ):
        assert key in state, key
    assert state["step"] == 2 and state["config"]["train"]["batch_size"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_callbacks_receive_losses_metrics_and_grids(tmp_path, synthetic_root):
    cfg = tiny_config(sample_every=2)
    train, val = _datasets(synthetic_root, cfg)
    rec = Recorder()
    Trainer(cfg, train, tmp_path, val_data=val, callbacks=[rec], progress=False).fit()
    assert rec.start["params_G"] > 0 and rec.start["device"] == "cpu"
    assert [s for s, _ in rec.steps] == [1, 2, 3, 4, 5, 6]
    assert set(rec.steps[0][1]) == {"G_GAN", "G_L1", "D_real", "D_fake", "lr", "images_per_sec"}
    assert [(e, s) for e, s, _ in rec.epochs] == [(1, 3), (2, 6)]
    assert set(rec.epochs[0][2]) == {"val_l1", "val_psnr", "val_ssim", "val_sharpness"}
    assert [s for s, _ in rec.samples] == [2, 4, 6, 6]
    grid = rec.samples[0][1]
    assert grid.shape[0] == 3 and 0 <= float(grid.min()) and float(grid.max()) <= 1
    assert rec.end["status"] == "finished" and rec.checkpoints


def test_resuming_with_a_different_model_is_refused(tmp_path, synthetic_root):
    cfg = tiny_config()
    train, _ = _datasets(synthetic_root, cfg)
    Trainer(cfg, train, tmp_path, progress=False).fit(max_steps=1)
    other = tiny_config()
    other.model.ngf = 16
    with pytest.raises(CheckpointError, match="different model settings"):
        Trainer(other, PairedDataset(synthetic_root / "train", other.data), tmp_path, progress=False)


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path, synthetic_root):
    cfg = tiny_config(checkpoint_every=1)
    train, _ = _datasets(synthetic_root, cfg)
    trainer = Trainer(cfg, train, tmp_path, progress=False)
    trainer.fit(max_steps=2)
    good = load_checkpoint(tmp_path / "last.pt")
    with torch.no_grad():
        for p in trainer.model.G.parameters():
            p.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="non-finite loss.*last good checkpoint"):
        trainer.fit()
    kept = load_checkpoint(tmp_path / "last.pt")
    assert kept["step"] == 2
    assert all(torch.equal(v, good["generator"][k]) for k, v in kept["generator"].items())


def test_sigterm_writes_a_final_checkpoint(tmp_path, synthetic_root):
    cfg = tiny_config(epochs=50, epochs_decay=0)
    train, _ = _datasets(synthetic_root, cfg)

    class KillAtStep3(Callback):
        def on_step(self, step, logs):
            if step == 3:
                os.kill(os.getpid(), signal.SIGTERM)

    assert threading.current_thread() is threading.main_thread()
    summary = Trainer(cfg, train, tmp_path, callbacks=[KillAtStep3()], progress=False).fit()
    assert summary["status"] == "interrupted" and summary["step"] == 3
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 3


def test_tampered_checkpoint_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    torch.save({"generator": {}, "config": {}, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    save_checkpoint({"generator": {"w": torch.zeros(1000)}, "config": {}}, tmp_path / "ok.pt")
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt.*corrupt or incomplete"):
        load_checkpoint(tmp_path / "cut.pt")


def test_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    save_checkpoint({"generator": {"w": torch.ones(3)}, "config": {}}, target)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(CheckpointError, match="No space left.*previous file is intact"):
        save_checkpoint({"generator": {"w": torch.zeros(3)}, "config": {}}, target)
    assert torch.equal(load_checkpoint(target)["generator"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


@pytest.mark.slow
def test_speed_switches_train_the_same_model(tmp_path, synthetic_root):
    """channels_last and torch.compile change how the step runs, not what it computes."""
    results = {}
    for name, switches in {"plain": {}, "channels_last": {"channels_last": True}, "compile": {"compile": True}}.items():
        cfg = tiny_config(amp="false", **switches)  # in fp32: bf16 rounding would amplify kernel-order differences
        cfg.model.dropout = 0.0  # dropout masks are drawn in memory order / by inductor's RNG
        train, _ = _datasets(synthetic_root, cfg)
        trainer = Trainer(cfg, train, tmp_path / name, progress=False)
        summary = trainer.fit(max_steps=3)
        state = load_checkpoint(tmp_path / name / "last.pt")
        results[name] = (summary, state)
    plain, plain_state = results["plain"]
    assert results["channels_last"][1]["config"]["train"]["channels_last"] == "true"
    for name in ("channels_last", "compile"):
        summary, state = results[name]
        for loss in ("G_GAN", "G_L1", "D_real", "D_fake"):
            assert summary[loss] == pytest.approx(plain[loss], rel=2e-3), (name, loss)
        # Checkpoints hold the plain modules' weights, loadable without the switch.
        assert state["generator"].keys() == plain_state["generator"].keys()
        for k, v in plain_state["generator"].items():
            assert torch.allclose(state["generator"][k].float(), v.float(), atol=1e-3), (name, k)


def test_accelerate_wrappers_are_not_submodules(monkeypatch):
    """torch.compile/DDP wrappers are what the step calls, never part of the module tree:
    state_dict() holds each weight once, under G. and D."""
    from pix2pix.distributed import DistContext
    from pix2pix.model import Pix2Pix

    class Wrapper(torch.nn.Module):  # stands in for torch.compile's OptimizedModule (seconds to import)
        def __init__(self, module):
            super().__init__()
            self.module = module

    monkeypatch.setattr(torch, "compile", Wrapper)
    model = Pix2Pix(tiny_config(compile=True), torch.device("cpu"))
    before = list(model.state_dict())
    model.accelerate(DistContext())
    assert model.runners["G"] is not model.G  # the compiled wrapper is in use
    assert list(model.state_dict()) == before and {k.split(".")[0] for k in before} == {"G", "D"}
    assert {name for name, _ in model.named_children()} <= {"G", "D", "gan_loss"}


def test_cpu_precision_and_layout_follow_the_instruction_set(monkeypatch):
    """amp/channels_last auto: bf16 only where the CPU has it natively, NHWC only with AMX."""
    from pix2pix import performance as perf

    cpu, bf16 = torch.device("cpu"), torch.bfloat16
    for native, amx, want_dtype, want_nhwc in (
        (False, False, None, False),
        (True, False, bf16, False),
        (True, True, bf16, True),
    ):
        monkeypatch.setattr(perf, "native_bf16", lambda n=native: n)
        monkeypatch.setattr(perf, "amx_tiles", lambda a=amx: a)
        dtype = perf.autocast_dtype("auto", cpu)
        assert dtype == want_dtype and perf.use_channels_last("auto", cpu, dtype) == want_nhwc
        assert perf.autocast_dtype("true", cpu) == bf16 and perf.autocast_dtype("false", cpu) is None
        assert perf.use_channels_last("auto", cpu, None) is False  # fp32 on CPU: NCHW


def test_onednn_isa_cap_turns_native_bf16_off(monkeypatch):
    """ONEDNN_MAX_CPU_ISA below AVX512_CORE_BF16 means oneDNN emulates bf16: auto stays fp32."""
    from pix2pix import performance as perf

    monkeypatch.setattr(perf, "_cpu_has", lambda probe, flags: True)  # a CPU with AMX and AVX512-BF16
    for cap, native, amx in (
        ("", True, True),
        ("DEFAULT", True, True),
        ("AVX2", False, False),
        ("avx512_core_vnni", False, False),
        ("AVX512_CORE_BF16", True, False),
        ("AVX10_1_512", True, False),
        ("AVX512_CORE_AMX", True, True),
    ):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
        assert (perf.native_bf16(), perf.amx_tiles()) == (native, amx), cap
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert perf.autocast_dtype("auto", torch.device("cpu")) is None


def test_bf16_training_follows_the_float32_run(tmp_path, synthetic_root):
    """The same 4 steps in fp32 and under CPU bf16 autocast: the losses agree to bf16's precision."""
    losses = {}
    for amp in ("false", "true"):
        cfg = tiny_config(epochs=2, epochs_decay=0, amp=amp)
        rec = Recorder()
        trainer = Trainer(
            cfg, PairedDataset(synthetic_root / "train", cfg.data), tmp_path / amp, callbacks=[rec], progress=False
        )
        assert trainer.model.amp_dtype == (torch.bfloat16 if amp == "true" else None)
        trainer.fit(max_steps=4)
        losses[amp] = [logs["G_L1"] for _, logs in rec.steps]
    assert len(losses["true"]) == 4
    for fp32, bf16 in zip(losses["false"], losses["true"], strict=True):
        assert abs(bf16 - fp32) <= 0.02 * fp32, losses
    assert losses["false"] != losses["true"]  # bf16 did run
