"""The quality options beyond the paper: ResNet generators, pix2pixHD's multi-scale discriminator
and feature matching, spectral norm, a separate D learning rate, the EMA generator and the best
checkpoint, on tiny networks."""

from __future__ import annotations

import pytest
import torch

from pix2pix.config import Config, ConfigError, DataConfig, ModelConfig, TrainConfig, patch_receptive_fields
from pix2pix.losses import GANLoss, coarse_l1_loss, feature_matching_loss, l1_loss, ssim_loss
from pix2pix.networks import (
    MultiscaleDiscriminator,
    PatchDiscriminator,
    ResnetGenerator,
    build_generator,
    count_parameters,
    receptive_field,
)
from pix2pix.selection import BestSelector

from conftest import tiny_config


@pytest.mark.parametrize("net,blocks", [("resnet_9blocks", 9), ("resnet_6blocks", 6)])
@pytest.mark.parametrize("in_nc,out_nc", [(3, 3), (1, 3)])
def test_resnet_generators_keep_any_multiple_of_four(net, blocks, in_nc, out_nc):
    g = build_generator(ModelConfig(netG=net, ngf=4, norm="instance"), in_nc, out_nc, 32).eval()
    assert isinstance(g, ResnetGenerator) and g.multiple == 4
    assert sum(1 for m in g.modules() if type(m).__name__ == "ResnetBlock") == blocks
    for h, w in ((32, 32), (36, 52)):  # not a power of two: fine for a ResNet
        y = g(torch.rand(1, in_nc, h, w) * 2 - 1)
        assert y.shape == (1, out_nc, h, w) and y.abs().max() <= 1


def test_resnet_generators_have_the_reference_parameter_counts():
    # The reference prints 11.378 M for resnet_9blocks (ngf 64, instance norm); 3 blocks fewer is 3 x 1.180 M less.
    for net, millions in (("resnet_9blocks", 11.378), ("resnet_6blocks", 7.838)):
        g = build_generator(ModelConfig(netG=net, norm="instance"), 3, 3, 256)
        assert round(count_parameters(g) / 1e6, 3) == millions, net


@pytest.mark.parametrize("net", ["resnet_9blocks", "resnet_6blocks"])
def test_resnet_generator_translates_any_size_and_exports_with_parity(tmp_path, synthetic_root, net):
    from PIL import Image

    from pix2pix.data import PairedDataset
    from pix2pix.export import export_generator
    from pix2pix.loading import load_runner
    from pix2pix.predict import translate
    from pix2pix.train import Trainer

    cfg = tiny_config()
    cfg.model.netG, cfg.model.norm = net, "instance"
    Trainer(cfg.validate(), PairedDataset(synthetic_root / "train", cfg.data), tmp_path / "run", progress=False).fit(
        max_steps=2
    )
    report = export_generator(tmp_path / "run/last.pt", tmp_path / "export")
    assert (
        report["multiple"] == 4
        and report["onnx"]["max_abs_diff"] < 1e-3
        and report["torchscript"]["max_abs_diff"] < 1e-4
    )
    odd = Image.new("RGB", (37, 29), (120, 30, 200))
    outs = [
        translate(load_runner(tmp_path / "export" / f), odd) for f in ("generator.pt", "generator.ts", "generator.onnx")
    ]
    assert all(o.size == (37, 29) for o in outs)


def test_multiscale_discriminator_outputs_and_receptive_fields():
    d = MultiscaleDiscriminator(6, ndf=4, n_layers=3, norm="batch", num_D=3)
    outs = d(torch.zeros(2, 6, 256, 256))
    assert [tuple(o.shape) for o in outs] == [(2, 1, 30, 30), (2, 1, 14, 14), (2, 1, 6, 6)]
    assert patch_receptive_fields(3, 3) == [70, 141, 283]
    assert receptive_field(PatchDiscriminator(6, 4, 3)) == patch_receptive_fields(3)[0]
    assert patch_receptive_fields(1) == [receptive_field(PatchDiscriminator(6, 4, 1))] == [16]
    out, feats = d(torch.zeros(1, 6, 128, 128), with_features=True)
    assert len(out) == len(feats) == 3 and all(len(f) == 4 for f in feats)  # n_layers + 1 activations each


def test_a_scale_smaller_than_its_receptive_field_is_refused_in_one_line():
    def config(**model):
        return Config(data=DataConfig(crop_size=128, load_size=143), model=ModelConfig(**model), train=TrainConfig())

    config(num_D=1).validate()
    config(num_D=2, n_layers_D=2).validate()  # 64 px at scale 2 >= the 34 px field
    with pytest.raises(ConfigError) as e:
        config(num_D=2).validate()  # scale 2 sees 64 px; a 70x70 PatchGAN needs 70
    assert str(e.value).startswith("model.num_D: 2 scales at crop_size 128: scale 2 sees 64x64") and "\n" not in str(
        e.value
    )
    with pytest.raises(ConfigError, match="model.num_D: 2 scales need netD: patch"):
        config(num_D=2, netD="pixel").validate()


def test_feature_matching_on_a_hand_built_case():
    real = [[torch.ones(1, 1, 2, 2), torch.full((1, 1, 2, 2), 3.0)]]
    fake = [[torch.zeros(1, 1, 2, 2, requires_grad=True), torch.full((1, 1, 2, 2), 1.0, requires_grad=True)]]
    # n_layers 1: two activations, each weighted 4 / 2; one scale: L1s 1 and 2 -> 2 * (1 + 2) = 6, times 10.
    loss = feature_matching_loss(real, fake, n_layers=1, weight=10.0)
    assert float(loss) == pytest.approx(60.0)
    loss.backward()
    assert fake[0][0].grad is not None and real[0][0].grad is None  # the real features are targets
    two_scales = feature_matching_loss(real * 2, fake * 2, n_layers=1, weight=10.0)
    assert float(two_scales) == pytest.approx(60.0)  # each scale weighs 1 / num_D


def test_ssim_loss_is_the_weighted_complement_of_the_metric_and_has_a_gradient():
    from pix2pix.metrics import per_image_metrics

    g = torch.Generator().manual_seed(0)
    target = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1  # [-1, 1], as the generator's output
    assert float(ssim_loss(target, target, 50.0)) == pytest.approx(0.0, abs=1e-5)
    fake = (target + 0.3 * torch.randn(1, 3, 32, 32, generator=g)).clamp(-1, 1).requires_grad_(True)
    loss = ssim_loss(fake, target, 50.0)
    ssim = float(per_image_metrics((fake + 1) / 2, (target + 1) / 2)["ssim"][0])  # what evaluate reports
    assert float(loss) == pytest.approx(50.0 * (1 - ssim), rel=1e-4) and 0 < float(loss) < 50
    loss.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def test_the_ssim_loss_trains_paired_and_is_refused_unpaired_in_one_line(synthetic_root):
    from pix2pix.data import PairedDataset
    from pix2pix.model import Pix2Pix

    cfg = tiny_config(lambda_ssim=10.0, amp="false").validate()
    model = Pix2Pix(cfg, torch.device("cpu"))
    batch = PairedDataset(synthetic_root / "train", cfg.data)[0]
    a, b = batch["input"][None], batch["target"][None]
    torch.manual_seed(0)
    with torch.no_grad():
        expected = float(ssim_loss(model.G(a), b, 10.0))  # dropout draws replayed below
    torch.manual_seed(0)
    losses = model.train_step(a, b)
    assert float(losses["G_SSIM"]) == pytest.approx(expected, rel=1e-4) and float(losses["G_SSIM"]) > 0
    values = cfg.to_dict()
    values["model"]["kind"], values["train"]["lambda_ssim"] = "unpaired", 10.0
    with pytest.raises(ConfigError, match=r"^train.lambda_ssim: .*set it to 0$"):
        Config.from_dict(values)


def test_coarse_l1_is_blind_to_texture_inside_a_block_and_sees_its_colour():
    target = torch.zeros(1, 3, 8, 8)
    checker = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2 * 2.0 - 1.0  # +-1, mean 0 per 2x2 block
    textured = target + checker  # a different texture, the same block means
    assert float(l1_loss(textured, target, 1.0)) == pytest.approx(1.0)  # full resolution: every pixel off by 1
    assert float(coarse_l1_loss(textured, target, 2, 100.0)) == pytest.approx(0.0)
    shifted = target.clone()
    shifted[..., :4, :4] = 0.5  # one 4x4 quadrant brighter: a colour error the pooled images keep
    assert float(coarse_l1_loss(shifted, target, 4, 100.0)) == pytest.approx(100.0 * 0.5 / 4)
    fake = shifted.clone().requires_grad_(True)
    coarse_l1_loss(fake, target, 4, 100.0).backward()
    assert torch.allclose(fake.grad[..., :4, :4], torch.full((1, 3, 4, 4), 100.0 / (4 * 3 * 16)))


def test_the_coarse_l1_trains_paired_and_bad_settings_get_one_line(synthetic_root):
    from pix2pix.data import PairedDataset
    from pix2pix.model import Pix2Pix

    cfg = tiny_config(lambda_l1_coarse=30.0, l1_coarse_factor=8, amp="false").validate()
    model = Pix2Pix(cfg, torch.device("cpu"))
    batch = PairedDataset(synthetic_root / "train", cfg.data)[0]
    a, b = batch["input"][None], batch["target"][None]
    torch.manual_seed(0)
    with torch.no_grad():
        expected = float(coarse_l1_loss(model.G(a), b, 8, 30.0))  # dropout draws replayed below
    torch.manual_seed(0)
    losses = model.train_step(a, b)
    assert float(losses["G_L1_coarse"]) == pytest.approx(expected, rel=1e-4) and float(losses["G_L1_coarse"]) > 0
    assert "G_L1_coarse" not in Pix2Pix(tiny_config(amp="false").validate(), torch.device("cpu")).train_step(a, b)
    values = cfg.to_dict()
    values["model"]["kind"] = "unpaired"
    with pytest.raises(ConfigError, match=r"^train.lambda_l1_coarse: .*set it to 0$"):
        Config.from_dict(values)
    values = cfg.to_dict()
    values["train"]["l1_coarse_factor"] = cfg.data.crop_size
    with pytest.raises(ConfigError, match=rf"^train.l1_coarse_factor: .*use at most {cfg.data.crop_size // 2}$"):
        Config.from_dict(values)
    values["train"]["l1_coarse_factor"] = 0
    with pytest.raises(ConfigError, match=r"^train.l1_coarse_factor: got 0; use a positive integer$"):
        Config.from_dict(values)


def test_the_gan_loss_averages_the_scales():
    gan = GANLoss("lsgan")
    one, two = torch.zeros(1, 1, 2, 2), torch.full((1, 1, 3, 3), 2.0)
    assert float(gan([one, two], True)) == pytest.approx((1.0 + 1.0) / 2)


def test_multiscale_matching_spectral_norm_and_lr_d_train(tmp_path, synthetic_root):
    from pix2pix.data import PairedDataset
    from pix2pix.train import Trainer

    cfg = tiny_config(lr_D=1e-3)
    cfg.model.num_D, cfg.model.n_layers_D, cfg.model.lambda_feat, cfg.model.spectral_norm = 2, 1, 10.0, True
    trainer = Trainer(cfg.validate(), PairedDataset(synthetic_root / "train", cfg.data), tmp_path, progress=False)
    convs = [m for m in trainer.model.D.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in convs)
    assert trainer.model.opt_D.param_groups[0]["lr"] == 1e-3 and trainer.model.opt_G.param_groups[0]["lr"] == 2e-4
    summary = trainer.fit(max_steps=2)
    assert summary["G_feat"] > 0 and all(torch.isfinite(torch.tensor(summary[k])) for k in ("G_GAN", "D_real"))


def test_ema_update_is_the_stated_formula_and_copies_buffers(synthetic_root):
    from pix2pix.model import Pix2Pix

    cfg = tiny_config(ema=0.75)
    model = Pix2Pix(cfg, torch.device("cpu"))
    with torch.no_grad():
        for p in model.G_ema.parameters():
            p.fill_(1.0)
        for p in model.G.parameters():
            p.fill_(3.0)
        for b in model.G.buffers():
            b.fill_(5)
    model.update_ema()  # the first update: warm-up decay min(0.75, 1 / 10)
    assert all(torch.allclose(p, torch.full_like(p, 0.1 * 1 + 0.9 * 3)) for p in model.G_ema.parameters())
    assert all(torch.equal(b, torch.full_like(b, 5)) for b in model.G_ema.buffers())
    assert model.ema_updates == 1
    with torch.no_grad():
        for p in model.G_ema.parameters():
            p.fill_(1.0)
    model.ema_updates = 100  # past the warm-up: (1 + 100) / (10 + 100) > 0.75
    model.update_ema()
    assert all(torch.allclose(p, torch.full_like(p, 0.75 * 1 + 0.25 * 3)) for p in model.G_ema.parameters())
    model.train()
    assert not model.G_ema.training and model.G.training  # the average is never in train mode
    with pytest.raises(ConfigError, match=r"train.ema: got 1.0; use a decay in \[0, 1\)"):
        tiny_config(ema=1.0)


def test_ema_warm_up_forgets_the_random_init_of_a_short_run():
    from pix2pix.model import ema_decay

    assert [ema_decay(0.999, n) for n in (0, 90, 990)] == [0.1, 0.91, 0.991]
    assert ema_decay(0.999, 10**6) == 0.999 and ema_decay(0.5, 0) == 0.1 and ema_decay(0.05, 5) == 0.05
    # The weight the init keeps after 1,000 updates: the product of the decays.
    kept = 1.0
    for n in range(1000):
        kept *= ema_decay(0.999, n)
    assert kept < 1e-15 and 0.999**1000 > 0.36  # without the warm-up it would keep 37%


def test_ema_warm_up_count_from_checkpoints_written_before_it_or_without_ema(synthetic_root):
    from pix2pix.model import Pix2Pix

    model = Pix2Pix(tiny_config(ema=0.9), torch.device("cpu"))
    model.update_ema()
    state = model.training_state()
    assert state["ema_updates"] == 1
    del state["ema_updates"]  # written before the warm-up existed: that average is past it
    model.load_training_state(state)
    assert model.ema_updates == 10**9
    del state["generator_ema"]  # EMA turned on at resume: the average starts at G, warm-up at 0
    model.load_training_state(state)
    assert model.ema_updates == 0


def test_exact_resume_with_ema_and_the_ema_weights_are_what_export_ships(tmp_path, synthetic_root):
    from pix2pix.data import PairedDataset
    from pix2pix.loading import generator_from_checkpoint
    from pix2pix.train import Trainer

    cfg = tiny_config(epochs=2, epochs_decay=1, ema=0.9)
    train = PairedDataset(synthetic_root / "train", cfg.data)
    straight = Trainer(cfg, train, tmp_path / "straight", progress=False)
    straight.fit()
    first = Trainer(cfg, train, tmp_path / "resumed", progress=False)
    first.fit(max_steps=4)
    second = Trainer(cfg, train, tmp_path / "resumed", progress=False)
    second.fit()
    for name, tensor in straight.model.G_ema.state_dict().items():
        assert torch.equal(tensor, second.model.G_ema.state_dict()[name]), name
    assert second.model.ema_updates == straight.model.ema_updates == straight.step  # the warm-up resumed too
    shipped, _ = generator_from_checkpoint(tmp_path / "straight/last.pt")
    for name, tensor in shipped.state_dict().items():
        assert torch.equal(tensor, straight.model.G_ema.state_dict()[name]), name
    assert not all(torch.equal(a, b) for a, b in zip(shipped.parameters(), straight.model.G.parameters(), strict=True))


def test_best_checkpoint_choice_on_a_scripted_validation_sequence():
    selector = BestSelector("l1", window=3)
    chosen = [
        selector.offer(step, step, {"val_l1": v, "val_ssim": 0.5})
        for step, v in enumerate([0.5, 0.3, 0.4, 0.2, 0.6, 0.1], 1)
    ]
    # window means: 0.5, 0.4, 0.4, 0.3, 0.4, 0.3: the best is step 4; step 6's single 0.1 does not win alone
    assert chosen == [True, True, False, True, False, False]
    assert selector.best["step"] == 4 and selector.best["score"] == pytest.approx(0.3)
    assert selector.best["means"]["val_l1"] == pytest.approx(0.3) and selector.best["window"] == 3
    ssim = BestSelector("ssim", window=1)
    assert [ssim.offer(s, s, {"val_ssim": v}) for s, v in enumerate([0.2, 0.1, 0.3])] == [True, False, True]
    again = BestSelector("l1", window=3)
    again.load_state_dict(selector.state_dict())
    assert again.best == selector.best and again.history == selector.history
    rejudged = BestSelector("l1", window=1)  # another rule: the recorded validations are judged again
    rejudged.load_state_dict(selector.state_dict())
    assert rejudged.best["step"] == 6


def test_the_trainer_writes_best_pt_and_resume_keeps_the_choice(tmp_path, synthetic_root):
    from pix2pix.checkpoint import load_checkpoint
    from pix2pix.data import PairedDataset
    from pix2pix.train import Trainer

    cfg = tiny_config(epochs=2, epochs_decay=1, best_window=2)  # 3 epochs of 3 steps
    train, val = (
        PairedDataset(synthetic_root / "train", cfg.data),
        PairedDataset(synthetic_root / "val", cfg.data, train=False),
    )
    straight = Trainer(cfg, train, tmp_path / "straight", val_data=val, progress=False)
    straight.fit()
    best = load_checkpoint(tmp_path / "straight/best.pt")
    kept = best["selection"]["best"]
    assert kept["step"] == best["step"] and kept["window"] <= 2 and len(straight.selector.history) == 3
    first = Trainer(cfg, train, tmp_path / "resumed", val_data=val, progress=False)
    first.fit(max_steps=7)
    second = Trainer(cfg, train, tmp_path / "resumed", val_data=val, progress=False)
    assert len(second.selector.history) == 2  # restored from last.pt (two epochs validated)
    second.fit()
    assert second.selector.best == straight.selector.best
    assert not (tmp_path / "no-val").exists()
    Trainer(cfg, train, tmp_path / "no-val", progress=False).fit(max_steps=3)  # one epoch, nothing to validate
    assert (tmp_path / "no-val/last.pt").is_file() and not (tmp_path / "no-val/best.pt").exists()


def test_the_budget_schedule_is_constant_then_linear_to_zero(monkeypatch):
    from pix2pix import budget

    clock = [100.0]
    monkeypatch.setattr(budget.time, "monotonic", lambda: clock[0])
    b = budget.TimeBudget(minutes=10, epochs=3, epochs_decay=1)  # constant for 75% of 600 s
    b.start()
    factors = {}
    for t in (0, 300, 450, 525, 600, 700):
        clock[0] = 100.0 + t
        factors[t] = b.lr_factor()
    assert factors == {0: 1.0, 300: 1.0, 450: 1.0, 525: pytest.approx(0.5), 600: 0.0, 700: 0.0}
    assert b.spent() and b.elapsed() == 700
    resumed = budget.TimeBudget(minutes=10, epochs=3, epochs_decay=1)
    resumed.spent_before = 525.0  # from the checkpoint
    resumed.start()
    assert resumed.lr_factor() == pytest.approx(0.5) and not resumed.spent()


def test_a_budget_run_ends_decayed_and_checkpointed_and_resume_keeps_the_budget(tmp_path, synthetic_root):
    from pix2pix.checkpoint import load_checkpoint
    from pix2pix.data import PairedDataset
    from pix2pix.train import Trainer

    cfg = tiny_config(budget_minutes=6 / 60, epochs=1, epochs_decay=1)  # 6 s: room for a loaded machine
    train, val = (
        PairedDataset(synthetic_root / "train", cfg.data),
        PairedDataset(synthetic_root / "val", cfg.data, train=False),
    )
    first = Trainer(cfg, train, tmp_path, val_data=val, progress=False)
    assert first.total_steps is None
    stopped = first.fit(max_steps=2)  # killed early: 2 steps of the budget spent
    assert stopped["status"] == "stopped"
    spent = load_checkpoint(tmp_path / "last.pt")["budget_elapsed_s"]
    assert 0 < spent < 6
    second = Trainer(cfg, train, tmp_path, val_data=val, progress=False)
    assert second.budget.spent_before == spent  # the same budget goes on
    summary = second.fit()
    state = load_checkpoint(tmp_path / "last.pt")
    assert summary["status"] == "finished" and summary["step"] > 2 and second.model.lr == 0.0  # fully decayed
    assert 6 <= state["budget_elapsed_s"] < 6 + 10 and state["step"] == summary["step"]
    assert (tmp_path / "best.pt").is_file()  # validated at the end too
    third = Trainer(cfg, train, tmp_path, val_data=val, progress=False)
    assert third.fit()["step"] == summary["step"]  # a spent budget trains no more


def test_a_budget_shorter_than_one_step_is_one_line_and_writes_nothing(tmp_path, synthetic_root):
    from pix2pix.data import PairedDataset
    from pix2pix.train import Trainer

    cfg = tiny_config(budget_minutes=1e-6)
    with pytest.raises(ConfigError) as e:
        Trainer(cfg, PairedDataset(synthetic_root / "train", cfg.data), tmp_path, progress=False).fit()
    assert str(e.value).startswith(
        "train.budget_minutes: 1e-06 min is shorter than one training step"
    ) and "\n" not in str(e.value)
    assert not (tmp_path / "last.pt").exists()
    with pytest.raises(ConfigError, match="train.budget_minutes: got -1.0"):
        tiny_config(budget_minutes=-1.0)


def test_every_option_is_a_cli_flag_with_its_choices():
    from pix2pix.cli import build_parser

    text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for flag in (
        "--netG {unet,resnet_9blocks,resnet_6blocks}",
        "--num-D",
        "--lambda-feat",
        "--spectral-norm",
        "--lr-D",
        "--ema",
        "--best-metric {l1,psnr,ssim}",
        "--best-window",
        "--budget-minutes",
    ):
        assert flag in text, flag
