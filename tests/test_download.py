import io
import os
import tarfile
import zipfile

import pytest
from PIL import Image

from pipeline.config import SyntheticConfig
from pipeline.stage import StageError
from pipeline.stages import download
from pipeline.stages.download import fetch, materialise, safe_extract

from conftest import write_params
from servers import RangeServer


def _image_bytes(w=64, h=32, color=(10, 200, 30)):
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, "PNG")
    return buf.getvalue()


def _tar(path, files: dict, top="dataset"):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{top}/{name}" if top else name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _split_files(counts, ext="png"):
    return {f"{split}/{i}.{ext}": _image_bytes() for split, n in counts.items() for i in range(1, n + 1)}


def test_url_archive_is_downloaded_extracted_and_flattened(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    served = tmp_path / "srv"
    served.mkdir()
    _tar(served / "mine.tar.gz", _split_files({"train": 3, "test": 1}))
    with RangeServer(served) as srv:
        materialise(f"{srv.url}/mine.tar.gz", tmp_path / "raw", SyntheticConfig(), "unused", progress=False)
    assert sorted(p.relative_to(tmp_path / "raw").as_posix() for p in (tmp_path / "raw").rglob("*.png")) == [
        "test/1.png",
        "train/1.png",
        "train/2.png",
        "train/3.png",
    ]


def test_download_resumes_after_a_dropped_connection(tmp_path):
    served = tmp_path / "srv"
    served.mkdir()
    payload = os.urandom(300_000)
    (served / "blob.tar.gz").write_bytes(payload)
    with RangeServer(served, fail_first=True) as srv:
        out = fetch(f"{srv.url}/blob.tar.gz", tmp_path / "cache" / "blob.tar.gz", progress=False)
    assert out.read_bytes() == payload
    ranges = [r for _, r in srv.requests]
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-"


def test_official_dataset_by_name_checks_counts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    served = tmp_path / "srv"
    served.mkdir()
    _tar(served / "night2day.tar.gz", _split_files({"train": 2, "val": 1, "test": 1}), top="night2day")
    _tar(served / "maps.tar.gz", _split_files({"train": 2, "val": 1}), top="maps")
    with RangeServer(served) as srv:
        info = materialise("night2day", tmp_path / "raw", SyntheticConfig(), srv.url, progress=False)
        assert info["counts"] == {"train": 2, "val": 1, "test": 1}
        with pytest.raises(StageError, match=r"maps should have 1096 train images, found 2"):
            materialise("maps", tmp_path / "raw2", SyntheticConfig(), srv.url, progress=False)


def test_facades_by_name_is_checked_against_the_shipped_sha256_list(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    served = tmp_path / "srv"
    served.mkdir()
    # Right counts, wrong bytes: the per-file checksums must catch it.
    _tar(served / "facades.tar.gz", _split_files({"train": 400, "val": 100, "test": 106}, ext="jpg"), top="facades")
    with RangeServer(served) as srv, pytest.raises(StageError, match=r"raw/test/1.jpg: SHA-256 does not match"):
        materialise("facades", tmp_path / "raw", SyntheticConfig(), srv.url, progress=False)


def test_http_errors_are_clear(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with RangeServer(tmp_path) as srv, pytest.raises(StageError, match="HTTP 404"):
        materialise(f"{srv.url}/missing.zip", tmp_path / "raw", SyntheticConfig(), "unused", progress=False)


@pytest.mark.parametrize("member", ["../evil.png", "/tmp/evil-abs.png", "a/../../evil.png"])
def test_tar_members_escaping_the_target_are_refused(tmp_path, member):
    archive = tmp_path / "bad.tar.gz"
    _tar(archive, {member: b"x"}, top="")
    with pytest.raises(StageError, match="refusing member"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.png").exists() and not os.path.exists("/tmp/evil-abs.png")


def test_tar_symlinks_are_refused(tmp_path):
    archive = tmp_path / "link.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("data/link")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(StageError, match="refusing member 'data/link'"):
        safe_extract(archive, tmp_path / "out")


def test_zip_traversal_is_refused_and_good_zips_extract(tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("../../evil.png", b"x")
    with pytest.raises(StageError, match="refusing member"):
        safe_extract(bad, tmp_path / "out")
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as z:
        z.writestr("pairs/train/1.png", _image_bytes())
    safe_extract(good, tmp_path / "ok")
    assert (tmp_path / "ok" / "pairs" / "train" / "1.png").is_file()


def test_local_folder_file_url_and_local_archive(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "mydata"
    (folder / "train").mkdir(parents=True)
    (folder / "train" / "x.png").write_bytes(_image_bytes())
    materialise(str(folder), tmp_path / "raw1", SyntheticConfig(), "unused")
    assert (tmp_path / "raw1" / "train" / "x.png").is_file()

    archive = _tar(tmp_path / "mydata.tar.gz", {"train/y.png": _image_bytes()}, top="mydata")
    materialise(str(archive), tmp_path / "raw2", SyntheticConfig(), "unused")
    assert (tmp_path / "raw2" / "train" / "y.png").is_file()

    materialise(archive.as_uri(), tmp_path / "raw3", SyntheticConfig(), "unused", progress=False)
    assert (tmp_path / "raw3" / "train" / "y.png").is_file()


def test_local_folder_with_its_own_sha256sums_is_verified(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "ds"
    (folder / "train").mkdir(parents=True)
    (folder / "train" / "1.png").write_bytes(_image_bytes())
    (folder / "SHA256SUMS").write_text("0" * 64 + "  ./train/1.png\n")
    with pytest.raises(StageError, match="1.png: SHA-256 does not match"):
        materialise(str(folder), tmp_path / "raw", SyntheticConfig(), "unused")


def test_unknown_source_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StageError, match=r"data.source='facadez'.*not a known dataset"):
        materialise("facadez", tmp_path / "raw", SyntheticConfig(), "unused")


def test_stage_replaces_raw_only_on_success(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path / "params.yaml")
    download.main()
    before = sorted(p.name for p in (tmp_path / "data/raw/train").iterdir())
    assert len(before) == 8
    write_params(tmp_path / "params.yaml", data={"source": str(tmp_path / "nope")})
    with pytest.raises(StageError):
        download.main()
    assert sorted(p.name for p in (tmp_path / "data/raw/train").iterdir()) == before
    assert not (tmp_path / "data/raw.staging").exists()


def test_an_official_cyclegan_dataset_by_name_is_a_zip_of_four_domain_folders(tmp_path, monkeypatch):
    """horse2zebra (and `cyclegan:maps`, whose plain name is pix2pix's) from a local mirror: the
    zip streamed, extracted, flattened and checked for trainA/ trainB/ testA/ testB/."""
    monkeypatch.chdir(tmp_path)
    served = tmp_path / "srv"
    served.mkdir()
    with zipfile.ZipFile(served / "horse2zebra.zip", "w") as z:
        for folder, n in (("trainA", 3), ("trainB", 2), ("testA", 1), ("testB", 1)):
            for i in range(n):
                z.writestr(f"horse2zebra/{folder}/n0{i}.jpg", _image_bytes(32, 32))
    with zipfile.ZipFile(served / "maps.zip", "w") as z:
        z.writestr("maps/trainA/1.jpg", _image_bytes(32, 32))  # no trainB/, testA/, testB/
    with RangeServer(served) as srv:
        info = materialise("horse2zebra", tmp_path / "raw", SyntheticConfig(), srv.url, progress=False)
        assert info["counts"] == {"trainA": 3, "trainB": 2, "testA": 1, "testB": 1}
        assert info["url"] == f"{srv.url}/horse2zebra.zip" and (tmp_path / "raw/trainB/n01.jpg").is_file()
        with pytest.raises(StageError, match=r"raw2/trainB: maps should have some trainB images, found 0"):
            materialise("cyclegan:maps", tmp_path / "raw2", SyntheticConfig(), srv.url, progress=False)
    from pipeline.data.sources import cyclegan_name, dataset_name, source_url

    assert cyclegan_name("maps") is None and cyclegan_name("cyclegan:maps") == "maps"
    assert dataset_name("cyclegan:horse2zebra") == "horse2zebra"
    assert source_url("horse2zebra").endswith("/cyclegan/datasets/horse2zebra.zip")
