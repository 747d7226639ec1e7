"""A real Prefect server on 127.0.0.1: serve the scheduled deployment, trigger it, watch it finish."""

import json
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import copy_workspace, tool_env
from servers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.server]


def _wait(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(1)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def _stop_group(proc):
    """The process and everything it started (each runs in its own group), as the stack stops
    its services; 60 s before SIGKILL on a loaded machine."""
    from pipeline.ops.processes import stop_group

    stop_group(proc.pid, timeout=60)


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """One Prefect server for the module's tests (starting one costs ~10 s of CPU): the
    environment its clients need and its logs folder. Each test names its own flows and pool."""
    server, env, logs = _start_server(tmp_path_factory.mktemp("prefect-server"))
    try:
        yield env, logs
    finally:
        _stop_group(server)


def _start_server(tmp_path):
    """A Prefect server on a free port of 127.0.0.1 (its own process group); returns it, the
    environment its clients need and the logs folder, once it answers."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = tool_env(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_API_URL=api)
    logs = tmp_path / "logs"
    logs.mkdir()
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env={k: v for k, v in env.items() if k != "PREFECT_API_URL"},
        stdout=open(logs / "server.log", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def healthy():
        try:
            return urllib.request.urlopen(f"{api}/health", timeout=2).status == 200
        except OSError:
            return False

    try:
        _wait(healthy, 120, "the Prefect server")
    except BaseException:
        _stop_group(server)
        raise
    return server, env, logs


def test_scheduled_deployment_runs_to_completion(tmp_path, reproduced, prefect_server):
    project = copy_workspace(reproduced[0], tmp_path / "project")
    env, logs = prefect_server
    serve = None
    try:
        serve = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline.ops.flows",
                "serve",
                "--project",
                str(project),
                "--name",
                "nightly",
                "--cron",
                "0 3 * * 1",
            ],
            cwd=project,
            env=env,
            stdout=open(logs / "serve.log", "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its flow runs stop with it
        )

        def prefect(*args):
            return subprocess.run(
                [sys.executable, "-m", "prefect", *args], env=env, capture_output=True, text=True, timeout=120
            )

        inspected = _wait(
            lambda: (r := prefect("deployment", "inspect", "pix2pix-retrain/nightly")).returncode == 0 and r.stdout,
            120,
            "the deployment",
        )
        assert "0 3 * * 1" in inspected

        run = prefect("deployment", "run", "pix2pix-retrain/nightly")
        assert run.returncode == 0, run.stdout + run.stderr
        run_id = next(line.split()[-1] for line in run.stdout.splitlines() if "UUID" in line)

        def final_state():
            r = prefect("flow-run", "inspect", run_id)
            for state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                if (
                    f"type=StateType.{state}" in r.stdout
                    or f"'type': '{state}'" in r.stdout
                    or f"state_type={state}" in r.stdout
                ):
                    return state
            return None

        state = _wait(final_state, 480, "the flow run to finish")
        assert state == "COMPLETED", (logs / "serve.log").read_text()[-3000:]
        summary = json.loads((project / ".retrain/state.json").read_text())["summary"]
        assert summary["decision"] == "promoted" and summary["model"]["version"] == "1"
    finally:
        if serve is not None:
            _stop_group(serve)  # before the server stops, or it hangs pausing deployments on a dead server


def test_batch_shards_run_as_flow_runs_of_a_work_pool(tmp_path, reproduced, prefect_server):
    """The translate flow sends its two shards to the `pix2pix-translate-shard` deployment on a
    process work pool; a real worker runs them; the job's results are whole."""
    import csv

    from PIL import Image

    from pipeline.data.synthetic import generate

    project = copy_workspace(reproduced[0], tmp_path / "project")
    generate(tmp_path / "data", {"test": 8}, size=32, seed=5)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for i, path in enumerate(sorted((tmp_path / "data" / "test").glob("*.png"))):
        Image.open(path).convert("RGB").crop((32, 0, 64, 32)).save(inputs / f"{i}.png")
    env, logs = prefect_server
    worker = None
    try:

        def run(*args, timeout=300):
            return subprocess.run(
                [sys.executable, *args], env=env, cwd=project, capture_output=True, text=True, timeout=timeout
            )

        created = run("-m", "prefect", "work-pool", "create", "batch", "--type", "process")
        assert created.returncode == 0, created.stdout + created.stderr
        deployed = run("-m", "pipeline.ops.batch", "deploy", "--pool", "batch", "--name", "shards")
        assert deployed.returncode == 0 and "pix2pix-translate-shard/shards" in deployed.stdout, deployed.stderr
        worker = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", "batch", "--limit", "2"],
            env=env, cwd=project, stdout=open(logs / "worker.log", "w"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        out = tmp_path / "out"
        job = run(
            "-m", "pipeline.ops.batch", "run", "--model", "models:/pix2pix-synthetic@champion", "--input",
            str(inputs), "--output", str(out), "--shards", "2", "--deployment", "shards", timeout=600,
        )  # fmt: skip
        assert job.returncode == 0, job.stderr[-3000:] + (logs / "worker.log").read_text()[-3000:]
        lines = job.stdout.splitlines()
        summary = json.loads("\n".join(lines[max(i for i, line in enumerate(lines) if line == "{") :]))
        assert summary["ok"] == 8 and summary["translated"] == 8 and summary["version"] == "1"
        with open(out / "results.csv", newline="") as f:
            assert len(list(csv.DictReader(f))) == 8
        runs = run("-m", "prefect", "flow-run", "ls", "--flow-name", "pix2pix-translate-shard", "-o", "json")
        shard_runs = json.loads(runs.stdout)
        assert len(shard_runs) == 2 and all("COMPLETED" in json.dumps(r.get("state")) for r in shard_runs), runs.stdout
    finally:
        if worker is not None:  # before the server stops, or it waits on a dead one
            _stop_group(worker)
