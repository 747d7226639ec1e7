"""The presets command: what each preset trains, how long it takes, and writing one into
params.yaml (the values themselves are pipeline/presets.py, the stages' code).

    python -m pipeline.ops.presets list            # what there is
    python -m pipeline.ops.presets show facades    # the keys it sets
    python -m pipeline.ops.presets apply facades   # write them into params.yaml (comments kept)
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from pix2pix.files import atomic_write_text

from ..presets import PRESETS, PresetError, apply, get

# Measured throughput of our trainer at 256x256 (benchmarks/README.md), for the time estimates.
CPU_IMAGES_PER_S = 1.1  # the project's 2-core reference CPU, batch 1
# An unpaired (CycleGAN) step runs four ResNet-9 / PatchGAN networks, six generator passes: at
# 256x256 on the same CPU 21.6 s against pix2pix's 0.9 s (benchmarks/unpaired_speed.py).
UNPAIRED_STEP_COST = 24.0

# name: (task, pairs in the training split; None = your photos)
ABOUT: dict[str, tuple[str, int | None]] = {
    "facades": ("labels -> facade photo (CMP Facades)", 400),
    "maps_aerial2map": ("aerial photo -> map (Google Maps)", 1096),
    "maps_map2aerial": ("map -> aerial photo (Google Maps)", 1096),
    "cityscapes": ("semantic labels -> street photo (Cityscapes)", 2975),
    "edges2shoes": ("edges -> shoe photo (UT Zappos50K)", 49825),
    "edges2handbags": ("edges -> handbag photo (Amazon handbags)", 138567),
    "night2day": ("night -> day (webcam time-lapses)", 17823),
    "horse2zebra": ("horse photo -> zebra photo, unpaired (CycleGAN)", 1334),
    "monet2photo": ("Monet painting -> photo, unpaired (CycleGAN)", 6287),
    "facades_unpaired": ("labels -> facade photo, unpaired: pairs split apart", 200),
    "colorization": ("grayscale -> colour photo", None),
    "sketch2photo": ("Canny edge sketch -> photo", None),
    "superres": ("4x downscaled -> full-resolution photo", None),
    "denoise": ("noisy, JPEG-damaged -> clean photo", None),
}


def epochs(name: str) -> int:
    values = get(name)
    return values["train.epochs"] + values["train.epochs_decay"]


def hours(name: str, images_per_s: float = CPU_IMAGES_PER_S) -> float:
    """Training time; for builder presets, per 1,000 photos."""
    cost = UNPAIRED_STEP_COST if get(name).get("model.kind") == "unpaired" else 1.0
    return (ABOUT[name][1] or 1000) * epochs(name) * cost / images_per_s / 3600


def duration(name: str, images_per_s: float) -> str:
    h = hours(name, images_per_s)
    text = f"~{h * 60:.0f} min" if h < 1 else f"~{h:.0f} h" if h < 48 else f"~{h / 24:.0f} days"
    return text + (" per 1,000 photos" if ABOUT[name][1] is None else "")


def write_into_params(path: Path, name: str) -> None:
    """Write the preset's values into a params file, keeping its comments and order."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    doc = yaml.load(path.read_text())
    apply(doc, name)
    doc["preset"] = "none"  # the values are now in the file itself
    out = io.StringIO()
    yaml.dump(doc, out)
    atomic_write_text(path, out.getvalue())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.ops.presets", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    listing = sub.add_parser("list", help="the presets, what they train and how long it takes")
    listing.add_argument(
        "--images-per-s",
        type=float,
        default=CPU_IMAGES_PER_S,
        help="your machine's 256x256 training rate (benchmarks/train_speed.py); default: the reference 2-core CPU",
    )
    show = sub.add_parser("show", help="the keys a preset sets")
    show.add_argument("name")
    use = sub.add_parser("apply", help="write a preset's values into params.yaml")
    use.add_argument("name")
    use.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = ap.parse_args(argv)
    try:
        if args.cmd == "list":
            for name in PRESETS:
                batch = get(name)["train.batch_size"]
                print(
                    f"{name:16s} {ABOUT[name][0]:45s} {epochs(name):3d} epochs, batch {batch}, "
                    f"{duration(name, args.images_per_s)}"
                )
        elif args.cmd == "show":
            for key, value in get(args.name).items():
                print(f"{key}: {value}")
        else:
            get(args.name)
            if not args.params.is_file():
                raise PresetError(f"{args.params}: not found; run from the project root or pass --params")
            write_into_params(args.params, args.name)
            print(f"{args.params}: preset {args.name} written ({len(get(args.name))} keys); run: dvc repro")
    except PresetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
