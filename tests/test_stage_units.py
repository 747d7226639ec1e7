"""Fast, in-process tests of the evaluate and export stages, the registry, dvclive history, the
MLflow callback and the plots renderer: a mistake there shows up in the fast tier, not only in
the end-to-end runs. One tiny workspace (download, split and a few training steps, in process)
serves the module."""

from __future__ import annotations

import csv
import json
from contextlib import chdir
from pathlib import Path

import pytest

from conftest import write_params


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """data/raw, data/pairs and models/checkpoints/{last,best}.pt of a tiny project, made in process
    (2 epochs of 2 steps, validated after each)."""
    from pipeline.config import load_config
    from pipeline.data.manifest import read_manifest, split_pairs
    from pipeline.paths import CHECKPOINTS
    from pipeline.stages import download, split
    from pix2pix.data import PairedDataset
    from pix2pix.train import Trainer

    root = tmp_path_factory.mktemp("stage-units")
    write_params(root / "params.yaml", evaluate={"grid_images": 2})
    with chdir(root):
        download.main()
        split.main()
        cfg = load_config().library()
        train = PairedDataset(split_pairs(read_manifest(), "train"), cfg.data)
        val = PairedDataset(split_pairs(read_manifest(), "val"), cfg.data, train=False)
        Trainer(cfg, train, CHECKPOINTS, val_data=val, progress=False).fit()
    return root


@pytest.fixture
def store(tmp_path, monkeypatch):
    """An empty sqlite tracking store in force for this test; the mlflow module is reset after."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    yield uri
    mlflow.set_tracking_uri(None)


def test_evaluate_writes_metrics_baselines_and_reports(workspace, monkeypatch, capsys):
    from pipeline.stages import evaluate

    monkeypatch.chdir(workspace)
    (workspace / "models/checkpoints/mlflow_run.json").unlink(missing_ok=True)  # untracked training
    evaluate.main()
    result = json.loads((workspace / "metrics/eval.json").read_text())
    assert result["split"] == "test" and result["count"] == 3  # write_params: 3 synthetic test pairs
    assert result["checkpoint"] == "best.pt" and result["checkpoint_step"] in (2, 4)  # evaluate.keep: best
    assert result["sharpness"] > 0 and result["baseline_sharpness"] < result["input_baseline_sharpness"]
    for name in ("l1", "psnr", "ssim"):
        assert {name, f"baseline_{name}", f"input_baseline_{name}"} <= set(result)
    assert 0 < result["l1"] < 2 and 0 < result["baseline_l1"] < 2
    assert result["l1_reduction_vs_baseline"] == pytest.approx(1 - result["l1"] / result["baseline_l1"], abs=1e-3)
    with open(workspace / "reports/eval_per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and [float(r["l1"]) for r in rows] == sorted(float(r["l1"]) for r in rows)
    for grid in ("best.png", "worst.png"):
        assert (workspace / "reports" / grid).stat().st_size > 0
    assert "not logging to MLflow" in capsys.readouterr().err  # untracked training: said once, goes on


def test_keep_last_or_a_missing_best_pt_uses_last_pt(workspace, monkeypatch, capsys):
    from pipeline.paths import kept_checkpoint

    monkeypatch.chdir(workspace)
    assert kept_checkpoint("last").name == "last.pt" and kept_checkpoint("best").name == "best.pt"
    monkeypatch.chdir(workspace / "data")  # no models/checkpoints/best.pt from here
    assert kept_checkpoint("best").name == "last.pt"
    assert "evaluate.keep: best, but models/checkpoints/best.pt is missing" in capsys.readouterr().err


def test_the_baselines_score_what_they_claim(workspace):
    import torch

    from pipeline.stages.evaluate import baseline_metrics, identity

    class Perfect(list):  # a "dataset" whose input equals its target
        pass

    batch = {"input": torch.zeros(2, 1, 8, 8), "target": torch.zeros(2, 3, 8, 8)}
    assert identity(batch).shape == (2, 3, 8, 8)  # grayscale input repeated to the target's channels
    ds = Perfect([{"input": torch.full((3, 8, 8), 0.5), "target": torch.full((3, 8, 8), 0.5), "name": "x"}])
    scores = baseline_metrics(identity, ds)
    assert scores["l1"] == 0 and scores["ssim"] == pytest.approx(1.0)


def test_export_writes_files_and_a_model_card_without_tracking(workspace, monkeypatch):
    from pipeline.stages import export

    monkeypatch.chdir(workspace)
    (workspace / "models/checkpoints/mlflow_run.json").unlink(missing_ok=True)
    export.main()
    card = json.loads((workspace / "models/export/model_card.json").read_text())
    assert set(card["files"]) == {"generator", "torchscript", "onnx"}
    assert all(Path(workspace, p).is_file() for p in card["files"].values())
    assert max(card["parity_max_abs_diff"].values()) < 1e-3
    kept = card["kept"]
    assert kept["checkpoint"] == "best.pt" and card["trained_steps"] == kept["step"] == kept["best"]["step"]
    assert kept["best"]["metric"] == "l1" and set(kept["best"]["means"]) >= {"val_l1", "val_ssim"}
    assert len(card["data_fingerprint"]) == 64 and card["model"].startswith("pix2pix generator (unet")
    assert card["registered_model"] is None  # nothing to register into without a run


def test_a_workspace_moved_to_another_store_registers_there_without_retraining(workspace, store, monkeypatch, capsys):
    """Training ran against store A (mlflow_run.json says so); store B is in force now: evaluate
    and export log into one stand-in run of B, tagged with where training ran, and the export's
    version is registered in B once, however often export runs."""
    import mlflow

    from pipeline.stages import evaluate, export
    from pipeline.tracking.run import RUN_FILE

    monkeypatch.chdir(workspace)
    old_store = f"sqlite:///{workspace / 'old-store.db'}"
    RUN_FILE.write_text(json.dumps({"run_id": "0123456789abcdef", "experiment_id": "1", "tracking_uri": old_store}))
    evaluate.main()
    export.main()
    export.main()  # a re-run (or the retrain flow's gate) reuses the version
    client = mlflow.MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["trained_run_id"] == "0123456789abcdef" and run.data.tags["trained_in"] == old_store
    assert "test_l1" in run.data.metrics and run.data.params["model.ngf"] == "8"
    versions = client.search_model_versions("name = 'pix2pix-synthetic'")
    assert [str(v.version) for v in versions] == ["1"] and versions[0].run_id == run.info.run_id
    for alias in ("champion", "challenger"):
        assert str(client.get_model_version_by_alias("pix2pix-synthetic", alias).version) == "1"
    card = json.loads((workspace / "models/export/model_card.json").read_text())
    assert card["registered_model"] == {"name": "pix2pix-synthetic", "version": "1", "tracking_uri": store}
    assert "logging into run" in capsys.readouterr().err


def test_a_resent_registration_leaves_one_version(workspace, store, monkeypatch):
    """MLflow's HTTP client resends a POST whose answer timed out; the server may have created the
    version already. Registration keeps the first version of the checkpoint and deletes the copy."""
    import mlflow

    from pipeline.stages import export
    from pipeline.tracking.run import RUN_FILE

    monkeypatch.chdir(workspace)
    RUN_FILE.write_text(json.dumps({"run_id": "fedcba9876543210", "experiment_id": "1", "tracking_uri": "x"}))
    register = mlflow.register_model

    def resent(*args, **kwargs):  # the server did the first request; its answer was lost
        register(*args, **kwargs)
        return register(*args, **kwargs)

    monkeypatch.setattr(mlflow, "register_model", resent)
    export.main()
    client = mlflow.MlflowClient(store)
    assert [str(v.version) for v in client.search_model_versions("name = 'pix2pix-synthetic'")] == ["1"]
    card = json.loads((workspace / "models/export/model_card.json").read_text())
    assert card["registered_model"]["version"] == "1"
    assert str(client.get_model_version_by_alias("pix2pix-synthetic", "challenger").version) == "1"


def test_set_alias_retries_only_the_concurrent_writers_collision():
    from mlflow.exceptions import MlflowException

    from pipeline.tracking.registry import set_alias

    class Client:
        def __init__(self, errors):
            self.errors, self.calls = list(errors), 0

        def set_registered_model_alias(self, name, alias, version):
            self.calls += 1
            if self.errors:
                raise MlflowException(self.errors.pop(0))

    racing = Client(["duplicate key value violates unique constraint registered_model_alias_pk"])
    set_alias(racing, "m", "champion", "2")
    assert racing.calls == 2
    refused = Client(["PERMISSION_DENIED"])
    with pytest.raises(MlflowException, match="PERMISSION_DENIED"):
        set_alias(refused, "m", "champion", "2")
    assert refused.calls == 1


def test_tracking_uris_shown_in_tags_and_logs_carry_no_password():
    from pipeline.tracking.run import shown_uri

    assert shown_uri("https://ann:secret@mlflow.example:5000/x") == "https://mlflow.example:5000/x"
    assert shown_uri("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"


def _history(folder: Path, name: str) -> list[tuple[int, float]]:
    with open(folder / "plots/metrics" / f"{name}.tsv") as f:
        return [(int(r["step"]), float(r[name])) for r in csv.DictReader(f, delimiter="\t")]


def test_dvclive_history_writes_one_file_per_quantity_and_resume_drops_the_steps_after_the_checkpoint(tmp_path):
    from pipeline.tracking.history import DvcLiveHistory

    first = DvcLiveHistory(tmp_path)
    first.on_train_start({"start_step": 0})
    for step in (1, 2, 3, 4):
        first.on_step(step, {"G_L1": float(step)})
    first.on_epoch_end(1, 4, {"val_l1": 0.5})
    assert first.finish({"steps": 4})["steps"] == 4
    assert _history(tmp_path, "G_L1") == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]
    assert _history(tmp_path, "val_l1") == [(4, 0.5)]

    resumed = DvcLiveHistory(tmp_path)  # killed after step 4, resumed from the step-2 checkpoint
    resumed.on_train_start({"start_step": 2})
    resumed.on_step(3, {"G_L1": 30.0})
    summary = resumed.finish({"steps": 3})
    assert _history(tmp_path, "G_L1") == [(1, 1.0), (2, 2.0), (3, 30.0)]  # no step twice
    assert _history(tmp_path, "val_l1") == []  # it was logged at step 4, after the checkpoint
    assert json.loads((tmp_path / "metrics.json").read_text())["steps"] == summary["steps"] == 3


class FlakyMlflow:
    """Stands in for the mlflow module: log_metrics fails while `down`."""

    def __init__(self):
        self.down, self.logged, self.images = False, [], []

    def log_metrics(self, metrics, step):
        if self.down:
            raise ConnectionError("connection refused\ndetails")
        self.logged.append((step, metrics))

    def log_image(self, image, key, step, synchronous):
        self.images.append((key, step, image.shape))


def test_mlflow_callback_keeps_reports_through_an_outage_and_sends_them_in_order(capsys):
    import torch

    from pipeline.tracking.callback import MlflowCallback

    fake = FlakyMlflow()
    cb = MlflowCallback(fake, outage_limit_s=60)
    cb.RETRY_EVERY_S = 0.0
    cb.on_step(1, {"G_L1": 1.0})
    fake.down = True
    cb.on_step(2, {"G_L1": 2.0})
    cb.on_samples(2, torch.zeros(3, 4, 4))  # a picture during the outage is skipped
    cb.on_epoch_end(1, 2, {"val_l1": 0.5})
    assert [s for s, _ in fake.logged] == [1] and len(cb.pending) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "MLflow unreachable (connection refused)" in err
    fake.down = False
    cb.on_train_end({})
    assert [s for s, _ in fake.logged] == [1, 2, 2] and fake.logged[2][1] == {"val_l1": 0.5, "epoch": 1}
    assert not cb.pending and fake.images == []
    cb.on_samples(3, torch.zeros(3, 4, 4))
    assert fake.images == [("samples", 3, (4, 4, 3))]


def test_mlflow_callback_gives_up_after_the_outage_limit(capsys):
    from pipeline.tracking.callback import MlflowCallback

    fake = FlakyMlflow()
    cb = MlflowCallback(fake, outage_limit_s=0.0)
    cb.RETRY_EVERY_S = 0.0
    fake.down = True
    cb.on_step(1, {"G_L1": 1.0})
    cb.on_step(2, {"G_L1": 2.0})  # past the limit: tracking is given up for the run
    assert cb.mlflow is None and cb.pending == []
    cb.on_step(3, {"G_L1": 3.0})  # and training goes on
    assert "continuing without tracking" in capsys.readouterr().err


def test_mlflow_callback_survives_a_server_gone_before_training_starts(capsys):
    """The server dies between the run's creation and the first step: log_params fails,
    tracking is given up, and the tags after it are skipped (no AttributeError on None)."""
    from pipeline.tracking.callback import MlflowCallback

    class Gone(FlakyMlflow):
        def log_params(self, params):
            raise ConnectionError("connection refused")

        def set_tags(self, tags):
            raise AssertionError("not called once tracking is given up")

    cb = MlflowCallback(Gone())
    info = {"params_G": 1, "params_D": 1, "train_size": 2, "receptive_fields_D": [70], "val_size": 0}
    cb.on_train_start({**info, "device": "cpu", "amp_dtype": "float32"})
    assert cb.mlflow is None and "log_params failed" in capsys.readouterr().err
    cb.on_step(1, {"G_L1": 1.0})  # training goes on
    cb.on_train_end({})


def test_plots_render_each_vega_spec_to_a_png(tmp_path):
    from pipeline.ops.plots import render

    spec = {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "data": {"values": [{"step": 1, "G_L1": 3.0}, {"step": 2, "G_L1": 2.0}]},
        "mark": "line",
        "encoding": {"x": {"field": "step", "type": "quantitative"}, "y": {"field": "G_L1", "type": "quantitative"}},
    }
    written = render({"metrics/train/plots/metrics/G_L1.tsv": [{"type": "vega", "content": spec}]}, tmp_path)
    assert written == [tmp_path / "G_L1.png"]
    assert written[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
