"""Unpaired training (CycleGAN): the pool, the cycle and identity terms on hand-built tensors,
the refusals, the unaligned layouts, exact resume with the pools, and the CLI from training to
an exported generator of each direction."""

import json

import pytest
import torch
from PIL import Image

from pix2pix.config import Config
from pix2pix.data import PairedDataset, discover_pairs
from pix2pix.errors import CheckpointError, ConfigError, ImageError
from pix2pix.losses import cycle_loss, identity_loss
from pix2pix.train import Trainer
from pix2pix.unpaired import ImagePool
from pix2pix.unpaired_data import UnpairedDataset, discover_domains

from conftest import run_cli, tiny_config


def unpaired_config(**train):
    """The tiny test model as `--kind unpaired` makes it (the cyclegan recipe), ResNet-6."""
    values = tiny_config(**train).to_dict()
    values["model"].update(kind="unpaired", netG="resnet_6blocks", norm="instance", dropout=0.0)
    values["train"].update(gan_mode="lsgan", pool_size=3, **train)
    return Config.from_dict(values)


@pytest.fixture(scope="module")
def unaligned(tmp_path_factory, synthetic_root):
    """The synthetic facades as the reference's unaligned layout: trainA/ photos and trainB/
    label maps from different facades (6 and 4, other names), testA/ testB/ (3 each)."""
    root = tmp_path_factory.mktemp("unaligned")
    for split, (na, nb) in {"train": (6, 4), "test": (3, 3)}.items():
        pairs = discover_pairs(synthetic_root / split)
        (root / f"{split}A").mkdir(), (root / f"{split}B").mkdir()
        for i in range(na):
            img = Image.open(pairs[i % len(pairs)].a)
            img.crop((0, 0, 32, 32)).save(root / f"{split}A" / f"photo_{i}.png")
        for i in range(nb):
            img = Image.open(pairs[(i + 2) % len(pairs)].a)
            img.crop((32, 0, 64, 32)).save(root / f"{split}B" / f"labels_{i:02d}.jpg")
    return root


def test_the_pool_returns_new_fakes_until_full_then_mixes_in_old_ones_reproducibly():
    images = [torch.full((1, 1, 2, 2), float(i)) for i in range(40)]
    pool, twin = ImagePool(4, seed=7), ImagePool(4, seed=7)
    out = [float(pool.query(im)[0, 0, 0, 0]) for im in images]
    assert out[:4] == [0.0, 1.0, 2.0, 3.0]  # filling: each fake as it is
    old = [i for i, v in enumerate(out) if v != float(i)]
    assert 8 <= len(old) <= 32 and all(out[i] < i for i in old)  # about half are earlier fakes
    assert [float(twin.query(im)[0, 0, 0, 0]) for im in images] == out  # same seed, same draws
    # The state holds the images and the draws: a restored pool goes on exactly as the original.
    restored = ImagePool(4, seed=0)
    restored.load_state_dict(pool.state_dict(), torch.device("cpu"))
    more = [torch.full((1, 1, 2, 2), float(i)) for i in range(40, 60)]
    assert [float(restored.query(m)[0, 0, 0, 0]) for m in more] == [float(pool.query(m)[0, 0, 0, 0]) for m in more]
    fakes = torch.zeros(3, 1, 2, 2, requires_grad=True)
    assert ImagePool(0, seed=0).query(fakes).requires_grad is False  # size 0: the fakes, detached


def test_cycle_and_identity_terms_on_hand_built_tensors():
    real = torch.zeros(1, 3, 4, 4)
    rec = torch.full((1, 3, 4, 4), 0.5)
    assert float(cycle_loss(rec, real, 10.0)) == pytest.approx(5.0)
    same = real.clone()
    same[..., 0, 0] = 1.0  # one pixel of 16 off by 1
    assert float(identity_loss(same, real, 10.0 * 0.5)) == pytest.approx(5.0 / 16)


def test_refusals_are_one_line():
    values = unpaired_config().to_dict()
    values["data"]["input_nc"] = 1
    with pytest.raises(
        ConfigError, match=r"train.lambda_identity: .*input_nc 1, data.output_nc 3.*set train.lambda_identity 0"
    ):
        Config.from_dict(values)
    values["train"]["lambda_identity"] = 0.0
    Config.from_dict(values)  # without the identity term, any channels
    paired = tiny_config().to_dict()
    paired["data"]["pairs_apart"] = True
    with pytest.raises(ConfigError, match="data.pairs_apart"):
        Config.from_dict(paired)


def test_unaligned_layouts_and_bad_folders(unaligned, synthetic_root, tmp_path):
    a, b = discover_domains(unaligned, "train")
    assert len(a) == 6 and len(b) == 4 and a[0].parent.name == "trainA"
    flat = tmp_path / "flat"
    for name, count in (("A", 2), ("B", 5)):
        (flat / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (40, 40), (i * 40, 0, 0)).save(flat / name / f"{name}{i}.png")
    assert [len(d) for d in discover_domains(flat)] == [2, 5]  # A/ + B/, names unmatched
    (tmp_path / "empty" / "trainA").mkdir(parents=True)
    (tmp_path / "empty" / "trainB").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "empty" / "trainB" / "x.png")
    with pytest.raises(ImageError, match=r"empty/trainA: the domain folder is empty"):
        discover_domains(tmp_path / "empty")
    (tmp_path / "half" / "trainA").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "half" / "trainA" / "x.png")
    with pytest.raises(ImageError, match=r"half/trainB: the domain folder is missing"):
        discover_domains(tmp_path / "half")
    with pytest.raises(ImageError, match=r"holds A\|B pairs: .*data.pairs_apart"):
        discover_domains(synthetic_root / "train")


def test_an_epoch_draws_both_domains_independently_and_reproducibly(unaligned):
    cfg = unpaired_config()
    ds = UnpairedDataset.from_folder(unaligned, cfg.data)
    assert len(ds) == 6 and ds.order == ("B", "A")  # BtoA: the label maps (B) are the input
    first, again = ds[(3, 1234)], ds[(3, 1234)]
    assert torch.equal(first["input"], again["input"]) and torch.equal(first["target"], again["target"])
    assert first["input"].shape == first["target"].shape == (3, 32, 32)
    targets = {ds[(0, seed)]["target"].sum().item() for seed in range(12)}
    assert len(targets) > 2  # the other domain's image is drawn, not tied to the index


def test_pairs_split_apart_never_meet(synthetic_root):
    cfg = unpaired_config()
    pairs = discover_pairs(synthetic_root / "train")
    ds = UnpairedDataset.from_pairs(pairs, cfg.data)
    inputs = {p.a for p, _ in ds.inputs}
    targets = {p.a for p, _ in ds.targets}
    assert not inputs & targets and len(inputs | targets) == len(pairs)


def test_exact_resume_is_bit_for_bit_with_the_pools(tmp_path, unaligned):
    cfg = unpaired_config(epochs=2, epochs_decay=2)  # 6 inputs, batch 2: 3 steps an epoch, 12 in all
    train = UnpairedDataset.from_folder(unaligned, cfg.data)
    val = UnpairedDataset.from_folder(unaligned, cfg.data, "test", train=False)
    straight = Trainer(cfg, train, tmp_path / "straight", val_data=val, progress=False)
    straight.fit()
    first = Trainer(cfg, train, tmp_path / "resumed", val_data=val, progress=False)
    first.fit(max_steps=7)
    assert len(first.model.pool_B.images) == 3  # full: the pool's contents are part of the state
    second = Trainer(cfg, UnpairedDataset.from_folder(unaligned, cfg.data), tmp_path / "resumed", val_data=val,
                     progress=False)  # fmt: skip
    assert second.step == 7
    second.fit()
    a, b = straight.model, second.model
    for net in ("G", "G_BA", "D", "D_A"):
        for name, tensor in getattr(a, net).state_dict().items():
            assert torch.equal(tensor, getattr(b, net).state_dict()[name]), (net, name)
    for pa, pb in ((a.pool_A, b.pool_A), (a.pool_B, b.pool_B)):
        assert all(torch.equal(x, y) for x, y in zip(pa.images, pb.images, strict=True))
    assert torch.load(tmp_path / "straight" / "last.pt", weights_only=False)["kind"] == "unpaired"
    scores = straight.validate()  # no pairs to score against: the cycle errors, in [0, 1] image units
    assert set(scores) == {"val_cycle_A", "val_cycle_B"} and all(0 < v < 1 for v in scores.values())


def test_a_checkpoint_resumed_as_the_other_kind_is_refused(tmp_path, unaligned, synthetic_root):
    cfg = unpaired_config()
    Trainer(cfg, UnpairedDataset.from_folder(unaligned, cfg.data), tmp_path, progress=False).fit(max_steps=1)
    paired = tiny_config()
    with pytest.raises(CheckpointError, match="is a unpaired checkpoint and this run is paired; resume it with"):
        Trainer(paired, PairedDataset(synthetic_root / "train", paired.data), tmp_path, progress=False)
    with pytest.raises(ConfigError, match="unpaired training got paired data"):
        Trainer(cfg, PairedDataset(synthetic_root / "train", cfg.data), tmp_path / "x", progress=False)


@pytest.mark.slow
def test_cli_trains_unpaired_and_exports_each_direction_with_parity(unaligned, tmp_path):
    out = tmp_path / "run"
    r = run_cli("train", "--kind", "unpaired", "--data", unaligned, "--out", out, "--max-steps", "3",
                "--netG", "resnet_6blocks", "--ngf", "8", "--ndf", "8", "--load-size", "36", "--crop-size", "32",
                "--direction", "BtoA", "--device", "cpu", "--epochs", "1", "--epochs-decay", "0")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "training unpaired on 4 + 6 unpaired images" in r.stderr and "resnet_6blocks" in r.stderr
    state = torch.load(out / "last.pt", weights_only=False)
    assert state["kind"] == "unpaired" and state["config"]["model"]["norm"] == "instance"  # the cyclegan recipe
    assert state["config"]["train"]["gan_mode"] == "lsgan" and (out / "input_reference.json").is_file()
    for which in ("AB", "BA"):
        r = run_cli("export", "--checkpoint", out / "last.pt", "--out", tmp_path / which, "--generator", which)
        assert r.returncode == 0, r.stderr
        report = json.loads(r.stdout)
        assert report["onnx"]["max_abs_diff"] < 1e-3 and report["generator_direction"] == which
    ab = torch.load(tmp_path / "AB" / "generator.pt", weights_only=False)
    ba = torch.load(tmp_path / "BA" / "generator.pt", weights_only=False)
    assert ab["config"]["data"]["direction"] == "BtoA" and ba["config"]["data"]["direction"] == "AtoB"
    assert (tmp_path / "AB" / "input_reference.json").is_file() and not (
        tmp_path / "BA" / "input_reference.json"
    ).exists()
    photo = unaligned / "testA" / "photo_0.png"
    r = run_cli(
        "predict", "--model", tmp_path / "BA" / "generator.onnx", "--input", photo, "--output", tmp_path / "l.png"
    )
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "l.png").size == (32, 32)
    r = run_cli("evaluate", "--model", out / "last.pt", "--data", unaligned)  # testA/ + testB/: no pairs
    assert r.returncode == 0, r.stderr
    scores = json.loads(r.stdout)
    assert scores["split"] == "test" and scores["count_A"] == 3 and 0 < scores["cycle_A"] < 1 and "identity_B" in scores
    r = run_cli("train", "--kind", "unpaired", "--data", unaligned / "trainA", "--out", tmp_path / "bad")
    assert r.returncode != 0 and "Traceback" not in r.stderr and "no trainA/ + trainB/" in r.stderr
