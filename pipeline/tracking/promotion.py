"""Champion/challenger gate: `champion` moves only to a version that is measurably better.

Both versions are loaded from the registry as the pyfunc users will serve, and scored on the
same frozen test split (the manifest's test pairs, at their own size). The challenger is
promoted only when it beats the champion on `promotion.metric` by at least
`promotion.min_improvement`; with no champion yet it is promoted. The decision and its reason
are written as tags on the challenger version, whatever the outcome. Nothing here is ever
called for a failed pipeline run, and an evaluation failure rejects the challenger.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pix2pix.config import build_section, check_choices, option
from pix2pix.errors import first_line
from pix2pix.images import open_halves
from pix2pix.metrics import HIGHER_IS_BETTER, METRIC_NAMES, per_image_metrics

from ..data.manifest import held_out_split, split_pairs
from ..paths import RAW
from .registry import CHALLENGER, CHAMPION, set_alias


@dataclass
class PromotionConfig:
    """params.yaml's `promotion` section: the gate reads it, no stage does (pipeline/config.py)."""

    metric: str = option("l1", "l1 (lower is better), psnr or ssim (higher is better)", METRIC_NAMES)
    min_improvement: float = option(0.002, "how much better the challenger must be to become champion")

    def validate(self) -> PromotionConfig:
        check_choices(self, "promotion")
        return self


def gate_settings(section: dict) -> PromotionConfig:
    """params.yaml's `promotion` section, read strictly (unknown keys and bad values: one line)."""
    return build_section(PromotionConfig, section, "promotion").validate()


@dataclass
class Decision:
    promoted: bool
    reason: str
    model: str
    challenger: str
    champion_before: str | None
    metric: str
    scores: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def frozen_test_pairs(manifest, direction: str, root: Path = RAW) -> list[tuple[Image.Image, Image.Image]]:
    """(input, target) images of the frozen test split (val when there is no test split),
    read from the raw files the manifest names (`root` is the project's data/raw)."""
    halves = [open_halves(p) for p in split_pairs(manifest, held_out_split(manifest), root)]
    return halves if direction == "AtoB" else [(b, a) for a, b in halves]


def score_model(mlflow, model_uri: str, pairs: list[tuple[Image.Image, Image.Image]], metric: str) -> float:
    """Mean metric of a registered pyfunc on the given (input, target) images."""
    model = mlflow.pyfunc.load_model(model_uri)
    values = []
    for src, dst in pairs:
        target = np.asarray(dst.convert("RGB"))
        out = np.asarray(model.predict(np.asarray(src.convert("RGB"))[None])[0])
        if out.shape[-1] == 1:
            target = np.asarray(dst.convert("L"))[..., None]
        to_t = lambda a: torch.tensor(a).permute(2, 0, 1)[None].float() / 255  # noqa: E731
        values.append(float(per_image_metrics(to_t(out), to_t(target))[metric][0]))
    if not values:
        raise ValueError(
            "no test pairs to score on (an unpaired test split has none: compare the versions' test_cycle_* and "
            "FID tags and move @champion by hand, or train on a paired set with data.pairs_apart)"
        )
    return float(np.mean(values))


def _tag(client, name: str, version: str, decision: Decision) -> None:
    tags = {"promotion_decision": "promoted" if decision.promoted else "rejected", "promotion_reason": decision.reason}
    tags.update({f"promotion_{k}": f"{v:.6g}" for k, v in decision.scores.items()})
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def promote(
    mlflow,
    name: str,
    challenger: str,
    pairs: list[tuple[Image.Image, Image.Image]],
    metric: str = "l1",
    min_improvement: float = 0.0,
) -> Decision:
    """Run the gate for `challenger` (a version of `name`) and move aliases accordingly."""
    from mlflow.exceptions import MlflowException

    if metric not in HIGHER_IS_BETTER:
        raise ValueError(f"promotion.metric must be one of {', '.join(HIGHER_IS_BETTER)}, got {metric!r}")
    client = mlflow.MlflowClient()
    try:
        champion = str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        champion = None
    decision = Decision(False, "", name, str(challenger), champion, metric)

    if champion is None or champion == str(challenger):
        decision.promoted = True
        decision.reason = (
            "no champion yet: the first version becomes champion"
            if champion is None
            else "already champion (first version)"
        )
    else:
        try:
            decision.scores["challenger"] = score_model(mlflow, f"models:/{name}/{challenger}", pairs, metric)
        except Exception as e:  # noqa: BLE001 - a challenger that cannot be evaluated is never promoted
            decision.reason = f"challenger evaluation failed: {first_line(e)}"
        else:
            decision.scores["champion"] = score_model(mlflow, f"models:/{name}/{champion}", pairs, metric)
            better = decision.scores["challenger"] - decision.scores["champion"]
            if not HIGHER_IS_BETTER[metric]:
                better = -better
            decision.scores["improvement"] = better
            shown = (
                f"{metric} {decision.scores['challenger']:.5g} vs champion v{champion} "
                f"{decision.scores['champion']:.5g}"
            )
            if better > 0 and better >= min_improvement:
                decision.promoted = True
                decision.reason = f"better by {better:.5g} (>= {min_improvement}): {shown}"
            else:
                decision.reason = f"not better by at least {min_improvement}: {shown}"
    if decision.promoted:
        set_alias(client, name, CHAMPION, str(challenger))
    set_alias(client, name, CHALLENGER, str(challenger))
    _tag(client, name, str(challenger), decision)
    return decision
