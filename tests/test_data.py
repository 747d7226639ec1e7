import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from pix2pix import data as data_module
from pix2pix.config import DataConfig
from pix2pix.data import (
    EpochSampler,
    ImageError,
    Pair,
    PairedDataset,
    decode_uint8,
    discover_pairs,
    loader_workers,
    open_image,
    pil_to_uint8,
    read_pair,
    to_channels,
)


def _combined(path, w=64, h=32, mode="RGB"):
    """A|B image whose right half is the colour negative of its left half."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (h, w // 2, 3), dtype=np.uint8)
    img = np.concatenate([a, 255 - a], axis=1)
    Image.fromarray(img).convert(mode).save(path)
    return a


def test_combined_image_is_split_at_half_and_direction_swaps(tmp_path):
    a = _combined(tmp_path / "x.png")
    ab = read_pair(Pair(tmp_path / "x.png"), 3, 3, "AtoB")
    ba = read_pair(Pair(tmp_path / "x.png"), 3, 3, "BtoA")
    assert torch.equal(ab[0], torch.from_numpy(a).permute(2, 0, 1))
    assert torch.equal(ab[1], 255 - ab[0])
    assert torch.equal(ba[0], ab[1]) and torch.equal(ba[1], ab[0])


def test_random_view_applies_the_same_crop_and_flip_to_both_halves(tmp_path):
    _combined(tmp_path / "x.png", w=128, h=64)
    ds = PairedDataset(tmp_path, DataConfig(load_size=72, crop_size=64))
    for seed in range(12):
        item = ds[(0, seed)]
        assert item["input"].shape == (3, 64, 64)
        # target is the negative of input everywhere => same geometry on both halves
        assert (item["input"] + item["target"]).abs().max() <= 2.5 / 127.5
        assert torch.equal(item["input"], ds[(0, seed)]["input"])  # a seed always gives the same view
    # Different seeds give different views (crop offsets and flips).
    views = {tuple(ds[(0, s)]["input"].flatten()[:50].tolist()) for s in range(12)}
    assert len(views) > 1


def test_flip_mirrors_both_halves_for_some_seeds_and_not_others(tmp_path):
    _combined(tmp_path / "x.png", w=128, h=64)
    cfg = DataConfig(load_size=64, crop_size=64, preprocess="resize")  # no crop: only the flip varies
    ds = PairedDataset(tmp_path, cfg)
    plain = PairedDataset(tmp_path, cfg, train=False)[0]
    flipped = 0
    for seed in range(16):
        item = ds[(0, seed)]
        if torch.equal(item["input"], plain["input"]):
            assert torch.equal(item["target"], plain["target"])
        else:
            assert torch.equal(item["input"], plain["input"].flip(-1)) and torch.equal(
                item["target"], plain["target"].flip(-1)
            )
            flipped += 1
    assert 0 < flipped < 16
    no_flip = PairedDataset(tmp_path, DataConfig(load_size=64, crop_size=64, preprocess="resize", flip=False))
    assert all(torch.equal(no_flip[(0, s)]["input"], plain["input"]) for s in range(16))


def test_eval_view_is_a_plain_resize_to_crop_size(tmp_path):
    a = _combined(tmp_path / "x.png", w=128, h=64)
    ds = PairedDataset(tmp_path, DataConfig(load_size=72, crop_size=32), train=False)
    item = ds[0]
    assert item["input"].shape == (3, 32, 32)
    # Pillow's antialiased bicubic on the uint8 half, as the reference pix2pix resizes
    expected = TF.pil_to_tensor(Image.fromarray(a[:, :64]).resize((32, 32), Image.Resampling.BICUBIC))
    assert torch.equal(item["input"], expected.float() / 127.5 - 1)  # no crop, no flip
    again = PairedDataset(tmp_path, DataConfig(load_size=72, crop_size=32, cache=False), train=False)
    assert torch.equal(again[0]["input"], item["input"]) and torch.equal(again[0]["target"], item["target"])


def test_separate_folders_match_by_name(tmp_path):
    for side, color in (("A", (255, 0, 0)), ("B", (0, 0, 255))):
        (tmp_path / side).mkdir()
        for name in ("one", "two"):
            Image.new("RGB", (40, 40), color).save(tmp_path / side / f"{name}.png")
    pairs = discover_pairs(tmp_path)
    assert [p.name for p in pairs] == ["one", "two"]
    ds = PairedDataset(pairs, DataConfig(crop_size=32, load_size=32), train=False)
    assert ds[0]["input"][0].mean() == pytest.approx(1.0) and ds[0]["target"][2].mean() == pytest.approx(1.0)


def test_separate_folders_with_a_lonely_file_name_it(tmp_path):
    (tmp_path / "A").mkdir()
    (tmp_path / "B").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "A" / "one.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "A" / "two.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "B" / "one.png")
    with pytest.raises(ImageError, match=r"two\.png.*no partner"):
        discover_pairs(tmp_path)


def test_grayscale_channels(tmp_path):
    _combined(tmp_path / "x.png")
    ds = PairedDataset(tmp_path, DataConfig(crop_size=32, load_size=32, input_nc=1, output_nc=3), train=False)
    assert ds[0]["input"].shape == (1, 32, 32) and ds[0]["target"].shape == (3, 32, 32)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "L", "CMYK", "I;16", "I", "F", "1"])
def test_any_pillow_mode_converts(mode):
    base = Image.new("RGB", (8, 4), (200, 100, 50))
    if mode in ("I;16", "I", "F"):
        arr = np.full(
            (4, 8), 40000 if mode != "F" else 0.5, dtype={"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
        )
        img = Image.fromarray(arr)
        assert img.mode == mode
    else:
        img = base.convert(mode)
    rgb = to_channels(img, 3)
    gray = to_channels(img, 1)
    assert rgb.mode == "RGB" and gray.mode == "L" and rgb.size == (8, 4)


def test_transparent_pixels_become_white():
    img = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    assert to_channels(img, 3).getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_is_rescaled_not_clipped():
    img = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert to_channels(img, 1).getpixel((0, 0)) == 255
    img = Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16))
    assert to_channels(img, 1).getpixel((0, 0)) == 128


def test_exif_orientation_is_honoured(tmp_path):
    # Stored 32x64 (portrait) with orientation 6 (rotate 90): upright it is 64x32 = 2:1.
    img = Image.new("RGB", (32, 64), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 32, 32))  # top half white in storage
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    a, b = read_pair(Pair(tmp_path / "rot.jpg"), 3, 3, "AtoB")
    assert a.shape[-2:] == (32, 32)
    # Orientation 6 turns the stored top (white) into the upright right half (B).
    assert a.float().mean() < 50 and b.float().mean() > 200


def test_not_two_to_one_is_a_one_line_error_naming_the_file(tmp_path):
    Image.new("RGB", (513, 256)).save(tmp_path / "odd.png")
    with pytest.raises(ImageError) as e:
        read_pair(Pair(tmp_path / "odd.png"), 3, 3, "AtoB")
    assert "odd.png" in str(e.value) and "513x256" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("content", [b"", b"this is not an image", None])
def test_unreadable_files_are_one_line_errors(tmp_path, content):
    path = tmp_path / "bad.jpg"
    if content is None:  # truncated JPEG
        buf = io.BytesIO()
        Image.new("RGB", (64, 32), (1, 2, 3)).save(buf, "JPEG")
        content = buf.getvalue()[:200]
    path.write_bytes(content)
    with pytest.raises(ImageError) as e:
        read_pair(Pair(path), 3, 3, "AtoB")
    assert "bad.jpg" in str(e.value) and "\n" not in str(e.value)


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    Image.new("RGB", (64, 32)).save(tmp_path / "bomb.png")
    with pytest.raises(ImageError, match="bomb.png.*too large"):
        read_pair(Pair(tmp_path / "bomb.png"), 3, 3, "AtoB")


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ImageError, match="no images found"):
        PairedDataset(tmp_path, DataConfig())


def test_sampler_is_deterministic_and_resumable():
    s = EpochSampler(10, seed=3)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start=4)
    assert list(s) == full[4:]
    s.set_epoch(3)
    assert [i for i, _ in list(s)] != [i for i, _ in full]
    assert sorted(i for i, _ in full) == list(range(10))


def test_sampler_shards_for_distributed_training():
    shards = []
    for rank in range(3):
        s = EpochSampler(10, seed=0, rank=rank, num_replicas=3)
        shards.append([i for i, _ in s])
    assert {len(x) for x in shards} == {4}
    assert set().union(*map(set, shards)) == set(range(10))


@pytest.mark.parametrize(
    "name,mode",
    [
        ("rgb.jpg", "RGB"),
        ("gray.jpg", "L"),
        ("rgb.png", "RGB"),
        ("gray.png", "L"),
        ("rgba.png", "RGBA"),
        ("p.png", "P"),
        ("i16.png", "I;16"),
        ("cmyk.jpg", "CMYK"),
    ],
)
def test_fast_decoder_gives_exactly_what_pillow_gives(tmp_path, name, mode):
    """torchvision.io decodes the plain files, Pillow the rest: the pixels never depend on which."""
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (24, 40, 4), dtype=np.uint8), "RGBA")
    img = img.convert(mode) if mode != "I;16" else Image.fromarray(rng.integers(0, 65536, (24, 40), dtype=np.uint16))
    img.save(tmp_path / name, **({"quality": 90} if name.endswith(".jpg") else {}))
    for channels in (1, 3):
        expected = pil_to_uint8(to_channels(open_image(tmp_path / name), channels))
        got = decode_uint8(tmp_path / name, channels)
        assert got.dtype == torch.uint8 and torch.equal(got, expected), (name, channels)


def test_memory_plan_comes_from_manifest_sizes_without_opening_files(tmp_path):
    pairs = [Pair(tmp_path / f"missing{i}.jpg", size=(256, 256)) for i in range(10)]
    ds = PairedDataset(pairs, DataConfig(input_nc=3, output_nc=1))
    assert ds.decoded_bytes() == 10 * 256 * 256 * 4


def test_workers_start_only_when_the_decoded_data_outgrows_the_cache(tmp_path, monkeypatch):
    for i in range(4):
        _combined(tmp_path / f"{i}.png", w=64, h=32)
    ds = PairedDataset(tmp_path, DataConfig(load_size=36, crop_size=32))
    assert ds.decoded_bytes() == 4 * 32 * 32 * 6 and loader_workers("auto", ds) == 0
    assert loader_workers(3, ds) == 3  # a number is taken as given
    monkeypatch.setattr(data_module, "CACHE_LIMIT_BYTES", 4 * 32 * 32 * 6 - 1)
    assert loader_workers("auto", ds) >= 1
    assert loader_workers("auto", PairedDataset(tmp_path, DataConfig(load_size=36, crop_size=32, cache=False))) >= 1
