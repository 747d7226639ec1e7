"""Pair builders on a tiny folder of generated photos, and the presets."""

import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pipeline import presets
from pipeline.config import PairsConfig, config_from_dict
from pipeline.data.builders import build_pairs
from pix2pix.config import ConfigError, build_section

from conftest import tool_env, write_params


def _photos(folder, sizes=((80, 60), (50, 90), (64, 64))):
    """Smooth colour photos of different sizes and aspects, with a few sharp shapes in them."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(sizes):
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([xx / w, yy / h, 0.5 + 0.5 * np.sin(xx / 7.0)], -1) * 200 + 20
        img[h // 4 : h // 2, w // 4 : w // 2] = rng.integers(0, 255, 3)  # a block: edges to find
        Image.fromarray(img.astype(np.uint8)).save(folder / f"photo {i}.jpg" if i % 2 else folder / f"p{i}.png")
    return folder


def _cfg(builder, **extra):
    return build_section(PairsConfig, {"builder": builder, "size": 32, "seed": 3, **extra}, "data.pairs").validate()


def _halves(path):
    pair = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert pair.shape == (32, 64, 3)
    return pair[:, :32], pair[:, 32:]


@pytest.mark.parametrize("builder", ["grayscale", "edges", "downscale", "noise"])
def test_each_builder_writes_square_pairs_deterministically(tmp_path, builder):
    photos = _photos(tmp_path / "photos")
    report = build_pairs(photos, tmp_path / "a", _cfg(builder))
    build_pairs(photos, tmp_path / "b", _cfg(builder))
    assert report == {"builder": builder, "pairs": 3, "rejected": 0}
    outputs = sorted((tmp_path / "a").iterdir())
    assert [p.name for p in outputs] == ["p0.png", "p2.png", "photo 1.png"]
    for p in outputs:
        assert p.read_bytes() == (tmp_path / "b" / p.name).read_bytes()  # same seed, same bytes
        built, photo = _halves(p)
        assert not np.array_equal(built, photo)
        if builder == "grayscale":
            assert (built[..., 0] == built[..., 1]).all() and (built[..., 1] == built[..., 2]).all()
            luma = np.asarray(Image.fromarray(photo.astype(np.uint8)).convert("L")).astype(int)
            assert np.abs(built[..., 0] - luma).max() <= 1
        elif builder == "edges":
            values = set(np.unique(built))
            assert values <= {0, 255} and 0 in values  # dark lines on white
            assert (built == 255).mean() > 0.7  # thin lines: mostly white
        elif builder == "downscale":
            assert np.abs(built - photo).mean() < 30  # blurred, not unrelated
        else:
            assert 3 < np.abs(built - photo).mean() < 60


def test_noise_depends_on_the_seed_and_the_photo(tmp_path):
    photos = _photos(tmp_path / "photos", sizes=((40, 40), (40, 40)))
    build_pairs(photos, tmp_path / "s3", _cfg("noise"))
    build_pairs(
        photos,
        tmp_path / "s4",
        build_section(PairsConfig, {"builder": "noise", "size": 32, "seed": 4}, "data.pairs").validate(),
    )
    assert (tmp_path / "s3/p0.png").read_bytes() != (tmp_path / "s4/p0.png").read_bytes()
    noise0 = _halves(tmp_path / "s3/p0.png")[0] - _halves(tmp_path / "s3/p0.png")[1]
    noise1 = _halves(tmp_path / "s3/photo 1.png")[0] - _halves(tmp_path / "s3/photo 1.png")[1]
    assert not np.array_equal(noise0, noise1)  # each photo draws its own noise


def test_any_size_and_aspect_is_centre_cropped(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    wide = np.zeros((20, 100, 3), np.uint8)
    wide[:, 45:55] = 255  # a white band in the middle: scaled x1.6 it spans crop columns 8-24
    Image.fromarray(wide).save(photos / "wide.png")
    build_pairs(photos, tmp_path / "out", _cfg("grayscale"))
    _, photo = _halves(tmp_path / "out/wide.png")
    assert photo[:, 12:20].mean() > 200 and photo[:, :4].mean() < 30 and photo[:, -4:].mean() < 30


def test_split_folders_are_kept_and_the_input_follows_the_direction(tmp_path):
    photos = tmp_path / "photos"
    _photos(photos / "train", sizes=((40, 40),))
    _photos(photos / "test", sizes=((40, 40),))
    build_pairs(photos, tmp_path / "ab", _cfg("grayscale"), direction="AtoB")
    build_pairs(photos, tmp_path / "ba", _cfg("grayscale"), direction="BtoA")
    assert sorted(p.relative_to(tmp_path / "ab").as_posix() for p in (tmp_path / "ab").rglob("*.png")) == [
        "test/p0.png",
        "train/p0.png",
    ]
    left_ab, right_ab = _halves(tmp_path / "ab/train/p0.png")
    left_ba, right_ba = _halves(tmp_path / "ba/train/p0.png")
    assert np.array_equal(left_ab, right_ba) and np.array_equal(right_ab, left_ba)


def test_unreadable_photos_are_rejected_with_a_reason(tmp_path):
    photos = _photos(tmp_path / "photos", sizes=((40, 40),))
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "notes.png").write_text("not an image")
    report = build_pairs(photos, tmp_path / "out", _cfg("downscale"))
    assert report["pairs"] == 1 and report["rejected"] == 2
    rejected = (tmp_path / "out/rejected_photos.csv").read_text()
    assert "empty.jpg" in rejected and "notes.png" in rejected

    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    shutil.copy(photos / "empty.jpg", only_bad)
    from pix2pix.data import ImageError

    with pytest.raises(ImageError, match="none of the 1 photos could be read"):
        build_pairs(only_bad, tmp_path / "out2", _cfg("downscale"))


@pytest.mark.parametrize(
    "values,key",
    [
        ({"builder": "sepia"}, "data.pairs.builder"),
        ({"builder": "noise", "noise": {"sigma": 0, "jpeg_quality": 0}}, "data.pairs.noise"),
        ({"builder": "edges", "edges": {"low": 0.5, "high": 0.1}}, "data.pairs.edges.low"),
        ({"builder": "noise", "colour": 1}, "data.pairs.colour"),
    ],
)
def test_bad_builder_settings_name_the_key(values, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_section(PairsConfig, values, "data.pairs").validate()


def test_a_preset_replaces_the_defaults_but_not_what_the_user_set():
    cfg = config_from_dict({"preset": "facades", "data": {"cache": False}, "train": {"seed": 7, "epochs": 15}})
    assert cfg.data.source == "facades" and cfg.data.direction == "BtoA" and cfg.data.crop_size == 256
    assert (
        cfg.train.epochs + cfg.train.epochs_decay == 200 and cfg.train.batch_size == 1
    )  # 15 is the default: the preset's wins
    assert cfg.data.cache is False and cfg.train.seed == 7  # not the preset's keys
    # What `dvc exp run -S preset=facades -S data.source=...` writes: the local copy wins.
    local = config_from_dict({"preset": "facades", "data": {"source": "/data/facades-copy"}, "model": {"ngf": 16}})
    assert local.data.source == "/data/facades-copy" and local.model.ngf == 16
    assert (
        local.data.crop_size == 256 and local.model.ndf == 64 and local.train.epochs == 100
    )  # the rest is the preset's
    with pytest.raises(presets.PresetError, match="unknown preset 'facade'"):
        config_from_dict({"preset": "facade"})
    for name in presets.PRESETS:  # every preset yields a valid pix2pix config
        config_from_dict({"preset": name}).library()


def test_presets_apply_writes_params_yaml_keeping_comments(tmp_path):
    params = write_params(tmp_path / "params.yaml")
    params.write_text("# my comment\n" + params.read_text())
    r = subprocess.run(
        [sys.executable, "-m", "pipeline.ops.presets", "apply", "edges2shoes"],
        cwd=tmp_path,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    import yaml

    text = params.read_text()
    written = yaml.safe_load(text)
    assert text.startswith("# my comment\n")
    assert (
        written["data"]["source"] == "edges2shoes"
        and written["train"]["batch_size"] == 4
        and written["preset"] == "none"
    )
    r = subprocess.run(
        [sys.executable, "-m", "pipeline.ops.presets", "apply", "nope"],
        cwd=tmp_path,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and "unknown preset 'nope'" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_colorization_builder_end_to_end_with_dvc_repro(tmp_path):
    """Ordinary photos (the synthetic generator's, photos only) -> grayscale pairs -> a model."""
    import json

    from conftest import make_project

    project = make_project(
        tmp_path / "project",
        data={"pairs": {"builder": "grayscale", "size": 32, "seed": 0}, "direction": "AtoB", "input_nc": 1},
    )
    r = subprocess.run(
        [sys.executable, "-m", "dvc", "repro"], cwd=project, env=tool_env(), capture_output=True, text=True, timeout=900
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    raw = sorted((project / "data/raw/train").glob("*.png"))
    assert len(raw) == 8
    pair = np.asarray(Image.open(raw[0]).convert("RGB")).astype(int)
    gray, photo = pair[:, :32], pair[:, 32:]
    assert (
        pair.shape == (32, 64, 3)
        and (gray[..., 0] == gray[..., 2]).all()
        and not (photo[..., 0] == photo[..., 2]).all()
    )
    ev = json.loads((project / "metrics/eval.json").read_text())
    assert ev["count"] == 3 and {"l1", "input_baseline_l1", "input_baseline_psnr"} <= set(ev)
    assert 0 < ev["input_baseline_l1"] < 1
    card = json.loads((project / "models/export/model_card.json").read_text())
    assert card["params"]["data"]["input_nc"] == 1
    # The export takes one-channel input, like the grayscale photos it was trained on.
    import torch

    from pix2pix.loading import OnnxGenerator

    onnx = OnnxGenerator(project / "models/export/generator.onnx")
    assert onnx(torch.zeros(1, 1, 32, 32)).shape == (1, 3, 32, 32)


def test_every_stage_sees_the_preset_through_load_config(tmp_path):
    from pipeline.config import load_config

    path = write_params(tmp_path / "params.yaml", preset="colorization")
    config = load_config(path)
    assert config.data.pairs.builder == "grayscale" and config.data.source == "synthetic"
    assert config.data.pairs.size == 32  # set in the file (default 256): the file's value wins
    cfg = config.library()
    assert (cfg.data.input_nc, cfg.data.direction, cfg.train.batch_size) == (1, "AtoB", 4)
    write_params(path, preset="facade")
    with pytest.raises(ConfigError, match="params.yaml: preset: unknown preset 'facade'"):
        load_config(path)
