import numpy as np
import pytest
import torch
from PIL import Image

from pix2pix.checkpoint import CheckpointError
from pix2pix.data import PairedDataset
from pix2pix.export import export_generator
from pix2pix.loading import OnnxGenerator, load_runner, load_torchscript
from pix2pix.predict import predict_paths, translate
from pix2pix.tiling import pad_to_multiple
from pix2pix.train import Trainer

from conftest import tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synthetic_root):
    out = tmp_path_factory.mktemp("trained")
    cfg = tiny_config()
    Trainer(cfg, PairedDataset(synthetic_root / "train", cfg.data), out, progress=False).fit(max_steps=3)
    return out / "last.pt"


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    return export_generator(trained, out), out


def test_export_writes_all_formats_with_parity(exported):
    report, out = exported
    for name in ("generator.pt", "generator.ts", "generator.onnx"):
        assert (out / name).is_file()
    assert report["torchscript"]["max_abs_diff"] <= 1e-4
    assert report["onnx"]["max_abs_diff"] <= 1e-4


def test_exports_take_dynamic_batch_and_size(exported, trained):
    _, out = exported
    eager = load_runner(trained, amp="false")  # float32, as the ONNX export
    x = torch.rand(3, 3, 64, 96) * 2 - 1
    onnx_out = OnnxGenerator(out / "generator.onnx")(x)
    ts, config, multiple = load_torchscript(out / "generator.ts")
    assert multiple == 32 and config["data"]["crop_size"] == 32
    with torch.no_grad():
        ts_out = ts(x)
    ref = eager(x)
    assert onnx_out.shape == ref.shape == (3, 3, 64, 96)
    assert float((onnx_out - ref).abs().max()) <= 1e-4
    assert float((ts_out - ref).abs().max()) <= 1e-4


def test_bf16_inference_is_close_to_float32_for_checkpoint_and_torchscript(exported, trained):
    """amp=true runs checkpoint and TorchScript models under CPU bf16 autocast (what auto does on
    CPUs with native bf16); outputs stay float32 and within bf16's precision of float32."""
    _, out = exported
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    ref = load_runner(trained, amp="false")(x)
    for path in (trained, out / "generator.ts"):
        got = load_runner(path, amp="true")(x)
        assert got.dtype == torch.float32 and got.shape == ref.shape
        diff = float((got - ref).abs().max())
        assert 0 < diff <= 0.1, (path.name, diff)  # it did run in bf16, and stayed close
    assert float((load_runner(out / "generator.onnx", amp="true")(x) - ref).abs().max()) <= 1e-4  # ONNX stays fp32


def test_pad_to_multiple_pads_and_remembers_size():
    x = torch.rand(1, 3, 33, 70)
    padded, size = pad_to_multiple(x, 32)
    assert padded.shape[-2:] == (64, 96) and size == (33, 70)
    assert torch.equal(padded[..., :33, :70], x)
    tiny = torch.rand(1, 3, 5, 7)  # padding larger than the image falls back to replicate
    assert pad_to_multiple(tiny, 32)[0].shape[-2:] == (32, 32)


@pytest.mark.parametrize("model_file", ["last.pt", "generator.pt", "generator.ts", "generator.onnx"])
def test_predict_odd_sized_and_grayscale_images_with_every_format(model_file, trained, exported, tmp_path):
    model = trained if model_file == "last.pt" else exported[1] / model_file
    runner = load_runner(model)
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (45, 71, 3), dtype=np.uint8)).save(src / "odd.png")
    Image.new("L", (30, 50), 128).save(src / "gray.jpg")
    Image.new("RGBA", (40, 40), (0, 0, 255, 128)).save(src / "alpha.png")
    written = predict_paths(runner, src, tmp_path / "out")
    sizes = {p.name: Image.open(p).size for p in written}
    assert sizes == {"alpha.png": (40, 40), "gray.png": (30, 50), "odd.png": (71, 45)}
    assert all(Image.open(p).mode == "RGB" for p in written)


def test_predict_single_file_to_a_file(trained, tmp_path):
    Image.new("RGB", (32, 32), (9, 9, 9)).save(tmp_path / "x.png")
    out = predict_paths(load_runner(trained), tmp_path / "x.png", tmp_path / "y.png")
    assert out == [tmp_path / "y.png"] and (tmp_path / "y.png").is_file()


def test_eval_mode_is_deterministic_and_keep_dropout_is_not(trained):
    img = Image.new("RGB", (32, 32), (100, 50, 200))
    runner = load_runner(trained)
    assert np.array_equal(np.asarray(translate(runner, img)), np.asarray(translate(runner, img)))
    noisy = load_runner(trained, keep_dropout=True)
    outs = {np.asarray(translate(noisy, img)).tobytes() for _ in range(4)}
    assert len(outs) > 1


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_runner(tmp_path / "nope.pt")
