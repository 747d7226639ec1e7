"""Shared fixtures: tiny generated datasets and tiny configs, so every test runs offline on CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Two cores: one thread per pytest-xdist process (two of them), two when the suite runs alone.
THREADS = "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2"
os.environ.setdefault("OMP_NUM_THREADS", THREADS)
ROOT = Path(__file__).resolve().parents[1]
MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@pytest.fixture(autouse=True)
def _mlflow_globals_do_not_leak():
    """mlflow.set_tracking_uri/set_registry_uri also write os.environ (for subprocesses), so a
    test that points MLflow somewhere would send every later subprocess (stack workers, stages)
    and in-process client there. Each test ends with the URIs it started with."""
    saved_env = {k: os.environ.get(k) for k in MLFLOW_ENV}
    saved_globals = _mlflow_globals() if "mlflow" in sys.modules else (None, None)
    yield
    if "mlflow" in sys.modules:
        from mlflow.tracking import _tracking_service
        from mlflow.tracking._model_registry import utils as registry_utils

        _tracking_service.utils._tracking_uri, registry_utils._registry_uri = saved_globals
    for k, v in saved_env.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def _mlflow_globals() -> tuple[str | None, str | None]:
    from mlflow.tracking import _tracking_service
    from mlflow.tracking._model_registry import utils as registry_utils

    return _tracking_service.utils._tracking_uri, registry_utils._registry_uri


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """train/val/test folders of 32x32-per-half A|B synthetic facades."""
    from pipeline.data.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(root, {"train": 6, "val": 2, "test": 3}, size=32, seed=0)
    return root


def tiny_config(**train_overrides):
    """A 32x32 model small enough for many steps per second on a 2-core CPU."""
    from pix2pix.config import Config, DataConfig, ModelConfig, TrainConfig

    train = {
        "epochs": 1,
        "epochs_decay": 1,
        "batch_size": 2,
        "seed": 0,
        "device": "cpu",
        "log_every": 1,
        "sample_every": 1000,
        "keep_checkpoints": 0,
    }
    train.update(train_overrides)
    return Config(
        data=DataConfig(direction="BtoA", load_size=36, crop_size=32),
        model=ModelConfig(ngf=8, ndf=8),
        train=TrainConfig(**train),
    ).validate()


def run_cli(*args, cwd=None, env=None, timeout=600):
    """Run `python -m pix2pix.cli ...` as a user would; returns CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pix2pix.cli", *map(str, args)],
        cwd=cwd or ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_params(path: Path, **sections) -> Path:
    """params.yaml for tiny, fast pipeline runs; keyword sections override its values."""
    import yaml

    params = {
        "preset": "none",
        "recipe": "paper",
        "data": {
            "source": "synthetic",
            "synthetic": {"size": 32, "train": 8, "val": 2, "test": 3, "seed": 0},
            "split": {"val": 0.2, "test": 0.2, "seed": 0},
            "pairs": {"builder": "none", "size": 32, "seed": 0},
            "direction": "BtoA",
            "load_size": 36,
            "crop_size": 32,
            "preprocess": "resize_and_crop",
            "flip": True,
            "input_nc": 3,
            "output_nc": 3,
            "cache": True,
        },
        "model": {
            "ngf": 8,
            "ndf": 8,
            "netD": "patch",
            "n_layers_D": 3,
            "norm": "batch",
            "dropout": 0.5,
            "init_gain": 0.02,
        },
        "train": {
            "epochs": 1,
            "epochs_decay": 1,
            "batch_size": 4,
            "lr": 0.0002,
            "beta1": 0.5,
            "beta2": 0.999,
            "gan_mode": "vanilla",
            "lambda_l1": 100.0,
            "seed": 0,
            "device": "cpu",
            "amp": "auto",
            "num_workers": 0,
            "log_every": 1,
            "sample_every": 2,
            "checkpoint_every": 0,
            "keep_checkpoints": 1,
        },
        "evaluate": {"grid_images": 2},
        "export": {"formats": ["torchscript", "onnx"]},
        "promotion": {"metric": "l1", "min_improvement": 0.0},
    }
    for name, values in sections.items():
        if isinstance(values, dict):
            params[name].update(values)
        else:
            params[name] = values
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


PROJECT_FILES = ("pix2pix", "pipeline", "dvc.yaml", ".dvcignore", ".gitignore", "pyproject.toml")


def tool_env(**extra) -> dict:
    """Environment for subprocesses: this venv's `python` first on PATH, quiet and offline."""
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "OMP_NUM_THREADS": THREADS,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    for k in MLFLOW_ENV:  # each test names its own store, or uses the project default
        env.pop(k, None)
    env.update(extra)
    return env


def make_project(root: Path, **params) -> Path:
    """A fresh copy of the project (git + dvc initialised) with tiny params."""
    import shutil

    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, root / name)
    write_params(root / "params.yaml", **params)
    env = tool_env()
    for cmd in (
        ["git", "init", "-q"],
        ["git", "config", "user.email", "t@example.com"],
        ["git", "config", "user.name", "t"],
        [sys.executable, "-m", "dvc", "init", "-q"],
    ):
        subprocess.run(cmd, cwd=root, check=True, env=env, capture_output=True)
    shutil.copy(ROOT / ".dvc/config", root / ".dvc/config")  # the project's DVC settings (link type)
    for cmd in (["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=root, check=True, env=env, capture_output=True)
    return root


def dvc(project: Path, *args, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """`dvc ARGS` in `project` as a user runs it (this venv, offline, quiet)."""
    r = subprocess.run(
        [sys.executable, "-m", "dvc", *map(str, args)],
        cwd=project,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check:
        assert r.returncode == 0, f"dvc {' '.join(map(str, args))} failed:\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory, worker_id) -> tuple[Path, str]:
    """One tiny project after `git commit` and a full `dvc repro` (MLflow in its own sqlite
    file): the shared starting point of the end-to-end tests, made once per session - once for
    all of pytest-xdist's processes, the first to ask builds it under a lock. Returns (folder,
    the repro's output). Tests only read it; those that change it work on a `copy_workspace`."""
    import json
    import shutil

    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp()
    if worker_id != "master":  # xdist: every worker's basetemp sits in the session's folder
        shared = shared.parent
    project, done = shared / "reproduced" / "project", shared / "reproduced" / "done.json"
    with FileLock(str(shared / "reproduced.lock")):
        if not done.is_file():
            shutil.rmtree(project, ignore_errors=True)  # a process whose repro failed left it half made
            make_project(project)
            r = dvc(project, "repro", timeout=900)
            done.write_text(json.dumps({"stdout": r.stdout}))
    return project, json.loads(done.read_text())["stdout"]


def copy_workspace(src: Path, dest: Path) -> Path:
    """An independent copy of a reproduced workspace: git, DVC cache and state, outputs, and
    the MLflow store, whose absolute paths (artifact locations, the shared run's tracking URI)
    are moved to the copy, so nothing the copy logs or registers reaches the original."""
    import shutil
    import sqlite3

    shutil.copytree(src, dest, symlinks=True)
    old, new = str(src.resolve()), str(dest.resolve())
    run_file = dest / "models/checkpoints/mlflow_run.json"
    if run_file.is_file():
        text = run_file.read_text().replace(old, new)
        run_file.unlink()  # DVC keeps outputs read-only (hard links to its cache): replace, never edit
        run_file.write_text(text)
        dvc(dest, "commit", "--force", "--quiet")  # the train output changed: record it, or repro would rerun
    if (dest / "mlflow.db").is_file():
        with sqlite3.connect(dest / "mlflow.db") as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for table in tables:
                for column in db.execute(f'PRAGMA table_info("{table}")').fetchall():
                    if column[2].upper().startswith(("TEXT", "VARCHAR")):
                        db.execute(
                            f'UPDATE "{table}" SET "{column[1]}" = replace("{column[1]}", ?, ?) WHERE '
                            f'"{column[1]}" LIKE ?',
                            (old, new, f"%{old}%"),
                        )
    return dest


@pytest.fixture(scope="module")
def prefect_harness(tmp_path_factory):
    """Prefect's test harness (a temporary server) for the in-process flows of one module."""
    os.environ.setdefault("PREFECT_HOME", str(tmp_path_factory.mktemp("prefect-home")))
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # an earlier in-process test may have exported one
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    from prefect.testing.utilities import prefect_test_harness

    # Beside the team stack the temporary server can take minutes to answer (30 s by default).
    with prefect_test_harness(server_startup_timeout=300):
        yield


# The longest modules go first, longest first (measured: --durations=0 summed per module), so
# pytest-xdist (--dist loadfile hands out whole modules in collection order) starts the team
# stack at once and no long module is left to run alone at the end. (Two processes per core
# were measured too: 21.5 min against 22.0, each module slowed by the others as much as the
# waits were filled - summed test time 4,898 s against 2,570 - so one per core stays.)
LONG_FIRST = (
    "test_team_stack.py",  # tests/team_stack/: one unit, one stack (see below)
    "test_team_stack_faults.py",
    "test_pipeline_e2e.py",
    "test_reliability.py",
    "test_mlflow.py",
    "test_prefect_server.py",
    "test_train.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FIRST)))


# A test folder that shares a package-scoped fixture (tests/team_stack/: one real stack) goes to
# one pytest-xdist process as a single unit; everything else stays one unit per file (loadfile).
SHARED_FOLDERS = ("tests/team_stack/",)


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # before xdist's own, which answers for --dist
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadFileScheduling

    class FilesAndSharedFolders(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return next((f for f in SHARED_FOLDERS if nodeid.startswith(f)), None) or super()._split_scope(nodeid)

    return FilesAndSharedFolders(config, log)
