"""Stage 4: test-split metrics of the trained generator (the checkpoint `evaluate.keep` names).

Writes metrics/eval.json (L1, PSNR, SSIM, the sharpness ratio - the outputs' high-frequency
energy over the targets', 1.0 = as sharp as real images - and the same for two trivial baselines: one that
always outputs the mean training target, one that returns its input unchanged - the bar for
colorization, super-resolution and denoising), reports/eval_per_image.csv, and reports/best.png /
reports/worst.png (rows: input, output, target) for the lowest- and highest-L1 test images.

An unpaired test split (two domain folders, model.kind unpaired) has no targets: there the
metrics are the cycle errors A -> B -> A and B -> A -> B, the identity errors, and FID/KID
between the translated A images and the real B ones (with the Inception weights); the grids
show input, output and the round trip for the lowest- and highest-cycle-error A images.
"""

from __future__ import annotations

import json
import sys

import pandas as pd
import torch
from torchvision.utils import save_image

from pix2pix.checkpoint import load_checkpoint
from pix2pix.config import Config
from pix2pix.data import PairedDataset, collate, iter_batches, to_image_range
from pix2pix.distributed import select_device
from pix2pix.fid import WEIGHTS_FILE, InceptionDistances, find_weights, looked_in
from pix2pix.files import atomic_write_text
from pix2pix.grid import comparison_grid
from pix2pix.loading import generator_from_state, in_precision
from pix2pix.metrics import METRIC_NAMES, evaluate, high_frequency_energy, per_image_metrics, unpaired_scores
from pix2pix.unpaired_data import UnpairedDataset

from ..config import load_config
from ..data.manifest import held_out_split, is_unpaired, read_manifest, split_domains, split_pairs
from ..paths import EVAL_JSON, METRICS, REPORTS, kept_checkpoint
from ..stage import StageError, run_stage
from ..tracking.run import shared_run, warn_tracking

PER_IMAGE = REPORTS / "eval_per_image.csv"


def mean_target(ds: PairedDataset) -> torch.Tensor:
    """The trivial baseline: the average training target image (eval view)."""
    ds.cache_enabled = False  # every image is read once: keeping them would only cost memory
    total = None
    for batch in iter_batches(ds):
        s = batch["target"].sum(0)
        total = s if total is None else total + s
    return total / len(ds)


def identity(batch: dict) -> torch.Tensor:
    """The input as the output (grayscale repeated, or colour averaged, to the target's channels)."""
    x, channels = batch["input"], batch["target"].shape[1]
    if x.shape[1] != channels:
        x = x.mean(1, keepdim=True).expand(-1, channels, -1, -1)
    return x


def baseline_metrics(predict, test: PairedDataset) -> dict[str, float]:
    """Mean metrics on `test` of `predict(batch) -> output batch` (a trivial baseline)."""
    sums = dict.fromkeys(METRIC_NAMES, 0.0)
    energy = {"fake": 0.0, "real": 0.0}
    for batch in iter_batches(test):
        fake, real = to_image_range(predict(batch).expand_as(batch["target"])), to_image_range(batch["target"])
        scores = per_image_metrics(fake, real)
        for k in METRIC_NAMES:
            sums[k] += float(scores[k].sum())
        energy["fake"] += float(high_frequency_energy(fake).sum())
        energy["real"] += float(high_frequency_energy(real).sum())
    means = {k: v / len(test) for k, v in sums.items()}
    return {**means, "sharpness": energy["fake"] / max(energy["real"], 1e-12)}


def inception_distances(configured: str, g, test: PairedDataset, device) -> dict[str, float]:
    """FID and KID of the outputs against the targets, when the Inception weights are here."""
    weights = find_weights(configured)
    if weights is None:
        print(
            f"evaluate: FID/KID skipped: no Inception weights at {looked_in(configured)} (set evaluate.fid_weights "
            f"to {WEIGHTS_FILE}, or to download on a machine online)",
            file=sys.stderr,
        )
        return {}
    distances = InceptionDistances(weights, len(test))
    for batch in iter_batches(test):
        distances.update(to_image_range(g(batch["input"].to(device))), to_image_range(batch["target"]))
    return {k: round(v, 5) for k, v in distances.compute().items()}


def save_grid(g, ds: PairedDataset, indices, path, device) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(comparison_grid(g, collate([ds[i] for i in indices]), device), path)


def domain_batches(ds: UnpairedDataset, which: str, size: int = 8):
    """(names, batch) over every image of one side of an unpaired dataset (eval view)."""
    count = len(ds.inputs if which == "input" else ds.targets)
    for j in range(0, count, size):
        items = [ds[i] for i in range(j, min(count, j + size))]
        names = [
            it["name"] if which == "input" else f"{ds._path(ds.targets[i]).stem}"
            for i, it in zip(range(j, j + len(items)), items, strict=True)
        ]
        yield names, torch.stack([it[which] for it in items])


def evaluate_unpaired(
    config, state, g, checkpoint, manifest, split, device
) -> tuple[dict, list[dict], UnpairedDataset]:
    """The metrics of an unpaired model on an unpaired test split (module docstring)."""
    f, _ = generator_from_state(state, "BA")
    f = in_precision(f.to(device), config.train.amp, device)
    cfg = Config.from_dict(state["config"])
    a, b = split_domains(manifest, split)
    if not a or not b:
        raise StageError(
            f"the {split} split needs images of both domains ({split}A/ and {split}B/); it has {len(a)} + {len(b)}"
        )
    test = UnpairedDataset(a, b, cfg.data, train=False)
    same = cfg.data.input_nc == cfg.data.output_nc
    means, rows = unpaired_scores(
        g, f, domain_batches(test, "input"), domain_batches(test, "target"), device, same, test.order
    )
    result = {
        "split": split, "count_A": len(a), "count_B": len(b), "checkpoint": checkpoint.name,
        "checkpoint_step": state.get("step", 0), **{k: round(v, 5) for k, v in means.items()},
    }  # fmt: skip
    weights = find_weights(config.evaluate.fid_weights)
    if weights is None:
        print(
            f"evaluate: FID/KID skipped: no Inception weights at {looked_in(config.evaluate.fid_weights)}",
            file=sys.stderr,
        )
    else:
        distances = InceptionDistances(weights, min(len(test.inputs), len(test.targets)))
        for (_, x), (_, y) in zip(domain_batches(test, "input"), domain_batches(test, "target"), strict=False):
            distances.update(to_image_range(g(x.to(device))), to_image_range(y))
        result.update({k: round(v, 5) for k, v in distances.compute().items()})
    return result, rows, test, f


def round_trip_grid(g, f, ds: UnpairedDataset, indices, path, device) -> None:
    """Rows: input (domain A), its translation, and the translation translated back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    x = torch.stack([ds[i]["input"] for i in indices]).to(device)
    with torch.no_grad():
        out = g(x).float()
        back = f(out).float()
    channels = max(x.shape[1], out.shape[1])
    rows = [to_image_range(t.expand(-1, channels, -1, -1) if t.shape[1] == 1 else t) for t in (x, out, back)]
    save_image(torch.cat(rows), path, nrow=len(indices))


def main() -> None:
    config = load_config()
    device = select_device(config.train.device)
    checkpoint = kept_checkpoint(config.evaluate.keep)
    state = load_checkpoint(checkpoint, map_location=device)
    g, cfg = generator_from_state(state)
    g = g.to(device)
    g = in_precision(g, config.train.amp, device)  # bf16 where training used it (train.amp)
    manifest = read_manifest()
    split = held_out_split(manifest)
    if is_unpaired(manifest):
        result, rows, test, f = evaluate_unpaired(config, state, g, checkpoint, manifest, split, device)
        index_of = {test._path(p).stem: i for i, p in enumerate(test.inputs)}
        a_rows = [r for r in rows if r["domain"] == test.order[0]]  # the input domain's
        write_results(
            config,
            result,
            a_rows,
            "cycle",
            index_of,
            lambda idx, path: round_trip_grid(g, f, test, idx, path, device),
            checkpoint,
        )
        return
    test_pairs = split_pairs(manifest, split)
    if not test_pairs:
        raise StageError("no test or val pairs in the manifest; set data.split.test > 0 or add a test folder")
    test = PairedDataset(test_pairs, cfg.data, train=False)
    means, rows = evaluate(g, iter_batches(test), device)
    mean = mean_target(PairedDataset(split_pairs(manifest, "train"), cfg.data, train=False))
    baseline = baseline_metrics(lambda batch: mean, test)
    input_baseline = baseline_metrics(identity, test)

    result = {
        "split": split,
        "count": len(rows),
        "checkpoint": checkpoint.name,  # evaluate.keep's choice, and the step it was written at
        "checkpoint_step": state.get("step", 0),
        **{k: round(v, 5) for k, v in means.items()},
        **{f"baseline_{k}": round(v, 5) for k, v in baseline.items()},
        "l1_reduction_vs_baseline": round(1 - means["l1"] / baseline["l1"], 4),
        **{f"input_baseline_{k}": round(v, 5) for k, v in input_baseline.items()},
    }
    result.update(inception_distances(config.evaluate.fid_weights, g, test, device))
    index_of = {p.name: i for i, p in enumerate(test.pairs)}
    write_results(
        config, result, rows, "l1", index_of, lambda idx, path: save_grid(g, test, idx, path, device), checkpoint
    )


def write_results(config, result: dict, rows: list[dict], key: str, index_of: dict, grid, checkpoint) -> None:
    """metrics/eval.json, the per-image CSV (sorted by `key`, best first), the best and worst
    grids (`grid(indices, path)`), and all of it to the shared MLflow run."""
    METRICS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(EVAL_JSON, json.dumps(result, indent=2) + "\n")
    per_image = pd.DataFrame(rows).sort_values(key).reset_index(drop=True)
    REPORTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(PER_IMAGE, per_image.to_csv(index=False))
    order = [index_of[name] for name in per_image["name"] if name in index_of]  # best first
    k = min(config.evaluate.grid_images, len(order))
    grid(order[:k], REPORTS / "best.png")
    grid(order[-k:][::-1], REPORTS / "worst.png")
    with shared_run(config) as mlflow:
        if mlflow is not None:
            try:
                mlflow.log_metrics({f"test_{k}": v for k, v in result.items() if isinstance(v, (int, float))})
                mlflow.set_tag("evaluated_checkpoint", checkpoint.name)
                for path in (EVAL_JSON, PER_IMAGE, REPORTS / "best.png", REPORTS / "worst.png"):
                    mlflow.log_artifact(str(path), "eval")
            except Exception as e:  # noqa: BLE001 - metrics are on disk either way
                warn_tracking("logging evaluation", e)
    print(f"evaluate: {json.dumps(result)}")


if __name__ == "__main__":
    run_stage(main)
