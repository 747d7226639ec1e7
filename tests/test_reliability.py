"""Fault injection: kills, signals, full disks, tracking outages and malformed params."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pix2pix.checkpoint import CheckpointError, load_checkpoint

from conftest import run_cli, tool_env, write_params
from servers import MlflowServer

TRAIN_ARGS = (
    "--epochs",
    400,
    "--epochs-decay",
    0,
    "--crop-size",
    32,
    "--load-size",
    36,
    "--ngf",
    8,
    "--ndf",
    8,
    "--batch-size",
    2,
    "--direction",
    "BtoA",
    "--checkpoint-every",
    1,
    "--log-every",
    1,
    "--sample-every",
    100000,
)


def _train_proc(data, out, *extra):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pix2pix.cli",
            "train",
            "--data",
            str(data),
            "--out",
            str(out),
            *map(str, TRAIN_ARGS),
            *map(str, extra),
        ],
        env=tool_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill_during_a_checkpoint_write(proc, out: Path, timeout: float = 120) -> bool:
    """SIGKILL the moment a checkpoint temp file appears; True when the process died with the
    file still there, i.e. in the middle of writing it."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if any(out.glob(".last.pt.*.tmp")):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return any(out.glob(".last.pt.*.tmp"))
    proc.kill()
    proc.wait()
    return False


@pytest.mark.slow
def test_kill_9_at_ten_points_never_loses_or_corrupts_a_checkpoint(tmp_path, synthetic_root):
    """SIGKILL ten times: five aimed at the middle of a checkpoint write (checked: the temp file
    is left behind), five at random moments. Every time last.pt loads, the step never goes
    back, and the optimizer state matches the step. A final run cleans up the temp files and
    finishes the schedule from where the last one died."""
    out = tmp_path / "run"
    ckpt = out / "last.pt"
    rng = random.Random(0)
    last_step, mid_write = 0, 0
    for point in range(10):
        started = time.time()
        proc = _train_proc(synthetic_root, out)
        while not (ckpt.is_file() and ckpt.stat().st_mtime > started) and proc.poll() is None:
            time.sleep(0.02)
        if point % 2 == 0:
            mid_write += _kill_during_a_checkpoint_write(proc, out)
        else:
            time.sleep(rng.uniform(0.0, 0.8))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        state = load_checkpoint(ckpt)  # never half-written
        assert state["step"] >= last_step, (point, state["step"], last_step)
        assert state["opt_G"]["state"][0]["step"] == state["step"] == state["opt_D"]["state"][0]["step"]
        assert state["epoch"] * 3 + state["batches_done"] == state["step"]  # 6 pairs / batch 2 = 3 steps per epoch
        last_step = state["step"]
    assert mid_write >= 3, f"only {mid_write} of 5 kills landed during a checkpoint write"
    assert last_step > 10
    r = run_cli("train", "--data", synthetic_root, "--out", out, *TRAIN_ARGS, "--max-steps", last_step + 5)
    assert r.returncode == 0, r.stderr
    assert load_checkpoint(ckpt)["step"] == last_step + 5
    assert not list(out.glob(".*.tmp"))  # the interrupted writes' leftovers are gone


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_write_a_final_checkpoint_and_exit_cleanly(tmp_path, synthetic_root, sig):
    out = tmp_path / "run"
    proc = _train_proc(synthetic_root, out, "--checkpoint-every", 0)  # only the final checkpoint
    deadline = time.time() + 120
    while not out.exists() and time.time() < deadline:  # fit() has started
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "saving a checkpoint" in err and "Traceback" not in err
    assert load_checkpoint(out / "last.pt")["step"] > 0


def test_disk_full_during_export_keeps_the_previous_export(tmp_path, synthetic_root, monkeypatch):
    from pix2pix.data import PairedDataset
    from pix2pix.export import export_generator
    from pix2pix.train import Trainer

    from conftest import tiny_config

    cfg = tiny_config()
    Trainer(cfg, PairedDataset(synthetic_root / "train", cfg.data), tmp_path / "run", progress=False).fit(max_steps=2)
    export_generator(tmp_path / "run/last.pt", tmp_path / "export")
    before = {p.name: p.read_bytes() for p in (tmp_path / "export").iterdir()}

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(CheckpointError, match="No space left on device"):
        export_generator(tmp_path / "run/last.pt", tmp_path / "export")
    monkeypatch.undo()
    after = {p.name: p.read_bytes() for p in (tmp_path / "export").iterdir()}
    assert after == before  # nothing half-written, no temp files left behind


@pytest.mark.parametrize(
    "section,values,expected",
    [
        ("train", {"epochs": -1}, "train.epochs"),
        ("data", {"crop_size": 128, "load_size": 64}, "data.load_size"),
        ("train", {"gan_mode": "wgan"}, "train.gan_mode"),
        ("model", {"norm": "group"}, "model.norm"),
        ("train", {"batch_size": "four"}, "train.batch_size"),
        ("train", {"epochz": 3}, "train.epochz: unknown key"),
        ("train", {"channels_last": "sometimes"}, "train.channels_last"),
        ("evaluate", {"grid_images": 0}, "evaluate.grid_images"),
    ],
)
@pytest.mark.parametrize("stage", ["download", "train", "export"])
def test_malformed_params_give_one_line_naming_the_key(tmp_path, monkeypatch, capsys, stage, section, values, expected):
    """Every stage refuses bad params before doing anything, in one line (in-process: the same
    code path as `python -m pipeline.stages.STAGE`, see test_invalid_yaml for a real process)."""
    import importlib

    from pipeline.stage import run_stage

    write_params(tmp_path / "params.yaml", **{section: values})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        run_stage(importlib.import_module(f"pipeline.stages.{stage}").main)
    err = capsys.readouterr().err
    assert e.value.code == 1 and expected in err and err.strip().count("\n") == 0
    assert not (tmp_path / "data").exists() and not (tmp_path / "models").exists()  # nothing was written


@pytest.mark.slow
def test_invalid_yaml_is_a_clear_error(tmp_path):
    (tmp_path / "params.yaml").write_text("data:\n  source: [unclosed\n")
    r = subprocess.run(
        [sys.executable, "-m", "pipeline.stages.download"],
        cwd=tmp_path,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1 and "params.yaml: not valid YAML" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_only_bad_images_fail_the_split_stage_with_a_summary(tmp_path):
    write_params(tmp_path / "params.yaml")
    raw = tmp_path / "data/raw"
    raw.mkdir(parents=True)
    (raw / "a.jpg").write_bytes(b"")
    (raw / "b.png").write_text("text")
    r = subprocess.run(
        [sys.executable, "-m", "pipeline.stages.split"],
        cwd=tmp_path,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1 and "no usable image pairs (2 rejected" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
@pytest.mark.server
def test_tracking_server_dying_mid_run_does_not_stop_training(tmp_path):
    server = MlflowServer(tmp_path / "server").wait_ready()
    try:
        project = tmp_path / "project"
        project.mkdir()
        write_params(project / "params.yaml", train={"epochs": 60, "epochs_decay": 0})
        env = tool_env(
            MLFLOW_TRACKING_URI=server.uri, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="3"
        )
        for stage in ("download", "split"):
            subprocess.run(
                [sys.executable, "-m", f"pipeline.stages.{stage}"],
                cwd=project,
                env=env,
                check=True,
                capture_output=True,
            )
        train = subprocess.Popen(
            [sys.executable, "-m", "pipeline.stages.train"],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        run_file = project / "models/checkpoints/mlflow_run.json"
        while not run_file.is_file() and train.poll() is None:
            time.sleep(0.1)
        time.sleep(1.0)
    finally:
        server.kill()  # the tracking server goes away mid-run
    out, err = train.communicate(timeout=600)
    assert train.returncode == 0, err
    assert "warning: MLflow" in err and "results stay on disk" in err
    assert load_checkpoint(project / "models/checkpoints/last.pt")["step"] == 120
    assert (project / "metrics/train/metrics.json").is_file()
