#!/usr/bin/env bash
# Makes the README's pictures from real training runs: each in a fresh clone of this repo,
# with the README's own commands, on the real facades beside the repo (../shared/datasets).
# Usage: bash docs/pictures.sh [facades|edges|unpaired|all]   (prints each run's wall time and metrics)
# P2P_RECIPE=paper (default best) trains the paired runs with the paper's settings instead, for the
# README's comparison: its pictures go to the work folder, not docs/images.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
facades="$(cd "$here/../shared/datasets/facades" && pwd)"
work="${P2P_PICTURES_WORK:-/tmp/p2p-pictures}"
mkdir -p "$work"
export PATH="$here/.venv/bin:$PATH" DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true
what="${1:-all}"
recipe="${P2P_RECIPE:-best}"
pictures="$here/docs/images"
[[ "$recipe" == best ]] || pictures="$work/images-$recipe" && mkdir -p "$pictures"

fresh_clone() {
  rm -rf "$work/$1" && git clone -q "$here" "$work/$1" && cd "$work/$1"
}

grid() {  # the first test pairs: inputs, outputs, targets in three rows
  pix2pix evaluate --model models/export/generator.onnx --data "$1" --grid "$pictures/$2" --grid-images 3 \
    --out "$work/$recipe-$2.json" > /dev/null
  echo "$recipe $2: $(tr -d '\n ' < "$work/$recipe-$2.json")"
}

if [[ "$what" == facades || "$what" == all ]]; then
  # (a) labels -> photo on the real CMP facades, 128x128, 30 epochs.
  fresh_clone "facades-$recipe"
  start=$(date +%s)
  dvc exp run -n facades128 -S recipe="$recipe" -S data.source="$facades" -S data.crop_size=128 -S data.load_size=143 \
    -S train.epochs=15 -S train.epochs_decay=15 > "$work/facades-$recipe.log" 2>&1
  echo "facades ($recipe): dvc exp run took $(( $(date +%s) - start )) s; test metrics: $(tr -d '\n ' < metrics/eval.json)"
  grid data/raw/test facades_labels2photo.png
fi

if [[ "$what" == edges || "$what" == all ]]; then
  # (b) a pair builder on real photos: Canny edges -> photo, from the facade photos alone.
  fresh_clone "edges-$recipe"
  python - "$facades" "$work/facade-photos" <<'PY'
import sys
from pathlib import Path
from PIL import Image
src, out = Path(sys.argv[1]), Path(sys.argv[2])
for split in ("train", "val", "test"):
    (out / split).mkdir(parents=True, exist_ok=True)
    for f in sorted((src / split).glob("*.jpg")):
        img = Image.open(f)
        img.crop((0, 0, img.width // 2, img.height)).save(out / split / f.name, quality=95)  # the photo half
PY
  start=$(date +%s)
  dvc exp run -n edges128 -S recipe="$recipe" -S data.pairs.builder=edges -S data.direction=AtoB -S data.source="$work/facade-photos" -S data.pairs.size=128 \
    -S data.crop_size=128 -S data.load_size=143 -S train.epochs=6 -S train.epochs_decay=6 > "$work/edges-$recipe.log" 2>&1
  echo "edges ($recipe): dvc exp run took $(( $(date +%s) - start )) s; test metrics: $(tr -d '\n ' < metrics/eval.json)"
  grid data/raw/test edges2photo.png
fi

if [[ "$what" == unpaired || "$what" == all ]]; then
  # (c) unpaired: the facades' pairs split apart, 128x128, a CPU budget (the README's commands);
  # both directions of the one run: G (labels -> photo) and its reverse generator F (photo -> labels).
  run="$work/unpaired"
  rm -rf "$run"
  start=$(date +%s)
  pix2pix train --kind unpaired --pairs-apart --data "$facades" --out "$run" --direction BtoA --load-size 143 \
    --crop-size 128 --netG resnet_6blocks --ngf 32 --budget-minutes "${P2P_UNPAIRED_MINUTES:-15}" --epochs 1 \
    --epochs-decay 1 > "$work/unpaired.log" 2>&1
  echo "unpaired: training took $(( $(date +%s) - start )) s"
  unpaired_grid() {  # MODEL PICTURE: inputs, outputs, targets of the first four test pairs
    pix2pix evaluate --model "$1" --data "$facades/test" --grid "$here/docs/images/$2" --grid-images 4 \
      --out "$work/$2.json" > /dev/null
    echo "$2: $(tr -d '\n ' < "$work/$2.json")"
  }
  unpaired_grid "$run/best.pt" facades_unpaired_labels2photo.png
  pix2pix export --checkpoint "$run/best.pt" --out "$run/export-BA" --generator BA > /dev/null
  unpaired_grid "$run/export-BA/generator.pt" facades_unpaired_photo2labels.png
fi
