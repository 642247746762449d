"""Early stopping on a held-out metric, and the best weights kept (Prechelt 1998, "Early stopping — but when?").

Every ``training.eval_every`` steps the run scores its held-out set; ``BestWeights.observe`` compares
the chosen metric with the best so far (by at least ``min_delta``, in the metric's direction), keeps the
trainable weights of a new best in ``run_dir/best/``, and asks the loop to stop after ``patience``
evaluations without one. At the end the best weights become the run's output and the last ones are
saved beside it (``runner`` / ``run.finish.keep_best``). ``best/best.json`` holds the counter, so a
resumed run goes on counting where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


class EarlyStopMetricMissing(KeyError):
    def __str__(self) -> str:  # KeyError would print its message in quotes
        return str(self.args[0]) if self.args else ""


def direction(metric: str, mode: str) -> str:
    """ "min" or "max": ``mode`` unless it is auto, then from the metric's name (losses, perplexity … fall)."""
    if mode != "auto":
        return mode
    from ..eval.report import lower_is_better

    return "min" if lower_is_better(metric) else "max"


class BestWeights:
    """The best held-out score so far, its step, and the trainable weights at that step (on disk)."""

    def __init__(self, settings, folder: Path, *, main: bool = True):
        self.metric = settings.metric
        self.mode = direction(settings.metric, settings.mode)
        self.patience, self.min_delta = settings.patience, settings.min_delta
        self.folder, self.main = Path(folder), main
        saved = json.loads((self.folder / "best.json").read_text()) if (self.folder / "best.json").exists() else {}
        self.best_step: int | None = saved.get("best_step")
        self.best_value: float | None = saved.get("best_value")
        self.evals_without_gain: int = saved.get("evals_without_gain", 0)
        self.last_step: int = saved.get("last_step", 0)
        self.history: list[list[float]] = saved.get("history", [])  # [step, value] of every evaluation
        self.stopped_at: int | None = None

    def check_metric(self, available) -> None:
        """Refuse, before training, a metric the method's evaluation does not report."""
        if self.metric not in available:
            raise EarlyStopMetricMissing(
                f"training.early_stopping.metric '{self.metric}': the held-out evaluation reports "
                f"{', '.join(sorted(available)) or 'nothing'}; pick one of those"
            )

    def improves(self, value: float) -> bool:
        if self.best_value is None:
            return True
        if self.mode == "min":
            return value < self.best_value - self.min_delta
        return value > self.best_value + self.min_delta

    def observe(self, step: int, metrics: dict, trainable_state) -> bool:
        """Record one evaluation; True when the loop should stop. ``trainable_state()`` → the weights to keep."""
        if step <= self.last_step:  # a resumed run repeating an evaluation it already counted
            return self.evals_without_gain >= self.patience
        self.check_metric(metrics)
        value = float(metrics[self.metric])
        self.history.append([step, value])
        state = trainable_state()  # collective under FSDP / DeepSpeed: every process calls it
        if self.improves(value):
            self.best_step, self.best_value, self.evals_without_gain = step, value, 0
            if self.main:
                from safetensors.torch import save_file

                self.folder.mkdir(parents=True, exist_ok=True)
                tmp = self.folder / "trainable.safetensors.tmp"
                save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
                tmp.replace(self.folder / "trainable.safetensors")
        else:
            self.evals_without_gain += 1
        self.last_step = step
        self._save()
        stop = self.evals_without_gain >= self.patience
        if stop:
            self.stopped_at = step
        return stop

    def restore(self, model: torch.nn.Module) -> None:
        """Load the best trainable weights into ``model`` (the unwrapped loss module)."""
        from safetensors.torch import load_file

        state = load_file(str(self.folder / "trainable.safetensors"))
        missing = set(state) - {name for name, _ in model.named_parameters()}
        if missing:
            raise RuntimeError(f"{self.folder}: best weights do not fit the model ({sorted(missing)[:3]})")
        model.load_state_dict(state, strict=False)

    def summary(self) -> dict:
        return {
            "metric": self.metric,
            "mode": self.mode,
            "patience": self.patience,
            "min_delta": self.min_delta,
            "best_step": self.best_step,
            "best_value": self.best_value,
            "stopped_at_step": self.stopped_at,
            "evaluations": self.history,
        }

    def _save(self) -> None:
        if not self.main:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        data = {
            "metric": self.metric,
            "best_step": self.best_step,
            "best_value": self.best_value,
            "evals_without_gain": self.evals_without_gain,
            "last_step": self.last_step,
            "history": self.history,
        }
        tmp = self.folder / "best.json.tmp"
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.folder / "best.json")
