"""MLflow against a real tracking server: the pipeline's run, curves, images and registry."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, tool_env, write_params
from servers import MlflowServer, free_port

pytestmark = [pytest.mark.slow, pytest.mark.server]
STAGES = ("download", "split", "train", "evaluate", "export")


def _env(**extra):
    return tool_env(**extra)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).wait_ready()
    yield srv.uri
    srv.stop()


def run_stage(project, stage, **env):
    r = subprocess.run(
        [sys.executable, "-m", f"pipeline.stages.{stage}"],
        cwd=project,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, f"{stage} failed:\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture(scope="module")
def tracked_project(server, tmp_path_factory):
    project = tmp_path_factory.mktemp("tracked")
    write_params(project / "params.yaml", train={"sample_every": 2})
    for stage in STAGES:
        run_stage(project, stage, MLFLOW_TRACKING_URI=server)
    # The run of this first repro, whatever later tests train into the same experiment.
    (project / "first_run_id").write_text(
        json.loads((project / "models/checkpoints/mlflow_run.json").read_text())["run_id"]
    )
    return project


def test_run_holds_params_curves_images_and_test_metrics(server, tracked_project):
    from mlflow import MlflowClient

    client = MlflowClient(server)
    run = client.get_run((tracked_project / "first_run_id").read_text())
    # One run for the repro: evaluate's metrics and export's version 1 went into the training run.
    assert client.get_model_version("pix2pix-synthetic", "1").run_id == run.info.run_id
    assert run.data.params["train.lambda_l1"] == "100.0" and run.data.params["data.source"] == "synthetic"
    assert run.data.params["model.ngf"] == "8" and int(run.data.params["params_G"]) > 0
    for loss in ("G_GAN", "G_L1", "D_real", "D_fake", "lr", "images_per_sec"):
        assert len(client.get_metric_history(run.info.run_id, loss)) == 4, loss  # 4 steps, log_every=1
    assert len(client.get_metric_history(run.info.run_id, "val_l1")) == 2  # 2 epochs
    for key in ("test_l1", "test_psnr", "test_ssim"):
        assert key in run.data.metrics
    tags = run.data.tags
    assert len(tags["data_fingerprint"]) == 64 and tags["device"] == "cpu" and "torch" in tags
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    steps = {p.split("+step+")[1].split("+")[0] for p in images if "+step+" in p}
    assert len(steps) >= 2, images
    assert {a.path for a in client.list_artifacts(run.info.run_id, "eval")} >= {
        "eval/eval.json",
        "eval/eval_per_image.csv",
        "eval/best.png",
    }
    assert run.info.status == "FINISHED"


def test_registered_version_has_signature_tags_and_aliases(server, tracked_project):
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(server)
    name = "pix2pix-synthetic"
    v1 = client.get_model_version(name, "1")
    assert float(v1.tags["test_l1"]) > 0 and len(v1.tags["data_fingerprint"]) == 64
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(name, "challenger").version) == "1"
    mlflow.set_tracking_uri(server)
    info = mlflow.models.get_model_info(f"models:/{name}/1")
    assert info.signature.inputs.to_dict()[0]["tensor-spec"]["dtype"] == "uint8"

    # The served model records what it receives against the registered training reference,
    # into $P2P_INPUT_LOG, which `pix2pix drift` reports.
    log = tracked_project / "served-inputs.jsonl"
    os.environ["P2P_INPUT_LOG"] = str(log)
    try:
        model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    finally:
        del os.environ["P2P_INPUT_LOG"]
    image = np.random.default_rng(0).integers(0, 256, (2, 40, 50, 3), dtype=np.uint8)
    out = model.predict(image)
    assert out.shape == (2, 40, 50, 3) and out.dtype == np.uint8
    monitor = model.unwrap_python_model().monitor
    assert monitor.report()["count"] == 2 and len(log.read_text().splitlines()) == 2
    reference = next(Path(mlflow.artifacts.download_artifacts(f"models:/{name}/1")).rglob("input_reference.json"))
    r = run_cli("drift", "--log", log, "--reference", reference)
    assert r.returncode == 0 and json.loads(r.stdout)["count"] == 2 and not json.loads(r.stdout)["tested"], r.stderr

    # Exporting the same checkpoint again (a re-run stage, a retried flow) registers nothing new.
    run_stage(tracked_project, "export", MLFLOW_TRACKING_URI=server)
    assert [str(v.version) for v in client.search_model_versions(f"name = '{name}'")] == ["1"]
    # A model trained anew is a new version: it becomes challenger, the champion stays.
    write_params(tracked_project / "params.yaml", train={"sample_every": 2, "seed": 1})
    for stage in ("train", "export"):
        run_stage(tracked_project, stage, MLFLOW_TRACKING_URI=server)
    assert str(client.get_model_version_by_alias(name, "challenger").version) == "2"
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"


def test_unreachable_tracking_server_does_not_lose_training(tmp_path):
    write_params(tmp_path / "params.yaml")
    dead = f"http://127.0.0.1:{free_port()}"
    env = {"MLFLOW_TRACKING_URI": dead, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}
    for stage in STAGES:
        r = run_stage(tmp_path, stage, **env)
        if stage == "train":
            assert "warning: MLflow start failed" in r.stderr and "results stay on disk" in r.stderr
    assert (tmp_path / "models/checkpoints/last.pt").is_file()
    assert (tmp_path / "metrics/eval.json").is_file() and (tmp_path / "models/export/generator.onnx").is_file()


def test_default_store_is_an_absolute_sqlite_file_in_the_project(tmp_path, monkeypatch):
    from pipeline.tracking import run as tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    exp_copy = tmp_path / ".dvc" / "tmp" / "exps" / "tmpabc"
    exp_copy.mkdir(parents=True)
    monkeypatch.chdir(exp_copy)
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    # Given the project folder, the working directory does not matter (Prefect tasks pass it).
    other = tmp_path / "elsewhere"
    monkeypatch.chdir(other.parent)
    assert (
        tracking.tracking_uri(exp_copy)
        == tracking.tracking_uri(tmp_path)
        == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    )
    from pipeline.data.sources import dataset_name

    assert dataset_name("../shared/datasets/facades/") == "facades"
    assert dataset_name("https://x.org/data/My_Maps.tar.gz") == "my-maps"


def test_model_page_api_works_against_the_tracking_server(server, tracked_project, monkeypatch):
    """The page's API (pipeline.ops.app) over a tracking server instead of the sqlite default."""
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from pipeline.ops.app import create_app

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    client = TestClient(create_app(tracked_project, max_megapixels=1))
    models = client.get("/api/models").json()
    assert [m["name"] for m in models] == ["pix2pix-synthetic"] and models[0]["aliases"]["champion"] == "1"
    info = client.get("/api/version", params={"model": "pix2pix-synthetic", "ref": "champion"}).json()
    assert info["version"] == "1" and "l1" in info["metrics"] and len(info["data_fingerprint"]) == 64
    buffer = io.BytesIO()
    Image.new("RGBA", (40, 30), (200, 10, 10, 128)).save(buffer, "PNG")
    r = client.post(
        "/api/translate",
        params={"model": "pix2pix-synthetic", "refs": "champion,challenger"},
        content=buffer.getvalue(),
    )
    assert (
        r.status_code == 200 and set(r.json()["outputs"]) == {"champion", "challenger"} and r.json()["size"] == [40, 30]
    )
    versions = {ref: out["version"] for ref, out in r.json()["outputs"].items()}
    test_id = client.get("/api/test-images").json()[0]
    r = client.post("/api/translate", params={"model": "pix2pix-synthetic", "test_id": test_id})
    assert r.status_code == 200 and r.json()["target"].startswith("data:image/png;base64,")
    # What the versions received, against their training inputs: both were trained on the same
    # data (one reference), so each reports all three inputs: two uploads and the test image.
    for ref in ("champion", "challenger"):
        drift = client.get("/api/drift", params={"model": "pix2pix-synthetic", "ref": ref}).json()
        assert drift["version"] == versions[ref] and drift["count"] == 3 and drift["tested"] is False, drift
        assert drift["log"] == str(tracked_project / "monitoring/inputs.jsonl")
    assert len((tracked_project / "monitoring/inputs.jsonl").read_text().splitlines()) == 3
    r = client.post("/api/translate", params={"model": "pix2pix-synthetic"}, content=b"")
    assert r.status_code == 400 and "empty (0 bytes)" in r.json()["error"]
    r = client.get("/api/version", params={"model": "pix2pix-synthetic", "ref": "staging"})
    assert r.status_code == 400 and "no version or alias 'staging'" in r.json()["error"]
