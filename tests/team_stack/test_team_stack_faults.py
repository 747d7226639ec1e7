"""The team stack when things fail: a worker killed mid-run, the tracking server restarted
during training, the object store unreachable during the push. The folder's one stack
(conftest.py), after test_team_stack.py; each test leaves it whole again (workers back up, the
tracking server restarted, the store reachable).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from team_stack.stack import MODEL, Relay

pytestmark = [pytest.mark.slow, pytest.mark.server]


def test_a_killed_worker_crashes_its_run_and_frees_the_workspace(stack):
    import psutil

    e = stack.workspace("ws-e", train={"epochs": 60, "epochs_decay": 60})
    stack.deploy(e, "ws-e")
    run_id = stack.trigger("ws-e")
    deadline = time.time() + 300
    while not list((e / "models/checkpoints").glob("*.pt")) and time.time() < deadline:  # training has begun
        time.sleep(1)
    assert stack.flow_run(run_id)["state_type"] == "RUNNING"
    victims = []
    for name, entry in stack.state().items():  # the workers, with everything they started
        if name.startswith("worker-"):
            p = psutil.Process(entry["pid"])
            victims += [p, *p.children(recursive=True)]
    for p in victims:
        p.kill()
    psutil.wait_procs(victims, timeout=30)
    run = stack.wait_final(run_id, timeout=300)
    assert run["state_type"] in ("CRASHED", "FAILED"), run["state_type"]
    from pipeline.ops.flows import workspace_lock

    with workspace_lock(e):  # free again: the lock died with the run's process
        pass
    stack.up("workers")
    assert "up 2/2" in stack.cli("status").stdout
    again = stack.wait_final(stack.trigger("ws-e", overrides={"train.epochs": 1, "train.epochs_decay": 1}))
    assert again["state_type"] == "COMPLETED", f"{again['state']['message']}\n{stack.logs()}"


def test_tracking_server_restart_during_training(stack):
    """Training goes on while the server restarts; metrics of the outage arrive afterwards;
    the run registers exactly one version."""
    f = stack.workspace("ws-f", train={"epochs": 40, "epochs_decay": 40, "sample_every": 40})
    env = stack.client_env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro"],
        cwd=f,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        client = stack.mlflow_client()
        run_file = f / "models/checkpoints/mlflow_run.json"
        deadline = time.time() + 300
        while time.time() < deadline and not (
            run_file.is_file() and client.get_metric_history(json.loads(run_file.read_text())["run_id"], "G_L1")
        ):
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.5)
        run_id = json.loads(run_file.read_text())["run_id"]
        stack.cli("down", "mlflow")
        stack.cli("up", "mlflow")
        before = max(m.step for m in client.get_metric_history(run_id, "G_L1"))
        assert proc.poll() is None, "training ended before the tracking server came back: make it longer"
        out, _ = proc.communicate(timeout=900)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 0, out[-3000:]
    assert "MLflow unreachable" in out and "reachable again" in out, out[-3000:]
    steps = sorted(m.step for m in client.get_metric_history(run_id, "G_L1"))
    last_step = json.loads((f / "metrics/train/metrics.json").read_text()).get("step") or steps[-1]
    assert (
        steps == list(range(1, len(steps) + 1)) and steps[-1] >= last_step > before
    )  # nothing lost, logged after the restart
    assert client.get_run(run_id).info.status == "FINISHED"
    assert len(client.search_model_versions(f"name = '{MODEL}' and run_id = '{run_id}'")) == 1


def test_object_store_down_during_push(stack):
    g = stack.workspace("ws-g")
    relay = Relay(int(stack.settings["P2P_S3_PORT"]))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "dvc",
            "remote",
            "modify",
            "--local",
            "team",
            "endpointurl",
            f"http://127.0.0.1:{relay.port}",
        ],
        cwd=g,
        env=stack.client_env(),
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    stack.deploy(g, "ws-g")
    failed = stack.wait_final(stack.trigger("ws-g"))  # the store is unreachable from the workspace
    message = failed["state"]["message"]
    assert failed["state_type"] == "FAILED" and "dvc push to remote 'team' failed" in message, message
    assert "stays registered" in message and "\n" not in message.strip(), message
    run_id = json.loads((g / "models/checkpoints/mlflow_run.json").read_text())["run_id"]
    client = stack.mlflow_client()
    [mv] = client.search_model_versions(f"name = '{MODEL}' and run_id = '{run_id}'")
    assert f"version {mv.version} of {MODEL} stays registered" in message
    relay.start()
    try:
        again = stack.wait_final(stack.trigger("ws-g"))
        assert again["state_type"] == "COMPLETED", again["state"]["message"]
        r = subprocess.run(
            [sys.executable, "-m", "dvc", "status", "--cloud"],
            cwd=g,
            env=stack.client_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0 and "are in sync" in r.stdout, r.stdout + r.stderr
    finally:
        relay.stop()
    assert len(client.search_model_versions(f"name = '{MODEL}' and run_id = '{run_id}'")) == 1
