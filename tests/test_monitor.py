"""What a serving model receives (pix2pix.monitor): statistics recorded per input, a log
shared by processes, drift over the last inputs, and `pix2pix drift` over a log."""

import json
import multiprocessing

import numpy as np
import pytest

from pix2pix import drift
from pix2pix.errors import ImageError
from pix2pix.monitor import InputMonitor, read_log, reference_key

from conftest import run_cli


def labels(rng, n, dark=False):
    """Label-map-like images: flat coloured blocks (the synthetic default's kind of input)."""
    out = []
    for _ in range(n):
        img = np.zeros((32, 32, 3), np.uint8)
        for _ in range(4):
            y, x = rng.integers(0, 24, 2)
            img[y : y + 8, x : x + 8] = rng.integers(60, 255, 3)
        out.append(img // 3 if dark else img)
    return out


@pytest.fixture(scope="module")
def reference():
    return drift.build_reference(labels(np.random.default_rng(0), 80), channels=3, crop_size=32, source="test")


def test_inputs_are_recorded_and_drift_reported_over_the_last_window(reference, tmp_path):
    rng = np.random.default_rng(1)
    monitor = InputMonitor(reference, tmp_path / "inputs.jsonl", window=30)
    memory = InputMonitor(reference, window=30)
    for img in labels(rng, 30):
        monitor.record(img), memory.record(img)
    for m in (monitor, memory):
        report = m.report()
        assert report["tested"] and report["count"] == 30 and report["drift"] is False, report
    for img in labels(rng, 30, dark=True):  # the window now holds only the dark ones
        monitor.record(img), memory.record(img)
    for m in (monitor, memory):
        report = m.report()
        assert report["count"] == 30 and report["drift"] is True and "brightness" in report["drifted"]
    lines = (tmp_path / "inputs.jsonl").read_text().splitlines()
    assert len(lines) == 60 and json.loads(lines[0])["reference"] == reference_key(reference)
    assert set(drift.tested_statistics(3)) <= set(json.loads(lines[-1]))


def test_too_few_inputs_or_no_reference_are_said_not_tested(reference, tmp_path):
    monitor = InputMonitor(reference)
    monitor.record(labels(np.random.default_rng(2), 1)[0])
    report = monitor.report()
    assert report["tested"] is False and "fewer than 20" in report["reason"] and report["log"] is None
    blind = InputMonitor(None, tmp_path / "x.jsonl")
    assert blind.record(np.zeros((8, 8, 3), np.uint8)) is None
    assert "no input_reference.json" in blind.report()["reason"]


def _record_from_another_process(reference, log, seed):
    monitor = InputMonitor(reference, log)
    for img in labels(np.random.default_rng(seed), 25):
        monitor.record(img)


def test_a_log_shared_by_processes_keeps_whole_lines_and_survives_a_restart(reference, tmp_path):
    log = tmp_path / "inputs.jsonl"
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_record_from_another_process, args=(reference, log, s)) for s in (3, 4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    with open(log, "a") as f:
        f.write('{"reference": "cut short by a kill')  # a writer killed mid-line
    other = dict(reference, source="another model's training inputs")
    InputMonitor(other, log).record(labels(np.random.default_rng(5), 1)[0])
    # A restarted server reports from the log: both processes' 50 lines, not the other model's.
    restarted = InputMonitor(reference, log)
    assert restarted.report()["count"] == 50 and restarted.report()["tested"]
    assert len(list(read_log(log))) == 51
    assert InputMonitor(reference, log, window=7).report()["count"] == 7


def test_an_unwritable_log_is_one_line_naming_the_variable(reference, tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ImageError, match="a-file/inputs.jsonl: cannot write the input log .*P2P_INPUT_LOG"):
        InputMonitor(reference, tmp_path / "a-file" / "inputs.jsonl")


def test_pix2pix_drift_reports_a_served_models_log(reference, tmp_path):
    drift.write_reference(reference, tmp_path / "model" / drift.REFERENCE_NAME)
    (tmp_path / "model" / "generator.onnx").write_bytes(b"")
    monitor = InputMonitor(reference, tmp_path / "inputs.jsonl")
    for img in labels(np.random.default_rng(6), 25, dark=True):
        monitor.record(img)
    out = tmp_path / "drift.json"
    r = run_cli("drift", "--log", tmp_path / "inputs.jsonl", "--reference", tmp_path / "model/generator.onnx",
                "--output", out, "--plot", tmp_path / "drift.png")  # fmt: skip
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    assert report["drift"] is True and report["count"] == 25 and "warning: drift in" in r.stderr
    assert (tmp_path / "drift.png").read_bytes()[:4] == b"\x89PNG"
    r = run_cli("drift", "--log", tmp_path / "none.jsonl", "--reference", tmp_path / "model")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "none.jsonl: no input log here" in r.stderr.strip().splitlines()[-1]
