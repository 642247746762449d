"""The trials' parameter values: every grid combination, independent random draws, or Optuna's TPE."""

from __future__ import annotations

import itertools
import math
import random
from typing import Any


def grid(parameters: dict, limit: int) -> list[dict[str, Any]]:
    """Every combination of the parameters' values, in order, at most ``limit``."""
    keys = list(parameters)
    combos = itertools.product(*(parameters[k].values for k in keys))
    return [dict(zip(keys, combo)) for combo in itertools.islice(combos, limit)]


def draw(parameters: dict, rng: random.Random) -> dict[str, Any]:
    """One independent random draw of every parameter."""
    out: dict[str, Any] = {}
    for key, spec in parameters.items():
        if spec.values is not None:
            out[key] = rng.choice(spec.values)
            continue
        low, high = spec.range
        value = math.exp(rng.uniform(math.log(low), math.log(high))) if spec.log else rng.uniform(low, high)
        out[key] = round(value) if spec.integer else float(f"{value:.4g}")
    return out


def suggest(parameters: dict, trial) -> dict[str, Any]:
    """The values an Optuna trial suggests (TPE learns from the finished trials' values)."""
    out: dict[str, Any] = {}
    for key, spec in parameters.items():
        if spec.values is not None:
            index = trial.suggest_categorical(key, list(range(len(spec.values))))
            out[key] = spec.values[index]
        elif spec.integer:
            out[key] = trial.suggest_int(key, int(spec.range[0]), int(spec.range[1]), log=spec.log)
        else:
            out[key] = float(f"{trial.suggest_float(key, spec.range[0], spec.range[1], log=spec.log):.4g}")
    return out


def distributions(parameters: dict) -> dict:
    """Optuna's distributions for the parameters (to hand it the trials of an earlier session)."""
    import optuna

    out: dict[str, Any] = {}
    for key, spec in parameters.items():
        if spec.values is not None:
            out[key] = optuna.distributions.CategoricalDistribution(list(range(len(spec.values))))
        elif spec.integer:
            out[key] = optuna.distributions.IntDistribution(int(spec.range[0]), int(spec.range[1]), log=spec.log)
        else:
            out[key] = optuna.distributions.FloatDistribution(spec.range[0], spec.range[1], log=spec.log)
    return out


def optuna_params(parameters: dict, values: dict[str, Any]) -> dict[str, Any]:
    """A trial's values as Optuna records them (categorical ones by index)."""
    return {k: parameters[k].values.index(v) if parameters[k].values is not None else v for k, v in values.items()}
