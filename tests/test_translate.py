"""Batch translation (`pix2pix translate`): the results manifest, per-image failures with
reasons, resume and idempotence, workers, kill -9 at random points, and the drift report."""

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pix2pix import drift
from pix2pix.data import PairedDataset, discover_pairs
from pix2pix.train import Trainer
from pix2pix.translate import TranslateError, TranslateJob, translate_folder

from conftest import ROOT, run_cli, tiny_config


@pytest.fixture(scope="module")
def model(tmp_path_factory, synthetic_root):
    """A tiny trained checkpoint with its drift reference beside it, as `pix2pix train` leaves it."""
    out = tmp_path_factory.mktemp("translate-model")
    cfg = tiny_config()
    train = PairedDataset(synthetic_root / "train", cfg.data)
    Trainer(cfg, train, out, progress=False).fit(max_steps=3)
    return out / "last.pt"


def photo(seed: int, size=(40, 30)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def make_inputs(root: Path, count: int, nested: bool = True) -> Path:
    for i in range(count):
        folder = root / (f"batch{i % 3}" if nested else "")
        folder.mkdir(parents=True, exist_ok=True)
        photo(i).save(folder / f"img{i:04d}.{'png' if i % 2 else 'jpg'}")
    return root


def rows(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def outputs(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.png")) if "drift" not in p.name}


def test_a_folder_is_translated_with_a_manifest_and_bad_files_listed(model, tmp_path):
    src = make_inputs(tmp_path / "in", 7)
    (src / "batch0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    photo(99, (300, 300)).save(src / "huge.png")
    photo(98).save(src / "batch1" / "img0001.jpg")  # writes the same output as img0001.png
    (src / ".hidden.png").write_bytes(b"x")
    out = tmp_path / "out"
    summary = translate_folder(TranslateJob(str(model), str(src), str(out), workers=1, max_megapixels=0.05))
    table = {r["input"]: r for r in rows(out)}
    assert len(table) == 10 and summary["total"] == 10
    ok = [r for r in table.values() if r["status"] == "ok"]
    assert len(ok) == 7 and summary["ok"] == 7 and summary["failed"] == 3
    assert (
        "not a readable image" in table["batch0/broken.png"]["reason"]
        or "cannot decode" in table["batch0/broken.png"]["reason"]
    )
    assert "over the limit of 0.05" in table["huge.png"]["reason"] and "--max-megapixels" in table["huge.png"]["reason"]
    assert "same output batch1/img0001.png" in table["batch1/img0001.png"]["reason"]
    for r in ok:
        img = Image.open(out / r["output"])
        assert img.size == (40, 30) and len(r["input_sha256"]) == 64 and r["model"].startswith("last.pt@sha256:")
        assert float(r["seconds"]) > 0 and 0 <= float(r["brightness"]) <= 1
    assert not list((out / ".translate").glob("part-*"))  # merged into results.csv
    report = json.loads((out / "drift.json").read_text())
    assert report["tested"] is False and report["drift"] is False  # 7 images: too few to test


def test_a_rerun_skips_what_is_done_and_translates_only_what_is_new(model, tmp_path):
    src = make_inputs(tmp_path / "in", 6)
    out = tmp_path / "out"
    job = lambda: TranslateJob(str(model), str(src), str(out), workers=1)  # noqa: E731
    first = translate_folder(job())
    before = outputs(out)
    again = translate_folder(job())
    assert first["translated"] == 6 and again["translated"] == 0 and again["skipped"] == 6
    assert outputs(out) == before
    photo(50).save(src / "batch2" / "new.png")
    photo(51).save(src / "batch0" / "img0000.jpg")  # changed content: translated again
    third = translate_folder(job())
    assert third["translated"] == 2 and third["skipped"] == 5
    assert len(rows(out)) == 7 and all(r["status"] == "ok" for r in rows(out))
    (out / "batch1" / "img0001.png").unlink()  # an output lost: made again, same bytes
    fourth = translate_folder(job())
    assert fourth["translated"] == 1 and outputs(out)["batch1/img0001.png"] == before["batch1/img0001.png"]


@pytest.mark.slow
def test_workers_write_the_same_bytes_as_one_process(model, tmp_path):
    src = make_inputs(tmp_path / "in", 9)
    one, two = tmp_path / "one", tmp_path / "two"
    translate_folder(TranslateJob(str(model), str(src), str(one), workers=1, threads=1))
    summary = translate_folder(TranslateJob(str(model), str(src), str(two), workers=2, threads=1))
    assert summary["translated"] == 9 and summary["failed"] == 0
    assert outputs(one) == outputs(two)
    assert [r["input"] for r in rows(one)] == [r["input"] for r in rows(two)]


def test_bad_jobs_fail_before_any_work_with_one_line(model, tmp_path):
    src = make_inputs(tmp_path / "in", 2)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(TranslateError, match="cannot write the output folder"):
        translate_folder(TranslateJob(str(model), str(src), str(blocker / "out")))
    with pytest.raises(TranslateError, match="no images found"):
        (tmp_path / "empty").mkdir()
        translate_folder(TranslateJob(str(model), str(tmp_path / "empty"), str(tmp_path / "o")))
    with pytest.raises(TranslateError, match="no such model file"):
        translate_folder(TranslateJob(str(tmp_path / "nope.pt"), str(src), str(tmp_path / "o")))
    result = run_cli("translate", "--model", model, "--input", tmp_path / "missing", "--output", tmp_path / "o2")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"pix2pix translate: error: {tmp_path / 'missing'}: no such folder; point --input at a folder of images"
    ]


@pytest.mark.slow
def test_drift_is_flagged_on_shifted_inputs_and_not_on_more_of_the_same(model, tmp_path):
    """The reference (as `pix2pix train` writes it beside its checkpoints) against 30 new
    inputs like the training ones (not flagged) and the same images darkened (flagged)."""
    from pipeline.data.synthetic import generate

    data = tmp_path / "data"
    generate(data, {"train": 60, "test": 30}, size=32, seed=3)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "last.pt").write_bytes(model.read_bytes())
    cfg = tiny_config().data  # BtoA: the B (labels) half is the input
    drift.write_reference(
        drift.reference_from_pairs(discover_pairs(data / "train"), cfg), model_dir / drift.REFERENCE_NAME
    )
    fresh, dark = tmp_path / "fresh", tmp_path / "dark"
    fresh.mkdir(), dark.mkdir()
    for i, pair in enumerate(discover_pairs(data / "test")):
        labels = Image.open(pair.a).crop((32, 0, 64, 32))
        labels.save(fresh / f"{i}.png")
        Image.eval(labels, lambda v: v // 3).save(dark / f"{i}.png")
    for folder, expected in ((fresh, False), (dark, True)):
        out = tmp_path / f"out-{folder.name}"
        summary = translate_folder(TranslateJob(str(model_dir / "last.pt"), str(folder), str(out), workers=1))
        report = json.loads((out / "drift.json").read_text())
        assert summary["drift"] is expected and report["tested"] is True and report["drift"] is expected, report
        assert report["count"] == 30 and report["reference_count"] == 60 and report["threshold"] == 0.01 / 8
        assert (out / "drift.png").is_file()
    assert "brightness" in report["drifted"]


def test_the_false_alarm_rate_on_in_distribution_samples_is_within_alpha(tmp_path):
    """Repeated samples of 30 from the same distribution as the reference: the share flagged
    stays near alpha (1 %) — the Bonferroni threshold is doing its job."""
    rng = np.random.default_rng(0)
    names = list(drift.tested_statistics(3))

    def sample(n, shift=0.0):
        return [{k: float(rng.normal(0.5 + shift, 0.1)) for k in names} for _ in range(n)]

    reference = {"statistics": names, "count": 500, "values": {k: [r[k] for r in sample(500)] for k in names}}
    alarms = sum(drift.drift_report(reference, sample(30))["drift"] for _ in range(300))
    assert alarms <= 9  # 3 % of 300: alpha is 1 %
    assert drift.drift_report(reference, sample(30, shift=0.1))["drift"] is True


def _translate_process(model, src, out) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pix2pix.cli", "translate", "--model", str(model), "--input", str(src),
         "--output", str(out), "--workers", "2", "--threads", "1", "--tile-megapixels", "0.01"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


@pytest.mark.slow
def test_kill_9_at_random_points_leaves_exactly_what_a_clean_run_writes(model, tmp_path):
    """Five kill -9s of a two-worker job (the whole process group, mid-write) at random
    moments, then a run to the end: the outputs are byte-for-byte a clean run's, every input is
    in results.csv once, and no temporary file is left."""
    count = int(os.environ.get("P2P_KILL_IMAGES", "240"))  # the 2,000: P2P_KILL_IMAGES=2000
    src = tmp_path / "in"
    for i in range(count):
        folder = src / f"part{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        photo(i, (160, 120)).save(folder / f"{i:04d}.png")
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    assert subprocess.run(
        [sys.executable, "-m", "pix2pix.cli", "translate", "--model", str(model), "--input", str(src),
         "--output", str(clean), "--workers", "2", "--threads", "1", "--tile-megapixels", "0.01"],
        cwd=ROOT, capture_output=True, timeout=600,
    ).returncode == 0  # fmt: skip
    rng = random.Random(0)
    kills = 0
    for _ in range(5):
        proc = _translate_process(model, src, killed)
        # Wait until this run has recorded something, then kill at a random moment after it.
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            parts = list((killed / ".translate").glob("part-*.csv"))
            if sum(max(0, len(p.read_text().splitlines()) - 1) for p in parts) > 0:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5 * count / 240))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
    assert kills >= 3
    final = _translate_process(model, src, killed)
    assert final.wait(timeout=600) == 0, final.stderr.read()
    assert outputs(killed) == outputs(clean)
    names = [r["input"] for r in rows(killed)]
    assert len(names) == len(set(names)) == count and all(r["status"] == "ok" for r in rows(killed))
    assert not list(killed.rglob("*.tmp"))
