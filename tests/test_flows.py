"""The retrain flow end to end under Prefect's test harness, on a tiny copy of the project."""

import json
import subprocess
import sys

import pytest

from conftest import copy_workspace, tool_env

# One group: one Prefect test harness and one workspace for the module, in one process.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("flows"), pytest.mark.usefixtures("prefect_harness")]


@pytest.fixture(scope="module")
def project(reproduced, tmp_path_factory):
    """A reproduced workspace (its export registered version 1 and crowned it), before any retrain."""
    return copy_workspace(reproduced[0], tmp_path_factory.mktemp("flow-project") / "project")


@pytest.fixture(scope="module")
def retrained(project):
    """The first retrain of the workspace (dvc repro is up to date; the gate crowns version 1)."""
    from pipeline.ops.flows import retrain

    return retrain(project=str(project), retries=0)


@pytest.fixture(scope="module")
def experiment(project, retrained):
    """An experiment run with overrides after the first retrain: version 2, asked for an
    improvement no model can make, so the champion stays version 1."""
    from pipeline.ops.flows import retrain

    overrides = {"train.epochs_decay": 3, "promotion.min_improvement": 1000.0}
    return retrain(project=str(project), overrides=overrides, run_name="longer", retries=0)


def _champion(project):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    return client, str(client.get_model_version_by_alias("pix2pix-synthetic", "champion").version)


def test_first_retrain_runs_the_pipeline_and_crowns_the_registered_model(project, retrained):
    summary = retrained
    assert summary["decision"] == "promoted"
    assert summary["model"] == {
        "name": "pix2pix-synthetic",
        "version": "1",
        "tracking_uri": f"sqlite:///{project / 'mlflow.db'}",
    }
    assert summary["run_id"] and set(summary["metrics"]) == {"l1", "psnr", "ssim"}
    assert _champion(project)[1] == "1"


def test_nothing_new_is_skipped(project, retrained):
    from pipeline.ops.flows import retrain

    retrain(project=str(project), retries=0)  # whatever ran last, this plain run is now the last success
    summary = retrain(project=str(project), retries=0)
    assert summary["decision"] == "skipped" and "nothing new" in summary["reason"]


def test_override_run_goes_through_the_gate(project, experiment):
    """An experiment run with overrides registers version 2 as challenger; the gate (asked for
    an improvement no model can make) keeps version 1 as champion and says why."""
    summary = experiment
    assert summary["model"]["version"] == "2" and summary["decision"] == "kept champion"
    assert "not better by at least 1000.0" in summary["reason"]
    client, champion = _champion(project)
    tags = client.get_model_version("pix2pix-synthetic", "2").tags
    assert tags["promotion_decision"] == "rejected" and tags["promotion_reason"] == summary["reason"]
    assert champion == "1"
    assert str(client.get_model_version_by_alias("pix2pix-synthetic", "challenger").version) == "2"
    # The run is a DVC experiment named as asked, with its own (committed) metrics.
    shown = subprocess.run(
        [sys.executable, "-m", "dvc", "exp", "show", "--json"],
        cwd=project,
        env=tool_env(),
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0 and '"longer"' in shown.stdout
    assert json.loads((project / "metrics/train/metrics.json").read_text())["steps"] == 2 * (1 + 3)


def test_failed_run_never_moves_an_alias(project, experiment):
    from pipeline.ops.flows import retrain

    client, before = _champion(project)
    challenger = str(client.get_model_version_by_alias("pix2pix-synthetic", "challenger").version)
    with pytest.raises(Exception, match="pipeline failed"):
        retrain(project=str(project), overrides={"train.epochs": -1}, retries=0)
    assert _champion(project)[1] == before
    assert str(client.get_model_version_by_alias("pix2pix-synthetic", "challenger").version) == challenger
    state = json.loads((project / ".retrain/state.json").read_text())
    assert state["summary"]["model"]["version"] == "2"  # the failed run recorded nothing


def test_a_second_retrain_on_the_same_workspace_is_refused(project):
    from pipeline.ops.flows import RetrainBusy, retrain, workspace_lock

    with workspace_lock(project):
        with pytest.raises(RetrainBusy, match="another retrain is already running"):
            retrain(project=str(project), force=True, retries=0)
