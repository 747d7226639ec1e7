"""The main job as a user runs it: `dvc repro` on tiny params in a fresh copy of the project."""

import json
import os
import subprocess
import sys
import time

import psutil
import pytest
import torch
import yaml

from conftest import copy_workspace, dvc, tool_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(reproduced, tmp_path_factory):
    """A copy of the reproduced workspace that the tests here only read (and `dvc repro` no-ops)."""
    return copy_workspace(reproduced[0], tmp_path_factory.mktemp("e2e") / "project")


@pytest.fixture
def own_project(reproduced, tmp_path):
    """A copy for one test that changes it (params, code, experiments): no other test sees it."""
    return copy_workspace(reproduced[0], tmp_path / "project")


def _commit(project, message):
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run(["git", "commit", "-qm", message], cwd=project, check=True)


def test_repro_runs_every_stage_and_writes_its_outputs(reproduced, project):
    for stage in ("download", "split", "train", "evaluate", "export"):
        assert f"Running stage '{stage}'" in reproduced[1]
    assert len(list((project / "data/raw/train").glob("*.png"))) == 8
    manifest = (project / "data/pairs/manifest.csv").read_text().splitlines()
    assert manifest[0] == "id,split,layout,a_path,b_path,width,height,sha256,status" and len(manifest) == 1 + 13
    assert sorted(p.name for p in (project / "data/pairs").iterdir()) == ["manifest.csv", "rejected.csv"]  # no copies
    assert (project / "models/checkpoints/last.pt").is_file()
    train = json.loads((project / "metrics/train/metrics.json").read_text())
    assert train["steps"] == 4 and train["epochs"] == 2 and train["step"] == 4
    history = project / "metrics/train/plots/metrics"
    for name in ("G_GAN", "G_L1", "D_real", "D_fake", "lr", "images_per_sec"):  # LOSS_NAMES and the rest
        rows = (history / f"{name}.tsv").read_text().splitlines()
        assert rows[0] == f"step\t{name}" and [r.split("\t")[0] for r in rows[1:]] == ["1", "2", "3", "4"]
        assert isinstance(train[name], float)
    val = (history / "val_ssim.tsv").read_text().splitlines()
    assert val[0] == "step\tval_ssim" and [r.split("\t")[0] for r in val[1:]] == ["2", "4"]  # after each epoch
    ev = json.loads((project / "metrics/eval.json").read_text())
    assert ev["count"] == 3 and {"l1", "psnr", "ssim", "baseline_l1"} <= set(ev)
    for name in ("eval_per_image.csv", "best.png", "worst.png"):
        assert (project / "reports" / name).is_file()
    card = json.loads((project / "models/export/model_card.json").read_text())
    assert card["parity_max_abs_diff"]["onnx"] <= 1e-4 and card["eval"]["l1"] == ev["l1"]
    assert (project / "models/export/generator.onnx").is_file() and (project / "models/export/generator.ts").is_file()


def test_outputs_share_their_bytes_with_the_cache_and_are_protected(reproduced):
    """One copy on disk: each file of data/raw is a hard link to its DVC cache object, read-only."""
    project = reproduced[0]
    files = [p for p in (project / "data/raw").rglob("*") if p.is_file()]
    cache = {p.stat().st_ino for p in (project / ".dvc/cache").rglob("*") if p.is_file()}
    assert files and all(p.stat().st_ino in cache and p.stat().st_nlink >= 2 for p in files)
    assert all(p.stat().st_mode & 0o222 == 0 for p in files)


def test_an_edit_to_a_cached_output_is_refused_or_detected(reproduced, tmp_path):
    project = copy_workspace(reproduced[0], tmp_path / "project")
    dvc(project, "checkout", "--relink", "--quiet")  # the copy's files become links to its cache again
    victim = next((project / "data/raw/train").glob("*.png"))
    try:
        with open(victim, "ab") as f:  # refused for users; root may write anyway
            f.write(b"edited")
    except PermissionError:
        return
    status = dvc(project, "status", "--json")
    assert "data/raw" in status.stdout and "modified" in status.stdout  # detected: repro would redo the stages


def test_second_repro_is_a_no_op(project):
    r = dvc(project, "repro")
    assert "Running stage" not in r.stdout
    assert "up to date" in (r.stdout + r.stderr).lower()


def test_metrics_and_plots_are_committed_outputs_not_ignored_files(project):
    ignored = subprocess.run(
        [
            "git",
            "check-ignore",
            "metrics/eval.json",
            "metrics/train/metrics.json",
            "reports/best.png",
            "metrics/train/plots/metrics/G_L1.tsv",
        ],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert ignored.stdout == ""  # none of them is git-ignored: they are committed
    ignored = subprocess.run(
        ["git", "check-ignore", "data/raw", "models/checkpoints", "mlflow.db"],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert ignored.stdout.split() == ["data/raw", "models/checkpoints", "mlflow.db"]


def test_metrics_and_params_commands(project):
    r = dvc(project, "metrics", "show", "--json")
    shown = json.loads(r.stdout)
    assert "l1" in json.dumps(shown) and "psnr" in json.dumps(shown)
    plots = json.loads(dvc(project, "plots", "show", "--json").stdout)["data"]
    quantities = {
        "G_GAN",
        "G_L1",
        "D_real",
        "D_fake",
        "lr",
        "images_per_sec",
        "epoch",
        "val_l1",
        "val_psnr",
        "val_ssim",
        "val_sharpness",
    }
    assert {p.rsplit("/", 1)[-1].removesuffix(".tsv") for p in plots} == quantities  # one plot each
    # Offline rendering to PNG (dvc's own HTML needs a CDN).
    r = subprocess.run(
        [sys.executable, "-m", "pipeline.ops.plots"],
        cwd=project,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    pngs = sorted(p.name for p in (project / "reports/plots").glob("*.png"))
    assert pngs == sorted(f"{q}.png" for q in quantities)
    assert all((project / "reports/plots" / n).read_bytes()[:4] == b"\x89PNG" for n in pngs)


def _exp_metrics(shown: list, name: str) -> dict:
    """metrics/train/metrics.json of the row called `name` in `dvc exp show --json`."""
    for row in shown:
        for exp in row.get("experiments") or []:
            for rev in exp["revs"]:
                if rev.get("name") == name:
                    return rev["data"]["metrics"]["metrics/train/metrics.json"]["data"]
    raise AssertionError(f"no experiment {name}: {json.dumps(shown)[:500]}")


def test_changing_a_train_param_reruns_only_train_evaluate_export(own_project):
    project = own_project
    _commit(project, "the default run, its lock and metrics")
    r = dvc(project, "exp", "run", "-S", "train.epochs_decay=2", "-n", "longer")
    assert (
        "Running stage 'train'" in r.stdout
        and "Running stage 'evaluate'" in r.stdout
        and "Running stage 'export'" in r.stdout
    )
    assert "Running stage 'download'" not in r.stdout and "Running stage 'split'" not in r.stdout
    assert json.loads((project / "metrics/train/metrics.json").read_text())["steps"] == 6
    # DVC's own comparison sees both: the committed baseline and the experiment.
    shown = json.loads(dvc(project, "exp", "show", "--json").stdout)
    rows = {row["rev"]: row["data"]["metrics"]["metrics/train/metrics.json"]["data"]["steps"] for row in shown}
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True).stdout.strip()
    assert rows == {"workspace": 6, head: 4}  # the committed baseline has metrics too (not `!`)
    assert _exp_metrics(shown, "longer")["steps"] == 6
    diff = json.loads(dvc(project, "metrics", "diff", "HEAD", "--json").stdout)
    assert diff["metrics/train/metrics.json"]["steps"] == {"old": 4, "new": 6, "diff": 2}
    assert "train.epochs_decay" in dvc(project, "params", "diff", "HEAD").stdout


def test_editing_a_preset_or_any_imported_module_reruns_its_stages(own_project):
    project = own_project
    presets = project / "pipeline/presets.py"
    presets.write_text(presets.read_text() + "\n# edited\n")
    status = dvc(project, "status", "--json")
    changed = json.loads(status.stdout)
    assert set(changed) == {"download", "split", "train", "evaluate", "export"}
    assert all({"changed deps": {"pipeline/presets.py": "modified"}} in changed[s] for s in changed)
    presets.write_text(presets.read_text().removesuffix("\n# edited\n"))
    networks = project / "pix2pix/networks.py"
    networks.write_text(networks.read_text() + "\n# edited\n")
    assert set(json.loads(dvc(project, "status", "--json").stdout)) == {"train", "evaluate", "export"}
    networks.write_text(networks.read_text().removesuffix("\n# edited\n"))
    assert json.loads(dvc(project, "status", "--json").stdout) == {}


def _cmdline(process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:  # DVC's short-lived helpers (git, ...) come and go
        return ""


def _checkpoint_of_this_run(project, epochs: int) -> bool:
    """last.pt written by the run with these params: newer than the folder's fingerprint (which
    the stage writes before training) that names them. The mtime alone is not enough: DVC
    copies persisted outputs out of its cache (unprotect) before the stage runs."""
    folder = project / "models/checkpoints"
    try:
        fingerprint = json.loads((folder / "fingerprint.json").read_text())
        return fingerprint["config"]["train"]["epochs"] == epochs and (
            (folder / "last.pt").stat().st_mtime_ns > (folder / "fingerprint.json").stat().st_mtime_ns
        )
    except (OSError, ValueError, KeyError):
        return False


def test_a_killed_training_resumes_on_the_next_repro(own_project):
    project = own_project
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"].update(epochs=25, epochs_decay=0, checkpoint_every=2)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro"],
        cwd=project,
        env=tool_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ckpt = project / "models/checkpoints/last.pt"
    deadline = time.time() + 300
    killed = None
    while time.time() < deadline and proc.poll() is None:
        # DVC runs the stage through a shell: kill the shell and the python under it.
        train = [p for p in psutil.Process(proc.pid).children(recursive=True) if "pipeline.stages.train" in _cmdline(p)]
        if train and _checkpoint_of_this_run(project, epochs=25):
            for p in train:
                p.kill()  # SIGKILL: no chance to save anything more
            psutil.wait_procs(train, timeout=10)
            killed = True
            break
        time.sleep(0.05)
    proc.communicate(timeout=120)
    assert killed and proc.returncode != 0
    from pix2pix.checkpoint import load_checkpoint

    saved_step = load_checkpoint(ckpt)["step"]
    assert 0 < saved_step < 50
    r = dvc(project, "repro", "train")
    assert f"resuming at step {saved_step}" in r.stdout, r.stdout[:3000]
    summary = json.loads((project / "metrics/train/metrics.json").read_text())
    assert summary["resumed_from_step"] == saved_step and summary["steps"] == 50
    # The history holds every step once: what was logged after the checkpoint was dropped.
    steps = [
        int(line.split("\t")[0])
        for line in (project / "metrics/train/plots/metrics/G_L1.tsv").read_text().splitlines()[1:]
    ]
    assert steps == list(range(1, 51))


def test_a_dataset_with_train_and_val_only_runs_end_to_end_with_workers(tmp_path):
    """Own train/ and val/ folders, no test split: evaluation falls back to val, and training
    decodes in a DataLoader worker (as it does for data larger than memory)."""
    import numpy as np
    from PIL import Image

    from conftest import make_project

    source = tmp_path / "mydata"
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 2)):
        (source / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)).save(
                source / split / f"{i}.jpg", quality=90
            )
    project = make_project(
        tmp_path / "project",
        data={"source": str(source)},
        train={"num_workers": 1},
        export={"formats": ["torchscript"]},
    )
    r = dvc(project, "repro", timeout=900)
    assert "split: 8 pairs (train 6, val 2, test 0)" in r.stdout and "1 DataLoader worker(s) decoding" in r.stdout
    ev = json.loads((project / "metrics/eval.json").read_text())
    assert ev["split"] == "val" and ev["count"] == 2
    assert "Running stage" not in dvc(project, "repro").stdout


def test_unpaired_training_on_pairs_split_apart_runs_through_every_stage_and_the_page(reproduced, tmp_path):
    """`model.kind: unpaired` with `data.pairs_apart` (the facades_unpaired preset's recipe) on
    the tiny synthetic set: train, evaluate against the real test pairs, export with parity and
    registration as a new version; the page translates with it."""
    import io

    import yaml
    from fastapi.testclient import TestClient
    from PIL import Image

    from pipeline.ops.app import create_app

    project = copy_workspace(reproduced[0], tmp_path / "project")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"]["pairs_apart"] = True
    params["model"].update(kind="unpaired", netG="resnet_6blocks", norm="instance", dropout=0.0)
    params["train"].update(gan_mode="lsgan", pool_size=4)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    r = dvc(project, "repro", timeout=900)
    assert "Running stage 'train'" in r.stdout and "train: unpaired, 4 + 4 pairs apart" in r.stdout, r.stdout
    state = torch.load(project / "models/checkpoints/last.pt", weights_only=False)
    assert state["kind"] == "unpaired" and "generator_BA" in state and len(state["pools"]["B"]["images"]) == 4
    metrics = json.loads((project / "metrics/eval.json").read_text())
    assert {"l1", "psnr", "ssim"} <= set(metrics)  # scored against the real test pairs
    card = json.loads((project / "models/export/model_card.json").read_text())
    assert card["params"]["model"]["kind"] == "unpaired"
    assert (project / "models/export/generator.onnx").is_file()
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    client = TestClient(create_app(project, max_megapixels=1))
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (0, 85, 255)).save(buffer, "PNG")
    r = client.post("/api/translate", params={"model": "pix2pix-synthetic", "refs": "2"}, content=buffer.getvalue())
    assert r.status_code == 200 and r.json()["outputs"]["2"]["version"] == "2", r.text


def test_an_unpaired_dataset_runs_end_to_end(tmp_path):
    """Two synthetic domains in the unaligned layout (trainA/ photos, trainB/ label maps of other
    facades, testA/ testB/) through `dvc repro`: split lists each image with its domain, train
    learns both directions, evaluate scores cycles and identity without pairs, export registers
    G; the page lists the held-out inputs and translates them."""
    from fastapi.testclient import TestClient

    from pipeline.ops.app import create_app

    from conftest import make_project

    project = make_project(
        tmp_path / "project",
        data={"synthetic": {"size": 32, "train": 6, "val": 0, "test": 2, "seed": 0, "unpaired": True}},
        model={"kind": "unpaired", "netG": "resnet_6blocks", "norm": "instance", "dropout": 0.0},
        train={"gan_mode": "lsgan", "pool_size": 2},
        export={"formats": ["torchscript", "onnx"], "reverse": True},
    )
    r = dvc(project, "repro", timeout=900)
    assert "split: 16 unpaired images (domains A and B) (train 12, val 0, test 4)" in r.stdout, r.stdout
    assert "train: unpaired, 6 + 6 unpaired images" in r.stdout
    manifest = (project / "data/pairs/manifest.csv").read_text()
    assert "testA/photo_1.png" in manifest and ",unpaired," in manifest
    ev = json.loads((project / "metrics/eval.json").read_text())
    assert {"cycle_A", "cycle_B", "identity_A", "identity_B"} <= set(ev) and ev["count_A"] == 2, ev
    assert 0 < ev["cycle_A"] < 1 and (project / "reports/best.png").is_file()
    card = json.loads((project / "models/export/model_card.json").read_text())
    assert card["registered_model"]["version"] == "1" and "A -> B" in card["model"]
    assert card["reverse_registered_model"]["name"] == "pix2pix-synthetic-BA"  # F: B -> A, a model of its own
    reverse = json.loads((project / "models/export/reverse/model_card.json").read_text())
    assert reverse["params"]["data"]["direction"] == "AtoB" and reverse["parity_max_abs_diff"]["onnx"] < 1e-3
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    client = TestClient(create_app(project, max_megapixels=1))
    tests = client.get("/api/test-images").json()
    assert len(tests) == 2 and all(t.startswith("testB-") for t in tests)  # BtoA: the label maps are the inputs
    r = client.post("/api/translate", params={"model": "pix2pix-synthetic", "test_id": tests[0], "refs": "1"})
    assert r.status_code == 200 and r.json()["target"] is None and r.json()["outputs"]["1"]["version"] == "1"
