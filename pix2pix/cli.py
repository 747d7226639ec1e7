"""`pix2pix train | predict | translate | drift | export | evaluate`.

Heavy modules (torch, torchvision) are imported inside each command so `--help` is instant.
Every config field is also a flag with its help text and choices (`--epochs 5`,
`--crop-size 128`, `--direction BtoA`, `--flip/--no-flip`); `--config FILE` reads a YAML or
JSON file with `data`, `model` and `train` sections first, strictly: an unknown key is an error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import recipes
from .cli_config import add_config_flags, config_from_args
from .config import SWITCH, Config
from .errors import Pix2PixError

AMP_HELP = (
    "bf16 autocast for checkpoint and TorchScript models: auto = on CUDA and CPUs with native bf16 (ONNX stays float32)"
)


def _split_dirs(root: Path, val: Path | None) -> tuple[Path, Path | None]:
    """`root/train` (+ `root/val`) when present, else `root` itself."""
    if (root / "train").is_dir():
        val = val or next((root / s for s in ("val", "test") if (root / s).is_dir()), None)
        return root / "train", val
    return root, val


def _training_data(args: argparse.Namespace, cfg: Config):
    """(train, val, where): the datasets `--data` holds for `model.kind`."""
    from .data import PairedDataset, discover_pairs
    from .unpaired_data import UnpairedDataset

    if cfg.model.kind == "paired":
        train_dir, val_dir = _split_dirs(args.data, args.val)
        train = PairedDataset(train_dir, cfg.data, train=True)
        return train, PairedDataset(val_dir, cfg.data, train=False) if val_dir else None, train_dir
    if cfg.data.pairs_apart:  # a paired set trained unpaired on purpose; validated on its real pairs
        train_dir, val_dir = _split_dirs(args.data, args.val)
        train = UnpairedDataset.from_pairs(discover_pairs(train_dir), cfg.data, seed=cfg.train.seed)
        return train, PairedDataset(val_dir, cfg.data, train=False) if val_dir else None, train_dir
    train = UnpairedDataset.from_folder(args.data, cfg.data, "train")
    if args.val:
        val = UnpairedDataset.from_folder(args.val, cfg.data, "test", train=False)
    else:
        split = next((s for s in ("val", "test") if (args.data / f"{s}A").is_dir()), None)
        val = UnpairedDataset.from_folder(args.data, cfg.data, split, train=False) if split else None
    return train, val, args.data


def cmd_train(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    from . import drift
    from .callbacks import SampleSaver
    from .train import Status, Trainer

    train, val, where = _training_data(args, cfg)
    reference = args.out / drift.REFERENCE_NAME  # what `translate` compares incoming images with
    if not reference.is_file():
        drift.write_reference(drift.reference_of(train, cfg.data), reference)
    trainer = Trainer(
        cfg, train, args.out, val_data=val, callbacks=[SampleSaver(args.out / "samples")], resume=not args.no_resume
    )
    what = f"{len(train)} pairs" if train.paired else f"{len(train.inputs)} + {len(train.targets)} unpaired images"
    print(
        f"training {cfg.model.kind} on {what} from {where} ({trainer.device}), checkpoints in {args.out}; "
        f"{cfg.model.netG} generator, discriminator receptive field(s) {trainer.receptive_fields_D} px",
        file=sys.stderr,
    )
    summary = trainer.fit(max_steps=args.max_steps)
    print(json.dumps(summary))
    return 130 if summary["status"] is Status.INTERRUPTED else 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .loading import load_runner
    from .predict import predict_paths

    runner = load_runner(args.model, device=args.device, keep_dropout=args.keep_dropout, amp=args.amp)
    written = predict_paths(runner, args.input, args.output, args.tile_megapixels, args.overlap)
    print(f"wrote {len(written)} image(s) to {args.output}", file=sys.stderr)
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    from .translate import TranslateJob, translate_folder

    job = TranslateJob(
        model=str(args.model),
        input=str(args.input),
        output=str(args.output),
        model_id=args.model_id or "",
        workers=args.workers,
        threads=args.threads,
        tile_megapixels=args.tile_megapixels,
        overlap=args.overlap,
        max_megapixels=args.max_megapixels,
        device=args.device,
        amp=args.amp,
        reference=str(args.reference or ""),
    )
    summary = translate_folder(job)
    print(json.dumps(summary, indent=2))
    if summary["drift"]:
        where = args.output / "drift.json"
        print(
            f"pix2pix translate: warning: the inputs have drifted from the training inputs; see {where}",
            file=sys.stderr,
        )
    return 1 if summary["failed"] or summary["missing"] else 0


def cmd_drift(args: argparse.Namespace) -> int:
    from . import drift, monitor
    from .errors import ImageError
    from .files import atomic_write_text
    from .translate_records import plot_distributions

    ref = args.reference
    if ref.is_dir():  # an export folder
        ref = ref / drift.REFERENCE_NAME
    elif ref.suffix != ".json":  # a model file: its reference beside it
        ref = ref.parent / drift.REFERENCE_NAME
    reference = drift.load_reference(ref)
    key = monitor.reference_key(reference)
    if not args.log.is_file():
        raise ImageError(f"{args.log}: no input log here; serve the model with {monitor.LOG_ENV}={args.log}")
    rows = list(monitor.read_log(args.log, key))
    rows = rows[-args.window :] if args.window else rows
    report = {**drift.drift_report(reference, rows), "reference": str(ref), "log": str(args.log)}
    if args.output:
        atomic_write_text(args.output, json.dumps(report, indent=2) + "\n")
    if args.plot and rows:
        plot_distributions(reference, rows, args.plot)
    print(json.dumps(report, indent=2))
    if report["drift"]:
        print(f"pix2pix drift: warning: drift in {', '.join(report['drifted'])}", file=sys.stderr)
    return 0


def _add_tiling_flags(p: argparse.ArgumentParser) -> None:
    from .config import TILE_MEGAPIXELS, TILE_OVERLAP

    p.add_argument(
        "--tile-megapixels",
        type=float,
        default=TILE_MEGAPIXELS,
        help="pixels one network pass may see (the memory budget); larger images are translated in overlapping, "
        f"blended tiles (default: {TILE_MEGAPIXELS:g})",
    )
    p.add_argument(
        "--overlap",
        type=int,
        default=TILE_OVERLAP,
        help=f"pixels neighbouring tiles share (default: {TILE_OVERLAP})",
    )


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_generator

    report = export_generator(args.checkpoint, args.out, formats=tuple(args.formats.split(",")), which=args.generator)
    print(json.dumps(report, indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import csv

    from .data import PairedDataset, iter_batches
    from .loading import load_runner
    from .metrics import evaluate

    split = next((s for s in ("test", "val", "train") if (args.data / f"{s}A").is_dir()), None)
    if split is not None:  # two unpaired domains: no targets to compare with
        return _evaluate_unpaired(args, split)
    runner = load_runner(args.model, device=args.device, amp=args.amp)
    cfg = Config.from_dict(runner.config)
    data = PairedDataset(args.data, cfg.data, train=False)
    means, rows = evaluate(runner, iter_batches(data))
    means["count"] = len(rows)
    text = json.dumps(means, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    if args.per_image:
        args.per_image.parent.mkdir(parents=True, exist_ok=True)
        with open(args.per_image, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    if args.grid:  # the first N pairs: inputs, outputs and targets in three rows
        from torchvision.utils import save_image

        from .data import collate
        from .grid import comparison_grid

        args.grid.parent.mkdir(parents=True, exist_ok=True)
        count = min(args.grid_images, len(data))
        save_image(comparison_grid(runner, collate([data[i] for i in range(count)])), args.grid)
    print(text)
    return 0


def _evaluate_unpaired(args: argparse.Namespace, split: str) -> int:
    """Cycle and identity errors of an unpaired checkpoint (both generators) on {split}A/ + {split}B/."""
    import torch

    from .checkpoint import load_checkpoint
    from .errors import CheckpointError
    from .loading import generator_from_state
    from .metrics import unpaired_scores
    from .unpaired_data import UnpairedDataset

    state = load_checkpoint(args.model, map_location=args.device)
    if "generator_BA" not in state:
        raise CheckpointError(
            f"{args.model}: {args.data} holds two unpaired domains ({split}A/, {split}B/), which only an unpaired "
            "training checkpoint (both generators) can be scored on"
        )
    (g, cfg), (f, _) = generator_from_state(state), generator_from_state(state, "BA")
    g, f = g.to(args.device), f.to(args.device)
    data = UnpairedDataset.from_folder(args.data, cfg.data, split, train=False)

    def side(which: str, items: list):
        for i in range(len(items)):
            item = data[i]
            name = item["name"] if which == "input" else data._path(items[i]).stem
            yield [name], item[which][None]

    with torch.no_grad():
        means, _ = unpaired_scores(
            g, f, side("input", data.inputs), side("target", data.targets), args.device,
            cfg.data.input_nc == cfg.data.output_nc, data.order,
        )  # fmt: skip
    means.update({"split": split, **{f"count_{d}": len(data.domains[d]) for d in "AB"}})
    text = json.dumps(means, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pix2pix", description="pix2pix image-to-image translation (Isola et al. 2017)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a generator/discriminator pair on paired images")
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        help="folder of A|B images or with A/ B/ subfolders; or with train/ (and val/) inside; unpaired: with "
        "trainA/ trainB/ (and testA/ testB/) or A/ B/ folders",
    )
    p.add_argument("--val", type=Path, help="validation folder (default: DATA/val or DATA/test when DATA/train exists)")
    p.add_argument("--out", type=Path, required=True, help="folder for checkpoints (last.pt) and sample grids")
    p.add_argument("--max-steps", type=int, help="stop (with a checkpoint) after this many steps in total")
    p.add_argument("--no-resume", action="store_true", help="start over even if OUT/last.pt exists")
    p.add_argument(
        "--recipe",
        choices=list(recipes.RECIPES),
        help=f"a named way to train, on every model/train key left at its default: {recipes.help_text()} "
        "(default: the config file's recipe:, else paper; cyclegan with --kind unpaired)",
    )
    add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="translate an image or a folder of images of any size")
    p.add_argument("--model", type=Path, required=True, help="checkpoint (.pt), TorchScript (.ts) or ONNX (.onnx) file")
    p.add_argument("--input", type=Path, required=True, help="image file or folder")
    p.add_argument("--output", type=Path, required=True, help="output folder (or file, for a single image)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (checkpoint and TorchScript models)")
    p.add_argument("--amp", default="auto", choices=SWITCH, help=AMP_HELP)
    p.add_argument("--keep-dropout", action="store_true", help="keep dropout active, as in the paper's test-time noise")
    _add_tiling_flags(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "translate",
        help="batch-translate a folder (sub-folders too): parallel shards, resumable, a results manifest and a "
        "drift report",
    )
    p.add_argument("--model", type=Path, required=True, help="checkpoint (.pt), TorchScript (.ts) or ONNX (.onnx) file")
    p.add_argument("--input", type=Path, required=True, help="folder of images (or one image)")
    p.add_argument(
        "--output", type=Path, required=True, help="output folder: PNGs, results.csv, drift.json (re-run to resume)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="processes, one shard each (default 0: one per core, at most 4; each holds the model and a tile)",
    )
    p.add_argument("--threads", type=int, default=0, help="threads per worker (default: the cores shared out)")
    p.add_argument(
        "--max-megapixels",
        type=float,
        default=150.0,
        help="images larger than this are listed as failed, not read (default: 150)",
    )
    p.add_argument("--model-id", help="what results.csv records as the model (default: file name and sha256)")
    p.add_argument("--reference", type=Path, help="drift reference (default: input_reference.json beside --model)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (checkpoint and TorchScript models)")
    p.add_argument("--amp", default="auto", choices=SWITCH, help=AMP_HELP)
    _add_tiling_flags(p)
    p.set_defaults(func=cmd_translate)

    p = sub.add_parser(
        "drift", help="drift report of what a served model received (its P2P_INPUT_LOG) against its training inputs"
    )
    p.add_argument("--log", type=Path, required=True, help="input log a served model or the page appended to")
    p.add_argument(
        "--reference", type=Path, required=True, help="input_reference.json, or a model file with one beside it"
    )
    p.add_argument("--window", type=int, default=500, help="report the last this many inputs (0: all; default 500)")
    p.add_argument("--output", type=Path, help="write the report as JSON here too")
    p.add_argument("--plot", type=Path, help="write a PNG of the distributions here (needs matplotlib)")
    p.set_defaults(func=cmd_drift)

    p = sub.add_parser("export", help="export the generator to TorchScript and ONNX with a parity check")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--formats", default="torchscript,onnx", help="comma-separated: torchscript, onnx")
    p.add_argument(
        "--generator",
        choices=("AB", "BA"),
        default="AB",
        help="unpaired models: AB (the trained direction) or BA (the reverse generator) (default: AB)",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "evaluate",
        help="L1 / PSNR / SSIM of a model on a folder of pairs; cycle and identity errors of an unpaired "
        "checkpoint on testA/ + testB/",
    )
    p.add_argument("--model", type=Path, required=True, help="checkpoint, TorchScript or ONNX file")
    p.add_argument(
        "--data", type=Path, required=True, help="folder of A|B images or with A/ B/ subfolders; or testA/ testB/"
    )
    p.add_argument("--out", type=Path, help="write the mean metrics as JSON here")
    p.add_argument("--per-image", type=Path, help="write one CSV row per image here")
    p.add_argument(
        "--grid", type=Path, help="write a PNG of the first pairs: inputs, outputs and targets in three rows"
    )
    p.add_argument("--grid-images", type=int, default=6, help="pairs in --grid (default: 6)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default="auto", choices=SWITCH, help=AMP_HELP)
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # `pix2pix evaluate ... | head`: the reader left early, which is no error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail again
        return 141  # what a shell reports for a writer stopped by SIGPIPE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Pix2PixError as e:  # one line that names the file or key and the fix
        print(f"pix2pix {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
