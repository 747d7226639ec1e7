"""End to end, as a user runs it: the installed CLI in a temp dir on a tiny generated dataset."""

import json
import subprocess
import sys

import pytest
from PIL import Image

from conftest import run_cli, tool_env


@pytest.mark.slow
def test_train_predict_export_evaluate(tmp_path, synthetic_root):
    run = tmp_path / "run"
    r = run_cli(
        "train",
        "--data",
        synthetic_root,
        "--out",
        run,
        "--epochs",
        1,
        "--epochs-decay",
        1,
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
        "--sample-every",
        2,
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["status"] == "finished" and summary["step"] == 6 and summary["epoch"] == 2
    assert (run / "last.pt").is_file() and (run / "samples" / "latest.png").is_file()
    assert "epoch 2/2" in r.stderr

    # Running again resumes at the end: nothing left to do, same step.
    r = run_cli(
        "train",
        "--data",
        synthetic_root,
        "--out",
        run,
        "--epochs",
        1,
        "--epochs-decay",
        1,
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
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["step"] == 6

    r = run_cli("export", "--checkpoint", run / "last.pt", "--out", run / "export")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["onnx"]["max_abs_diff"] <= 1e-4 and report["torchscript"]["max_abs_diff"] <= 1e-4
    # train wrote the drift reference of its inputs; export carried it beside the exported files
    assert (run / "input_reference.json").read_bytes() == (run / "export" / "input_reference.json").read_bytes()
    assert json.loads((run / "input_reference.json").read_text())["count"] == 6

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    Image.new("RGB", (50, 37), (0, 85, 255)).save(inputs / "facade label.png")
    for model in ("last.pt", "export/generator.onnx"):
        out = tmp_path / "pred" / model.replace("/", "_")
        r = run_cli("predict", "--model", run / model, "--input", inputs, "--output", out)
        assert r.returncode == 0, r.stderr
        assert Image.open(out / "facade label.png").size == (50, 37)

    r = run_cli(
        "translate", "--model", run / "export/generator.onnx", "--input", inputs, "--output", tmp_path / "batch"
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["translated"] == 1 and summary["model"].startswith("generator.onnx@sha256:")
    assert Image.open(tmp_path / "batch" / "facade label.png").size == (50, 37)
    report = json.loads((tmp_path / "batch" / "drift.json").read_text())
    assert report["reference"] == str(run / "export" / "input_reference.json") and report["tested"] is False

    r = run_cli(
        "evaluate",
        "--model",
        run / "export/generator.ts",
        "--data",
        synthetic_root / "test",
        "--out",
        tmp_path / "m.json",
        "--per-image",
        tmp_path / "m.csv",
        "--grid",
        tmp_path / "grid.png",
        "--grid-images",
        2,
    )
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "grid.png").size == (
        2 * 32 + 3 * 2,
        3 * 32 + 4 * 2,
    )  # 2 pairs x (input, output, target), 2 px gaps
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["count"] == 3 and 0 < metrics["l1"] < 1 and metrics["psnr"] > 0
    assert len((tmp_path / "m.csv").read_text().splitlines()) == 4

    # `pix2pix evaluate ... | head`: a reader that leaves before the report is no traceback.
    cmd = [sys.executable, "-m", "pix2pix.cli", "evaluate", "--model", run / "export/generator.ts"]
    reader_gone = subprocess.Popen(
        [*map(str, cmd), "--data", str(synthetic_root / "test")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=tool_env(),
    )  # fmt: skip
    reader_gone.stdout.close()
    err = reader_gone.communicate(timeout=300)[1]
    assert reader_gone.returncode == 141 and "Traceback" not in err, err


@pytest.mark.slow
def test_a_bad_input_is_one_line_from_the_real_process(tmp_path):
    (tmp_path / "data").mkdir()
    Image.new("RGB", (300, 300)).save(tmp_path / "data" / "square.png")
    r = run_cli("train", "--data", tmp_path / "data", "--out", tmp_path / "run", "--crop-size", 32, "--load-size", 32)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") <= 1 and "square.png" in r.stderr and "300x300" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "args,expected",
    [
        (["train", "--epochs", "-1"], "train.epochs"),
        (["train", "--crop-size", "256", "--load-size", "128"], "data.load_size"),
        (["predict", "--model", "{tmp}/missing.pt", "--input", "{tmp}", "--output", "{tmp}/o"], "missing.pt"),
        (["train", "--data", "{tmp}/empty"], "no images found"),
    ],
)
def test_bad_inputs_are_one_line_errors(tmp_path, capsys, args, expected):
    from pix2pix.cli import main

    (tmp_path / "data").mkdir()
    (tmp_path / "empty").mkdir()
    Image.new("RGB", (64, 32)).save(tmp_path / "data" / "pair.png")
    args = [a.format(tmp=tmp_path) for a in args]
    if args[0] == "train" and "--data" not in args:
        args += ["--data", str(tmp_path / "data")]
    if args[0] == "train":
        args += ["--out", str(tmp_path / "run")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err and err.strip().count("\n") == 0


def test_help_is_fast_and_lists_commands():
    r = run_cli("--help")
    assert r.returncode == 0 and all(c in r.stdout for c in ("train", "predict", "export", "evaluate"))


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_a_device_this_machine_lacks_is_one_line_naming_train_device(tmp_path, capsys):
    from pix2pix.cli import main
    from pix2pix.distributed import select_device
    from pix2pix.errors import ConfigError

    with pytest.raises(ConfigError, match=r"train.device: 'cuda:1', but this machine has no CUDA GPU; set"):
        select_device("cuda:1")
    (tmp_path / "data").mkdir()
    Image.new("RGB", (64, 32)).save(tmp_path / "data" / "pair.png")
    assert main(["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "train.device: 'cuda', but this machine has no CUDA GPU" in err and err.count("\n") == 1
    assert "Traceback" not in err
