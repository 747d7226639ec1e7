"""FID and KID through the real code path, offline: a locally made weights file of the right
architecture (torch-fidelity's InceptionV3, randomly initialised) stands in for the download."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
import torch

from pix2pix.errors import ConfigError

pytestmark = pytest.mark.slow  # InceptionV3 at 299x299 on a CPU: seconds per dozen images


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory) -> Path:
    """A state dict of FID's InceptionV3 architecture, built without any download."""
    import torch_fidelity.feature_extractor_inceptionv3 as fx

    path = tmp_path_factory.mktemp("inception") / "weights-inception-test.pth"
    torch.manual_seed(0)
    with (
        mock.patch.object(fx, "load_state_dict_from_url", lambda *a, **k: {}),
        mock.patch.object(fx.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None),
    ):
        net = fx.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for m in net.modules():  # variance-keeping weights: PyTorch's default would fade to nothing over 94 layers
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    torch.save(net.state_dict(), path)
    return path


def _images(seed: int, n: int = 6) -> torch.Tensor:
    return torch.rand(n, 3, 48, 48, generator=torch.Generator().manual_seed(seed))


def test_our_fid_and_kid_are_torchmetrics_own_with_the_same_extractor(inception_weights):
    from torchmetrics.image.fid import FrechetInceptionDistance

    from pix2pix.fid import InceptionDistances

    real, fake = _images(0), _images(1) * 0.5  # a darker, blurrier "generator"
    ours = InceptionDistances(inception_weights, num_images=6)
    ours.update(fake[:3], real[:3])
    ours.update(fake[3:], real[3:])
    scores = ours.compute()
    reference = FrechetInceptionDistance(
        feature=2048, normalize=True, feature_extractor_weights_path=str(inception_weights)
    )
    reference.update(real, real=True)
    reference.update(fake, real=False)
    assert scores["fid"] == pytest.approx(float(reference.compute()), rel=1e-4)
    assert scores["fid"] > 0 and scores["kid"] != 0 and scores["kid_std"] >= 0
    same = InceptionDistances(inception_weights, num_images=6)
    same.update(real, real)
    assert abs(same.compute()["fid"]) < scores["fid"] / 10  # a set against itself is (close to) 0


def test_missing_or_foreign_weights_are_one_line(tmp_path, monkeypatch):
    from pix2pix.fid import WEIGHTS_FILE, InceptionDistances, find_weights, looked_in

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert find_weights("") is None and looked_in("") == str(tmp_path / "hub/checkpoints" / WEIGHTS_FILE)
    assert find_weights(str(tmp_path / "nope.pth")) is None and find_weights("download") == "download"
    foreign = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, foreign)
    assert find_weights(str(foreign)) == foreign
    with pytest.raises(ConfigError) as e:
        InceptionDistances(foreign, 4)
    assert str(e.value).startswith(f"{foreign}: not the FID InceptionV3 weights") and "\n" not in str(e.value)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="not a readable weights file"):
        InceptionDistances(garbage, 4)


def test_the_evaluate_stage_reports_fid_and_kid_when_the_weights_are_there(inception_weights, tmp_path, capsys):
    from pipeline.stages.evaluate import inception_distances
    from pix2pix.data import PairedDataset

    from conftest import tiny_config

    cfg = tiny_config()
    from pipeline.data.synthetic import generate

    generate(tmp_path / "data", {"test": 3}, size=32, seed=0)
    test = PairedDataset(tmp_path / "data/test", cfg.data, train=False)
    scores = inception_distances(
        str(inception_weights), lambda x: x.mean(1, keepdim=True).expand(-1, 3, -1, -1), test, "cpu"
    )
    assert set(scores) == {"fid", "kid", "kid_std"} and scores["fid"] > 0
    assert inception_distances(str(tmp_path / "missing.pth"), None, test, "cpu") == {}
    err = capsys.readouterr().err
    assert f"FID/KID skipped: no Inception weights at {tmp_path / 'missing.pth'}" in err and err.count("\n") == 1
