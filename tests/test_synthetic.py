import hashlib

import numpy as np
from PIL import Image

from pipeline.data.synthetic import CLASSES, facade, generate


def _digest(folder):
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.png"))
    }


def test_generation_is_deterministic_by_seed(tmp_path):
    counts = {"train": 3, "val": 1, "test": 2}
    assert generate(tmp_path / "a", counts, size=32, seed=7) == counts
    generate(tmp_path / "b", counts, size=32, seed=7)
    generate(tmp_path / "c", counts, size=32, seed=8)
    a, b, c = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert a == b
    assert set(a) == {"train/1.png", "train/2.png", "train/3.png", "val/1.png", "test/1.png", "test/2.png"}
    assert all(a[k] != c[k] for k in a)


def test_images_are_side_by_side_photo_and_label_map(tmp_path):
    generate(tmp_path, {"train": 2}, size=48, seed=0)
    img = Image.open(tmp_path / "train" / "1.png")
    assert img.size == (96, 48) and img.mode == "RGB"
    arr = np.asarray(img)
    # The label half uses only the flat class colours; the photo half is textured.
    assert {tuple(c) for c in arr[:, 48:].reshape(-1, 3)} <= set(CLASSES.values())
    assert len({tuple(c) for c in arr[:, :48].reshape(-1, 3)}) > 200


def test_splits_differ_and_photos_follow_labels():
    photo, labels = facade(1, 64)
    photo2, labels2 = facade(2, 64)
    assert labels.tobytes() != labels2.tobytes()
    # Window pixels (orange in the labels) are darker than wall pixels in the photo.
    lab, lum = np.asarray(labels), np.asarray(photo).mean(axis=2)
    window = (lab == CLASSES["window"]).all(axis=2)
    wall = (lab == CLASSES["wall_brick"]).all(axis=2) | (lab == CLASSES["wall_plaster"]).all(axis=2)
    assert window.any() and wall.any()
    assert lum[window].mean() < lum[wall].mean()
