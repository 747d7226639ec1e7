"""Which checkpoint to keep: `best.pt` is where the mean of the last `best_window` validations of
`best_metric` was best. One validation of a few dozen images is a noisy sample (facades' SSIM
moved 0.19-0.24 between consecutive checks), so a single lucky check never decides alone."""

from __future__ import annotations

from typing import Any

from .config import HIGHER_IS_BETTER


class BestSelector:
    def __init__(self, metric: str = "l1", window: int = 3):
        self.metric, self.window = metric, window
        self.history: list[dict[str, Any]] = []  # every validation: step, epoch and val_* metrics
        self.best: dict[str, Any] | None = None  # the kept one: step, epoch, score and the window's means

    def offer(self, step: int, epoch: int, metrics: dict[str, float]) -> bool:
        """Record a validation; True when its window's mean is the best so far (keep this state)."""
        key = f"val_{self.metric}"
        if key not in metrics:
            return False
        self.history.append({"step": step, "epoch": epoch, **metrics})
        recent = self.history[-self.window :]
        means = {k: sum(h[k] for h in recent) / len(recent) for k in metrics}
        score = means[key]
        better = self.best is None or (
            score > self.best["score"] if HIGHER_IS_BETTER[self.metric] else score < self.best["score"]
        )
        if better:
            self.best = {
                "step": step,
                "epoch": epoch,
                "metric": self.metric,
                "score": score,
                "window": len(recent),
                "means": means,
                "validation": dict(metrics),
            }
        return better

    def state_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "window": self.window, "history": self.history, "best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("metric") == self.metric and state.get("window") == self.window:
            self.history, self.best = list(state["history"]), state["best"]
        else:  # chosen on another rule: judge the recorded validations again by this one
            self.history, self.best = [], None
            for h in state.get("history", []):
                self.offer(h["step"], h["epoch"], {k: v for k, v in h.items() if k.startswith("val_")})
