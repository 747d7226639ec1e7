"""One strict, typed configuration: params.yaml, the library's sections and the CLI's flags."""

from dataclasses import dataclass

import pytest
import yaml

from pipeline.config import PipelineConfig, config_from_dict, load_config
from pipeline.tracking.promotion import PromotionConfig, gate_settings
from pix2pix.cli import build_parser, main
from pix2pix.cli_config import config_from_args
from pix2pix.config import ConfigError, build_section, option

from conftest import ROOT


def test_the_shipped_params_yaml_spells_out_exactly_the_defaults():
    shipped = yaml.safe_load((ROOT / "params.yaml").read_text())
    gate = shipped.pop("promotion")  # the gate's section, with the gate's own schema
    assert build_section(PipelineConfig, shipped, "").to_dict() == PipelineConfig().to_dict()
    assert load_config(ROOT / "params.yaml") == PipelineConfig(promotion=gate)
    assert gate_settings(gate) == PromotionConfig()


@pytest.mark.parametrize(
    "section,expected",
    [
        ({"metric": "fid"}, "promotion.metric: got 'fid'; choose one of l1, psnr, ssim"),
        ({"metirc": "l1"}, "promotion.metirc: unknown key"),
        ({"min_improvement": "a lot"}, "promotion.min_improvement: got 'a lot'"),
    ],
)
def test_the_gates_section_is_read_strictly_by_the_gate(section, expected):
    with pytest.raises(ConfigError) as e:
        gate_settings(config_from_dict({"promotion": section}).promotion)
    assert expected in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="promotion: got 3"):
        config_from_dict({"promotion": 3})


@pytest.mark.parametrize(
    "params,expected",
    [
        ({"trian": {}}, "trian: unknown key"),
        ({"data": {"synthetic": {"sise": 3}}}, "data.synthetic.sise: unknown key"),
        ({"evaluate": {"grid": 3}}, "evaluate.grid: unknown key"),
        ({"export": {"formats": ["onnx", "tflite"]}}, "export.formats"),
        ({"train": {"epochs": 2.5}}, "train.epochs: got 2.5; expected a value of type int"),
        ({"data": {"flip": "maybe"}}, "data.flip: got 'maybe'"),
        ({"data": {"split": {"val": 0.6, "test": 0.5}}}, "data.split"),
    ],
)
def test_a_bad_key_or_value_anywhere_is_one_line_naming_it(params, expected):
    with pytest.raises(ConfigError) as e:
        config_from_dict(params)
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_types_come_from_the_annotations_not_their_spelling():
    @dataclass
    class Section:
        limit: int | None = option(None, "an optional count")
        names: list[str] = option(["a"], "a list")

    assert build_section(Section, {"limit": "7", "names": "x, y"}, "s") == Section(7, ["x", "y"])
    assert build_section(Section, {"limit": None}, "s").limit is None
    with pytest.raises(ConfigError, match=r"s\.limit: got 'seven'; expected int or null"):
        build_section(Section, {"limit": "seven"}, "s")
    with pytest.raises(ConfigError, match=r"s\.names"):
        build_section(Section, {"names": 3}, "s")


def _args(*argv):
    return build_parser().parse_args(["train", "--data", "d", "--out", "o", *argv])


def test_cli_flags_have_help_choices_and_negatable_booleans(capsys):
    cfg = config_from_args(_args("--no-flip", "--direction", "BtoA", "--epochs", "3"))
    assert cfg.data.flip is False and cfg.data.direction == "BtoA" and cfg.train.epochs == 3
    with pytest.raises(SystemExit):
        _args("--gan-mode", "wgan")
    assert "invalid choice: 'wgan'" in capsys.readouterr().err
    text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert "--flip, --no-flip" in text and "random horizontal flip" in text and "{vanilla,lsgan,hinge}" in text


def test_cli_config_file_is_strict_and_reads_the_pipelines_params_yaml(tmp_path, capsys):
    cfg = config_from_args(_args("--config", str(ROOT / "params.yaml"), "--crop-size", "32", "--load-size", "36"))
    assert (cfg.data.crop_size, cfg.model.ngf, cfg.train.batch_size) == (32, 32, 4)  # the file, then the flags
    bad = tmp_path / "cfg.yaml"
    bad.write_text("train:\n  epochz: 3\n")
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: train.epochz: unknown key" in err and err.count("\n") == 1
    bad.write_text("preset: facades\n")
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--config", str(bad)]) == 2
    assert "pipeline.ops.presets apply facades" in capsys.readouterr().err


def test_a_recipe_sets_the_keys_left_at_their_defaults_and_explicit_keys_win(tmp_path, capsys):
    from pix2pix import recipes

    best = recipes.get("best").values
    assert best and recipes.get("paper").values == {}  # paper = the defaults
    # params.yaml spells out every default, so recipe: best still takes effect in it.
    shipped = yaml.safe_load((ROOT / "params.yaml").read_text())
    cfg = config_from_dict({**shipped, "recipe": "best"})
    for dotted, value in best.items():
        section, key = dotted.split(".")
        assert getattr(getattr(cfg, section), key) == value
    # A key set to something else keeps it; the preset's task keys still apply.
    key = next(iter(best))
    section, name = key.split(".")
    mine = {section: {name: "instance" if isinstance(best[key], str) else 0.5}}
    cfg = config_from_dict({"recipe": "best", "preset": "facades", **mine})
    assert getattr(getattr(cfg, section), name) == mine[section][name] and cfg.train.epochs == 100
    # Where the recipe and the preset name the same key (facades: batch 1), the recipe's value
    # stands, even one equal to the pipeline's default (batch 4); the task's keys are the preset's.
    both = config_from_dict({"recipe": "best", "preset": "facades"})
    assert all(getattr(getattr(both, k.split(".")[0]), k.split(".")[1]) == v for k, v in best.items())
    assert both.train.batch_size == 4 and both.train.epochs == 100 and both.data.direction == "BtoA"
    assert config_from_dict({"preset": "facades"}).train.batch_size == 1  # the paper's, without the recipe
    # The CLI: --recipe, else the config file's recipe:, and flags over both.
    cli = config_from_args(_args("--recipe", "best", "--ema", "0.9"))
    assert cli.train.ema == 0.9 and all(
        getattr(getattr(cli, k.split(".")[0]), k.split(".")[1]) == v for k, v in best.items() if k != "train.ema"
    )
    # A flag wins even when it names the default value: the way back to pixel L1 under recipe best.
    assert best["train.lambda_l1"] == 0 and best["train.lambda_l1_coarse"] > 0
    pixels = config_from_args(_args("--recipe", "best", "--lambda-l1", "100", "--lambda-l1-coarse", "0"))
    assert (pixels.train.lambda_l1, pixels.train.lambda_l1_coarse, pixels.train.lambda_ssim) == (100, 0, 100)
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text().replace("recipe: paper", "recipe: best"))
    from_file = config_from_args(_args("--config", str(params)))
    assert all(getattr(getattr(from_file, k.split(".")[0]), k.split(".")[1]) == v for k, v in best.items())
    assert config_from_args(_args("--config", str(params), "--recipe", "paper")).to_dict() == (
        config_from_args(_args("--config", str(ROOT / "params.yaml"))).to_dict()
    )
    # Unknown names: one line listing the known ones.
    with pytest.raises(ConfigError, match="recipe: unknown recipe 'fast'; choose one of paper, best"):
        config_from_dict({"recipe": "fast"})
    params.write_text("recipe: fast\n")
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--config", str(params)]) == 2
    err = capsys.readouterr().err
    assert f"{params}: recipe: unknown recipe 'fast'" in err and err.count("\n") == 1
    with pytest.raises(SystemExit):
        _args("--recipe", "fast")
    assert "invalid choice: 'fast'" in capsys.readouterr().err
    text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert all(name in text for name in recipes.RECIPES)
