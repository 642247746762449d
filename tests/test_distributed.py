"""Data-parallel training on CPU (gloo): 2 processes match 1 process on the same global batch.

Launched the way a user would: `tuneforge train CONFIG --num-processes 2`, which
re-executes itself under torchrun.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import chat_rows, write_jsonl
from safetensors.torch import load_file


def write_config(tmp_path, model_dir, name, *, batch_size, max_steps=4, save_every=None):
    import yaml

    train = write_jsonl(tmp_path / "data" / "train.jsonl", chat_rows(32, seed=1))
    evals = write_jsonl(tmp_path / "data" / "eval.jsonl", chat_rows(4, seed=2))
    raw = {
        "method": "sft",
        "name": name,
        "output_dir": str(tmp_path / "runs"),
        "model": {"name": str(model_dir)},
        "adapter": {"type": "lora", "r": 4, "alpha": 8},
        "data": {"format": "chat", "train": str(train), "eval": str(evals), "max_length": 128},
        "training": {
            "max_steps": max_steps,
            "batch_size": batch_size,
            "learning_rate": 5e-3,
            "seed": 3,
            "save_every": save_every,
            "keep_checkpoints": 10,
        },
        "eval": {"scorers": ["exact_match"], "max_new_tokens": 4, "batch_size": 4, "num_samples": 2},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def train(config_path, *extra, processes=1, env_extra=None):
    env = {
        **os.environ,
        "TUNEFORGE_NO_PROGRESS": "1",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        **(env_extra or {}),
    }
    cmd = [sys.executable, "-m", "tuneforge", "train", str(config_path), *extra]
    if processes > 1:
        cmd += ["--num-processes", str(processes)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


def losses(run_dir):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def adapter_weights(run_dir):
    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path, tiny_model_dir, isolated_cache):
    one = write_config(tmp_path, tiny_model_dir, "one", batch_size=4)
    two = write_config(tmp_path, tiny_model_dir, "two", batch_size=2)  # 2 processes × 2 rows = 4 rows per step
    train(one)
    done = train(two, processes=2)
    runs = tmp_path / "runs"
    summary = json.loads((runs / "two" / "summary.json").read_text())
    assert summary["train"]["processes"] == 2, done.stderr[-2000:]
    # Tolerance: float32 sums in another order (gloo all-reduce vs one process). The loss agrees to
    # 1e-5; weights to 5e-5, since AdamW divides each gradient by its running RMS and so turns
    # rounding noise in near-zero gradient entries into updates of up to ~lr·1e-3 (seen: 1.4e-5).
    assert losses(runs / "one") == pytest.approx(losses(runs / "two"), abs=1e-5)
    a, b = adapter_weights(runs / "one"), adapter_weights(runs / "two")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=5e-5), key
    # Only rank 0 wrote the run folder: one metrics line per step, one report.
    assert len(losses(runs / "two")) == 4


@pytest.mark.slow
def test_checkpoint_from_two_processes_resumes_with_one(tmp_path, tiny_model_dir, isolated_cache):
    ref = write_config(tmp_path, tiny_model_dir, "ref", batch_size=4, max_steps=4)
    cut = write_config(tmp_path, tiny_model_dir, "cut", batch_size=2, max_steps=4, save_every=2)
    train(ref)
    # 2 processes stop after step 2 (a shorter max_steps keeps the schedule? no: schedule depends on
    # total steps), so interrupt by running to completion and then resuming from the step-2 checkpoint.
    train(cut, processes=2)
    runs = tmp_path / "runs"
    # Drop everything after the step-2 checkpoint, as if the run had died there.
    import shutil

    for sub in ("adapter", "summary.json", "report.html"):
        target = runs / "cut" / sub
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    shutil.rmtree(runs / "cut" / "checkpoints" / "step-000004", ignore_errors=True)
    metrics = (runs / "cut" / "metrics.jsonl").read_text().splitlines()
    (runs / "cut" / "metrics.jsonl").write_text(
        "\n".join(m for m in metrics if json.loads(m).get("step", 0) <= 2) + "\n"
    )
    # Resume with 1 process and the same global batch (4 rows per step).
    train(cut, "--resume", "training.batch_size=4")
    a, b = adapter_weights(runs / "ref"), adapter_weights(runs / "cut")
    for key in a:
        assert torch.allclose(a[key], b[key], atol=5e-5), key
