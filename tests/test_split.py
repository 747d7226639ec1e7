import io
import struct
import zlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.data.hashing import sha256
from pipeline.data.manifest import read_manifest, split_pairs
from pipeline.stage import StageError
from pipeline.stages import split
from pix2pix.data import read_pair

from conftest import write_params


def _ab(path, w=64, h=32, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), (10, 120, 200)).convert(mode).save(path)


def _png_bomb(path, w=40000, h=40000):
    """A 60-byte PNG whose header declares w x h pixels (a decompression bomb)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path / "params.yaml")
    return tmp_path


def test_own_splits_are_kept_and_manifest_lists_every_pair(project):
    for s, n in (("train", 3), ("val", 1), ("test", 2)):
        for i in range(n):
            _ab(project / "data/raw" / s / f"{i}.jpg")
    split.main()
    m = pd.read_csv(project / "data/pairs/manifest.csv", dtype={"id": str}, keep_default_na=False)
    assert list(m.columns) == ["id", "split", "layout", "a_path", "b_path", "width", "height", "sha256", "status"]
    assert m["split"].value_counts().to_dict() == {"train": 3, "test": 2, "val": 1}
    assert set(m["id"]) >= {"train-0", "val-0", "test-1"}
    row = m[m["id"] == "train-0"].iloc[0]
    assert (row["layout"], row["a_path"], row["b_path"], row["width"], row["height"], row["status"]) == (
        "combined",
        "train/0.jpg",
        "",
        32,
        32,
        "ok",
    )
    assert row["sha256"] == sha256(project / "data/raw/train/0.jpg")
    # no image is copied: the stage's output is the manifest and the rejects, nothing else
    assert sorted(p.name for p in (project / "data/pairs").iterdir()) == ["manifest.csv", "rejected.csv"]
    assert pd.read_csv(project / "data/pairs/rejected.csv").empty


def test_manifest_pairs_read_halves_from_the_raw_files(project):
    """A|B and A/+B/ layouts, both directions and 1- or 3-channel sides, read via the manifest."""
    rng = np.random.default_rng(0)
    a_px, b_px = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    (project / "data/raw/train/A").mkdir(parents=True)
    (project / "data/raw/train/B").mkdir(parents=True)
    (project / "data/raw/test").mkdir(parents=True)
    Image.fromarray(a_px).save(project / "data/raw/train/A/x.png")
    Image.fromarray(b_px).save(project / "data/raw/train/B/x.png")
    Image.fromarray(np.concatenate([a_px, b_px], axis=1)).save(project / "data/raw/test/y.png")
    split.main()
    m = read_manifest(project / "data/pairs/manifest.csv")
    assert dict(zip(m["id"], m["layout"], strict=True)) == {"train-x": "separate", "test-y": "combined"}
    for which in ("train", "test"):
        (pair,) = split_pairs(m, which, project / "data/raw")
        assert pair.size == (32, 32)
        for direction, (nc_in, nc_out) in (("AtoB", (3, 3)), ("BtoA", (3, 3)), ("AtoB", (1, 3)), ("BtoA", (3, 1))):
            inp, target = read_pair(pair, nc_in, nc_out, direction)
            src, dst = (a_px, b_px) if direction == "AtoB" else (b_px, a_px)

            def expect(px, nc):
                return np.asarray(Image.fromarray(px).convert("L" if nc == 1 else "RGB")).reshape(32, 32, nc)

            assert np.array_equal(inp.permute(1, 2, 0).numpy(), expect(src, nc_in)), (which, direction, nc_in)
            assert np.array_equal(target.permute(1, 2, 0).numpy(), expect(dst, nc_out)), (which, direction, nc_out)


def test_flat_folder_is_split_by_ratio_deterministically(project):
    for i in range(20):
        _ab(project / "data/raw" / f"img {i} é.png")  # spaces and non-ASCII names
    split.main()
    first = pd.read_csv(project / "data/pairs/manifest.csv")
    assert first["split"].value_counts().to_dict() == {"train": 12, "val": 4, "test": 4}
    split.main()
    assert pd.read_csv(project / "data/pairs/manifest.csv").equals(first)


def test_separate_a_b_folders(project):
    for side in "AB":
        for name in ("x", "y"):
            _ab(project / "data/raw/train" / side / f"{name}.png", w=40, h=40)
    _ab(project / "data/raw/train/A/lonely.png", w=40, h=40)
    split.main()
    m = pd.read_csv(project / "data/pairs/manifest.csv")
    assert sorted(m["id"]) == ["train-x", "train-y"]
    rejected = pd.read_csv(project / "data/pairs/rejected.csv")
    assert rejected["path"].str.endswith("lonely.png").all() and len(rejected) == 1


def test_bad_files_are_rejected_with_reasons_and_good_ones_kept(project, capsys):
    raw = project / "data/raw/train"
    _ab(raw / "good.png")
    _ab(raw / "gray16.png", mode="I;16")
    _ab(raw / "palette.png", mode="P")
    _ab(raw / "cmyk.jpg", mode="CMYK")
    _ab(raw / "rgba.png", mode="RGBA")
    _ab(raw / "la.png", mode="LA")
    (raw / "empty.jpg").write_bytes(b"")
    (raw / "text.jpg").write_text("not an image")
    buf = io.BytesIO()
    Image.new("RGB", (64, 32)).save(buf, "JPEG")
    (raw / "truncated.jpg").write_bytes(buf.getvalue()[:100])
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 64, 3), dtype=np.uint8))
    buf = io.BytesIO()
    noisy.save(buf, "PNG")
    (raw / "cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) * 3 // 4])  # header intact, data cut
    _ab(raw / "tiny.png", w=2, h=1)
    _ab(raw / "wide.png", w=513, h=256)
    _ab(raw / "square.png", w=300, h=300)
    _png_bomb(raw / "bomb.png")
    split.main()
    m = read_manifest(project / "data/pairs/manifest.csv")
    assert sorted(m["a_path"]) == sorted(
        f"train/{n}" for n in ("good.png", "gray16.png", "palette.png", "cmyk.jpg", "rgba.png", "la.png")
    )
    every = pd.read_csv(project / "data/pairs/manifest.csv")  # rejected pairs are listed too, as such
    assert (every["status"] == "rejected").sum() == 8 and len(every) == 14
    rejected = pd.read_csv(project / "data/pairs/rejected.csv").set_index("path")
    reasons = {p.split("/")[-1]: r for p, r in rejected["reason"].items()}
    assert set(reasons) == {
        "empty.jpg",
        "text.jpg",
        "truncated.jpg",
        "cut.png",
        "tiny.png",
        "wide.png",
        "square.png",
        "bomb.png",
    }
    assert "too large to decode safely" in reasons["bomb.png"]
    assert "not a readable image" in reasons["text.jpg"] and "too small" in reasons["tiny.png"]
    assert (
        "513x256" in reasons["wide.png"] and "decode" in reasons["truncated.jpg"] and "truncated" in reasons["cut.png"]
    )
    assert "8 rejected" in capsys.readouterr().out


def test_stage_fails_only_when_nothing_usable_remains(project):
    raw = project / "data/raw"
    raw.mkdir(parents=True)
    (raw / "a.jpg").write_text("junk")
    with pytest.raises(StageError, match="no usable image pairs"):
        split.main()
    assert (project / "data/rejected.csv").is_file()  # the reasons survive the failure
    assert not (project / "data/pairs").exists()


def test_empty_folder_fails_clearly(project):
    (project / "data/raw").mkdir(parents=True)
    with pytest.raises(StageError, match="no usable image pairs"):
        split.main()


def test_the_unaligned_layout_lists_each_image_with_its_domain_and_rejects_bad_ones(project):
    """trainA/ trainB/ testA/ testB/ (the CycleGAN archives' layout), counts and names unmatched;
    a truncated JPEG and a too-small image are rejected with reasons, the rest kept."""
    raw = project / "data/raw"
    for folder, n in (("trainA", 4), ("trainB", 3), ("testA", 2), ("testB", 1)):
        for i in range(n):
            _ab(raw / folder / f"{folder[-1].lower()}{i}.jpg", w=40, h=30)
    good = (raw / "trainA" / "a0.jpg").read_bytes()
    (raw / "trainB" / "cut.jpg").write_bytes(good[: len(good) // 2])
    _ab(raw / "trainA" / "tiny.png", w=8, h=8)
    split.main()
    table = read_manifest(project / "data/pairs/manifest.csv")
    from pipeline.data.manifest import is_unpaired, split_domains

    assert is_unpaired(table) and set(table["layout"]) == {"unpaired"}
    a, b = split_domains(table, "train", raw)
    assert sorted(p.name for p in a) == ["a0.jpg", "a1.jpg", "a2.jpg", "a3.jpg"] and len(b) == 3
    assert [len(d) for d in split_domains(table, "test", raw)] == [2, 1] and split_pairs(table, "test") == []
    row = table[table["a_path"] == "trainA/a1.jpg"].iloc[0]
    assert (row["split"], row["b_path"], row["width"], row["height"]) == ("train", "", 40, 30)
    rejected = pd.read_csv(project / "data/pairs/rejected.csv")
    reasons = dict(zip(rejected["path"].map(lambda p: p.rsplit("/", 1)[-1]), rejected["reason"], strict=True))
    assert set(reasons) == {"cut.jpg", "tiny.png"} and "too small (8x8" in reasons["tiny.png"]


def test_an_unaligned_dataset_without_a_domain_fails_in_one_line(project):
    _ab(project / "data/raw/trainA/x.jpg", w=40, h=30)
    with pytest.raises(StageError, match=r"data/raw/trainB: missing; an unpaired dataset needs trainA/ and trainB/"):
        split.main()
