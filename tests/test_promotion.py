"""The champion/challenger gate against a real MLflow registry (sqlite in a temp dir)."""

import mlflow
import numpy as np
import pytest
from PIL import Image

from pipeline.tracking.promotion import promote


class Identity(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return np.asarray(model_input)


class Gray(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return np.full_like(np.asarray(model_input), 128)


class Broken(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        raise RuntimeError("out of memory")


NAME = "pix2pix-gate-test"


@pytest.fixture
def registry(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)  # the registry follows it (conftest puts both back afterwards)
    exp = mlflow.create_experiment("gate", artifact_location=(tmp_path / "artifacts").as_uri())

    def register(model) -> str:
        with mlflow.start_run(experiment_id=exp):
            info = mlflow.pyfunc.log_model(
                name="m", python_model=model, registered_model_name=NAME, pip_requirements=["numpy"]
            )
        return str(info.registered_model_version)

    yield register, mlflow.MlflowClient()
    mlflow.set_tracking_uri(None)


@pytest.fixture
def pairs(tmp_path):
    """Test pairs whose target equals the input: the identity model is perfect."""
    out = []
    rng = np.random.default_rng(0)
    for i in range(3):
        img = Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8))
        a, b = tmp_path / f"a{i}.png", tmp_path / f"b{i}.png"
        img.save(a)
        img.save(b)
        out.append((Image.open(a), Image.open(b)))  # as frozen_test_pairs gives them
    return out


def _champion(client):
    return str(client.get_model_version_by_alias(NAME, "champion").version)


def test_no_champion_promotes_the_first_version(registry, pairs):
    register, client = registry
    v1 = register(Gray())
    d = promote(mlflow, NAME, v1, pairs)
    assert d.promoted and "no champion" in d.reason and _champion(client) == v1
    assert client.get_model_version(NAME, v1).tags["promotion_decision"] == "promoted"


def test_better_challenger_is_promoted(registry, pairs):
    register, client = registry
    v1 = register(Gray())
    promote(mlflow, NAME, v1, pairs)
    v2 = register(Identity())
    d = promote(mlflow, NAME, v2, pairs, metric="l1", min_improvement=0.01)
    assert d.promoted and _champion(client) == v2
    assert d.scores["challenger"] == pytest.approx(0.0) and d.scores["champion"] > 0.1
    assert str(client.get_model_version_by_alias(NAME, "challenger").version) == v2


def test_worse_challenger_is_rejected_and_the_reason_recorded(registry, pairs):
    register, client = registry
    v1 = register(Identity())
    promote(mlflow, NAME, v1, pairs)
    v2 = register(Gray())
    d = promote(mlflow, NAME, v2, pairs, metric="psnr")
    assert not d.promoted and _champion(client) == v1
    tags = client.get_model_version(NAME, v2).tags
    assert tags["promotion_decision"] == "rejected" and "not better" in tags["promotion_reason"]
    assert float(tags["promotion_challenger"]) < float(tags["promotion_champion"])


def test_equal_within_margin_keeps_the_champion(registry, pairs):
    register, client = registry
    v1 = register(Identity())
    promote(mlflow, NAME, v1, pairs)
    v2 = register(Identity())
    d = promote(mlflow, NAME, v2, pairs, metric="l1", min_improvement=0.001)
    assert not d.promoted and _champion(client) == v1 and d.scores["improvement"] == pytest.approx(0.0)


def test_challenger_whose_evaluation_fails_is_never_promoted(registry, pairs):
    register, client = registry
    v1 = register(Gray())
    promote(mlflow, NAME, v1, pairs)
    v2 = register(Broken())
    d = promote(mlflow, NAME, v2, pairs)
    assert not d.promoted and "evaluation failed" in d.reason and "out of memory" in d.reason
    assert _champion(client) == v1


def test_unknown_metric_is_refused(registry, pairs):
    with pytest.raises(ValueError, match="promotion.metric"):
        promote(mlflow, NAME, "1", pairs, metric="fid")
