"""Multi-process training under torchrun: two CPU processes with the gloo backend."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import torch
    sys.path[:0] = [sys.argv[3], sys.argv[4]]
    from conftest import tiny_config
    import pix2pix.train as T
    from pix2pix import distributed
    from pix2pix.data import PairedDataset

    data, out = Path(sys.argv[1]), Path(sys.argv[2])
    saved = []
    real_save = T.save_checkpoint
    def recording_save(state, path):  # which rank writes which checkpoint
        saved.append(str(path))
        return real_save(state, path)
    T.save_checkpoint = recording_save

    cfg = tiny_config(epochs=1, epochs_decay=1, batch_size=2, keep_checkpoints=1)
    ctx = distributed.context()
    trainer = T.Trainer(cfg, PairedDataset(data / "train", cfg.data), out / "checkpoints", progress=False)
    indices = [i for i, _ in trainer.sampler]
    summary = trainer.fit()
    torch.save(dict(trainer.model.G.named_parameters()), out / f"G_rank{ctx.rank}.pt")
    (out / f"rank{ctx.rank}.json").write_text(json.dumps(
        {"saved": saved, "step": summary["step"], "world": ctx.world_size, "indices": indices}))
    """
)


@pytest.mark.slow
def test_two_gloo_ranks_train_identical_generators_and_only_rank0_checkpoints(tmp_path, synthetic_root):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "run"
    out.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(script),
        str(synthetic_root),
        str(out),
        str(ROOT / "tests"),
        str(ROOT),
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    # 6 training pairs, 3 per rank, batch 2: 2 steps per epoch, 2 epochs.
    assert [r["step"] for r in ranks] == [4, 4]
    assert set(ranks[0]["indices"]).isdisjoint(ranks[1]["indices"])  # each rank its own share

    g0 = torch.load(out / "G_rank0.pt")
    g1 = torch.load(out / "G_rank1.pt")
    assert g0.keys() == g1.keys()
    assert all(torch.equal(g0[k], g1[k]) for k in g0), "DDP left the ranks' generators different"

    assert ranks[1]["saved"] == []
    assert ranks[0]["saved"] and all(Path(p).parent == out / "checkpoints" for p in ranks[0]["saved"])
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == ["epoch_0002.pt", "last.pt"]
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 4
    assert all(torch.equal(state["generator"][k], g0[k]) for k in g0)
