import io
import struct
import zlib

import pandas as pd
import pytest
from PIL import Image

from conftest import write_params
from pipeline import split
from pipeline.params import StageError


def _ab(path, w=64, h=32, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), (10, 120, 200)).convert(mode).save(path)


def _png_bomb(path, w=40000, h=40000):
    """A 60-byte PNG whose header declares w x h pixels (a decompression bomb)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


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
    m = pd.read_csv(project / "data/pairs/manifest.csv", dtype={"id": str})
    assert list(m.columns) == ["id", "split", "a_path", "b_path", "width", "height", "source", "sha256"]
    assert m["split"].value_counts().to_dict() == {"train": 3, "test": 2, "val": 1}
    assert set(m["id"]) >= {"train-0", "val-0", "test-1"}
    row = m[m["id"] == "train-0"].iloc[0]
    assert (row["width"], row["height"], row["source"]) == (32, 32, "train/0.jpg")
    assert len(row["sha256"]) == 64
    a = Image.open(project / "data/pairs" / row["a_path"])
    assert a.size == (32, 32) and Image.open(project / "data/pairs" / row["b_path"]).size == (32, 32)
    assert pd.read_csv(project / "data/pairs/rejected.csv").empty


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
    _ab(raw / "tiny.png", w=2, h=1)
    _ab(raw / "wide.png", w=513, h=256)
    _ab(raw / "square.png", w=300, h=300)
    _png_bomb(raw / "bomb.png")
    split.main()
    m = pd.read_csv(project / "data/pairs/manifest.csv")
    assert sorted(m["source"]) == sorted(f"train/{n}" for n in ("good.png", "gray16.png", "palette.png", "cmyk.jpg", "rgba.png", "la.png"))
    rejected = pd.read_csv(project / "data/pairs/rejected.csv").set_index("path")
    reasons = {p.split("/")[-1]: r for p, r in rejected["reason"].items()}
    assert set(reasons) == {"empty.jpg", "text.jpg", "truncated.jpg", "tiny.png", "wide.png", "square.png", "bomb.png"}
    assert "too large to decode safely" in reasons["bomb.png"]
    assert "not a readable image" in reasons["text.jpg"] and "too small" in reasons["tiny.png"]
    assert "513x256" in reasons["wide.png"] and "decode" in reasons["truncated.jpg"]
    assert "7 rejected" in capsys.readouterr().out


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
