"""The main job as a user runs it: `dvc repro` on tiny params in a fresh copy of the project."""

import json
import subprocess
import sys
import time

import pytest
import yaml

from conftest import make_project, tool_env

pytestmark = pytest.mark.slow


def _env():
    return tool_env()


def dvc(project, *args, check=True, timeout=600):
    r = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=project, env=_env(), capture_output=True, text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, f"dvc {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("project"))


def test_repro_runs_every_stage_and_writes_its_outputs(project):
    r = dvc(project, "repro")
    for stage in ("download", "split", "train", "evaluate", "export"):
        assert f"Running stage '{stage}'" in r.stdout
    assert len(list((project / "data/raw/train").glob("*.png"))) == 8
    manifest = (project / "data/pairs/manifest.csv").read_text().splitlines()
    assert manifest[0].startswith("id,split,a_path,b_path") and len(manifest) == 1 + 13
    assert (project / "models/checkpoints/last.pt").is_file()
    train = json.loads((project / "metrics/train.json").read_text())
    assert train["steps"] == 4 and train["epochs"] == 2
    assert (project / "metrics/train_loss.csv").read_text().startswith("step,G_GAN,G_L1,D_real,D_fake,lr,images_per_sec")
    ev = json.loads((project / "metrics/eval.json").read_text())
    assert ev["count"] == 3 and {"l1", "psnr", "ssim", "baseline_l1"} <= set(ev)
    for name in ("eval_per_image.csv", "best.png", "worst.png"):
        assert (project / "reports" / name).is_file()
    card = json.loads((project / "models/export/model_card.json").read_text())
    assert card["parity_max_abs_diff"]["onnx"] <= 1e-4 and card["eval"]["l1"] == ev["l1"]
    assert (project / "models/export/generator.onnx").is_file() and (project / "models/export/generator.ts").is_file()


def test_second_repro_is_a_no_op(project):
    r = dvc(project, "repro")
    assert "Running stage" not in r.stdout
    assert "up to date" in (r.stdout + r.stderr).lower()


def test_metrics_and_params_commands(project):
    r = dvc(project, "metrics", "show", "--json")
    shown = json.loads(r.stdout)
    assert "l1" in json.dumps(shown) and "psnr" in json.dumps(shown)
    plots = json.loads(dvc(project, "plots", "show", "--json").stdout)["data"]
    assert set(plots) == {"l1_loss", "adversarial_losses", "validation_l1", "validation_psnr_ssim"}
    # Offline rendering to PNG (dvc's own HTML needs a CDN).
    r = subprocess.run([sys.executable, "-m", "pipeline.plots"], cwd=project, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    pngs = sorted(p.name for p in (project / "reports/plots").glob("*.png"))
    assert pngs == ["adversarial_losses.png", "l1_loss.png", "validation_l1.png", "validation_psnr_ssim.png"]
    assert all((project / "reports/plots" / n).read_bytes()[:4] == b"\x89PNG" for n in pngs)


def test_changing_a_train_param_reruns_only_train_evaluate_export(project):
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run(["git", "commit", "-qm", "lock"], cwd=project, check=True)
    r = dvc(project, "exp", "run", "-S", "train.epochs_decay=2", "-n", "longer")
    assert "Running stage 'train'" in r.stdout and "Running stage 'evaluate'" in r.stdout and "Running stage 'export'" in r.stdout
    assert "Running stage 'download'" not in r.stdout and "Running stage 'split'" not in r.stdout
    assert json.loads((project / "metrics/train.json").read_text())["steps"] == 6
    shown = dvc(project, "exp", "show", "--json")
    assert "longer" in shown.stdout
    diff = dvc(project, "params", "diff", "HEAD")
    assert "train.epochs_decay" in diff.stdout


def test_a_killed_training_resumes_on_the_next_repro(project):
    import psutil

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"].update(epochs=200, epochs_decay=0, checkpoint_every=2)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    started = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=project, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ckpt = project / "models/checkpoints/last.pt"
    deadline = time.time() + 300
    killed = None
    while time.time() < deadline and proc.poll() is None:
        # DVC runs the stage through a shell: kill the shell and the python under it.
        train = [p for p in psutil.Process(proc.pid).children(recursive=True) if "pipeline.train" in " ".join(p.cmdline())]
        if train and ckpt.is_file() and ckpt.stat().st_mtime > started:  # a checkpoint of this run
            time.sleep(1.0)  # let a few more steps and checkpoints happen
            for p in train:
                p.kill()  # SIGKILL: no chance to save anything more
            psutil.wait_procs(train, timeout=10)
            killed = True
            break
        time.sleep(0.2)
    proc.communicate(timeout=120)
    assert killed and proc.returncode != 0
    from pix2pix.checkpoint import load_checkpoint

    saved_step = load_checkpoint(ckpt)["step"]
    assert saved_step > 0
    r = dvc(project, "repro", "train")
    assert f"resuming at step {saved_step}" in r.stdout
    assert json.loads((project / "metrics/train.json").read_text())["resumed_from_step"] == saved_step
