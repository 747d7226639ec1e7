"""The MLflow model registry: one registered model per dataset, versions with aliases.

The export stage registers each trained generator as a new version tagged with its test
metrics, data fingerprint and git commit, in the tracking store in force. The new version gets
the `challenger` alias; the very first version of a model also becomes `champion`. Moving
`champion` later is the promotion gate's job. Registering is idempotent (the checkpoint's
SHA-256 is a version tag), so the retrain flow registers an export made against another store
(a workspace moved to the team server) into the current one with the same call.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from pix2pix.config import METRIC_NAMES
from pix2pix.drift import REFERENCE_NAME

from ..config import PipelineConfig
from ..data.hashing import sha256
from ..data.sources import dataset_name
from ..paths import CHECKPOINTS, MODEL_CARD
from . import serving
from .run import git_info, project_root, shared_run, shown_uri, tracking_uri, warn_tracking

SERVING_CODE = Path(serving.__file__)  # the pyfunc model's code, packaged with each version
LIBRARY = Path(__file__).resolve().parents[2] / "pix2pix"
CHALLENGER, CHAMPION = "challenger", "champion"
# The test metrics a version carries as tags: the paired ones, FID/KID, an unpaired model's.
TAGGED_METRICS = (*METRIC_NAMES, "fid", "kid")
UNPAIRED = ("cycle_", "identity_")


def model_name(source: str) -> str:
    return f"pix2pix-{dataset_name(source)}"


def _requirements() -> list[str]:
    # The installed distributions' versions, read from their metadata: importing torchvision
    # or scipy for a version string costs seconds.
    from importlib.metadata import version

    def pinned(name: str) -> str:
        return f"{name}=={version(name).split('+')[0]}"

    return [
        pinned("torch"),
        pinned("torchvision"),
        pinned("onnxruntime"),
        f"pillow>={version('pillow').split('.')[0]}",
        "numpy",
        pinned("scipy"),  # the drift test of what the served model receives
    ]


def set_alias(client, name: str, alias: str, version: str, attempts: int = 3) -> None:
    """Point `alias` at `version`. MLflow's server inserts a new alias after looking it up, so
    two clients setting the same alias at once can collide (unique-key violation, HTTP 400);
    the retry finds the alias and updates it."""
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            client.set_registered_model_alias(name, alias, version)
            return
        except MlflowException as e:
            if attempt == attempts - 1 or "registered_model_alias_pk" not in str(e):
                raise


def _versions_of(client, name: str, run_id: str, checkpoint_sha256: str) -> list[int]:
    return sorted(
        int(mv.version)
        for mv in client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
        if (mv.tags or {}).get("checkpoint_sha256") == checkpoint_sha256
    )


def registered_before(client, name: str, run_id: str, checkpoint_sha256: str) -> str | None:
    """The version this run already registered for this exact checkpoint (a re-run of the export
    stage, a retried flow), so the registry never holds the same model twice."""
    found = _versions_of(client, name, run_id, checkpoint_sha256)
    return str(found[0]) if found else None


def keep_first_version(client, name: str, run_id: str, checkpoint_sha256: str) -> str:
    """The first version of this run's checkpoint, its copies deleted. MLflow's HTTP client
    resends a POST whose answer timed out or failed (5xx) though the server may have done it,
    so one busy `register_model` call can leave two versions of the same files."""
    first, *copies = _versions_of(client, name, run_id, checkpoint_sha256)
    for version in copies:
        client.delete_model_version(name, str(version))
    return str(first)


def model_artifacts(onnx_path: Path) -> dict[str, str]:
    """The registered pyfunc's files: the ONNX generator and, when export wrote one, the drift
    reference beside it (under the same name, so `pix2pix translate` finds it in the download)."""
    artifacts = {"generator": str(onnx_path)}
    reference = onnx_path.parent / REFERENCE_NAME
    if reference.is_file():
        artifacts["input_reference"] = str(reference)
    return artifacts


def register_generator(mlflow, name: str, onnx_path: Path, input_nc: int, output_nc: int, tags: dict[str, str]) -> str:
    """Log the pyfunc into the active run, register it, tag it, set aliases; returns the version.
    The drift reference beside the ONNX file (input_reference.json) goes into the model too, so
    every consumer of a version has it.
    `tags["checkpoint_sha256"]` makes it idempotent: that checkpoint's version from this run is reused."""
    from mlflow.exceptions import MlflowException
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    client = mlflow.MlflowClient()
    run_id = mlflow.active_run().info.run_id
    existing = registered_before(client, name, run_id, tags["checkpoint_sha256"])
    if existing is not None:
        return existing

    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, input_nc))]),
        outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, output_nc))]),
    )
    example = np.random.default_rng(0).integers(0, 256, (1, 32, 32, input_nc), dtype=np.uint8)
    with warnings.catch_warnings():
        # The explicit tensor signature replaces type-hint validation; silence MLflow's advice.
        warnings.filterwarnings("ignore", message=".*type hints to the `predict` method.*")
        info = mlflow.pyfunc.log_model(
            name="generator",
            python_model=str(SERVING_CODE),
            artifacts=model_artifacts(onnx_path),
            code_paths=[str(LIBRARY)],
            signature=signature,
            input_example=example,
            pip_requirements=_requirements(),
        )
    # Registered only once the model is logged whole, with its tags in the same call: a failed
    # upload leaves no version, and a version always carries the checkpoint that finds it again.
    mlflow.register_model(info.model_uri, name, tags={k: str(v) for k, v in tags.items()})
    version = keep_first_version(client, name, run_id, tags["checkpoint_sha256"])
    set_alias(client, name, CHALLENGER, version)
    try:
        client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:  # no champion yet: the first version takes the title
        set_alias(client, name, CHAMPION, version)
    return version


def register_export(config: PipelineConfig, card: dict, suffix: str = "", card_path: Path = MODEL_CARD) -> dict | None:
    """Register the export stage's ONNX generator (`card`: its model card) in the current store,
    in the training run or the run standing in for it, as `pix2pix-<dataset><suffix>`; returns
    the name, version and store, or None when tracking is unavailable (the exported files stay
    valid either way)."""
    name = model_name(config.data.source) + suffix
    kept = card.get("kept") or {
        "checkpoint": "last.pt",
        "path": str(CHECKPOINTS / "last.pt"),
        "step": card["trained_steps"],
    }
    tags = {
        "data_fingerprint": card["data_fingerprint"],
        "checkpoint_sha256": sha256(Path(kept["path"])),
        "kept_checkpoint": kept["checkpoint"],
        "kept_step": kept["step"],
        **git_info(project_root()),
    }
    best = kept.get("best") or {}
    tags.update({f"kept_{k}": f"{v:.6g}" for k, v in (best.get("means") or {}).items()})  # the choosing window's means
    tags.update(
        {f"test_{k}": v for k, v in (card["eval"] or {}).items() if k in TAGGED_METRICS or k.startswith(UNPAIRED)}
    )
    data = card["params"]["data"]
    with shared_run(config) as mlflow:
        if mlflow is None:
            return None
        try:
            mlflow.log_artifact(str(card_path), "export" + suffix)
            version = register_generator(
                mlflow, name, Path(card["files"]["onnx"]), data["input_nc"], data["output_nc"], tags
            )
        except Exception as e:  # noqa: BLE001 - the exported files on disk stay valid
            warn_tracking("model registration", e)
            return None
    return {"name": name, "version": version, "tracking_uri": shown_uri(tracking_uri())}
