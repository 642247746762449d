"""Data-loss faults: a save killed mid-write, a full disk, a damaged checkpoint, a damaged tokenisation cache.

Each fault leaves the run resumable from the newest intact state, and says which.
"""

import errno
import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import chat_rows, write_jsonl
from test_runs import make_config
from tiny import tiny_tokenizer

from tuneforge.training import checkpoint as ckpt
from tuneforge.training.checkpoint import (
    CheckpointWriteError,
    damage,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)


def parts(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(2, 4)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return model, opt, sched


def save(run_dir, step, model, opt, sched, keep=5):
    return save_checkpoint(run_dir, step, model=model, optimizer=opt, scheduler=sched, state={}, keep=keep)


# ---------------------------------------------------------------------------- SIGKILL during a save

KILLED_SAVE = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from tuneforge.training import checkpoint as ckpt

    run_dir = sys.argv[1]
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ckpt.save_checkpoint(run_dir, 1, model=model, optimizer=opt, scheduler=sched, state={"mark": 1})
    with torch.no_grad():
        model.weight.fill_(2.0)
    real_save = torch.save

    def save_then_die(obj, path, *args, **kwargs):
        real_save(obj, path, *args, **kwargs)
        if str(path).endswith("scheduler.pt"):  # weights and optimizer written, the rest not yet
            os.kill(os.getpid(), signal.SIGKILL)

    ckpt.torch.save = save_then_die
    ckpt.save_checkpoint(run_dir, 2, model=model, optimizer=opt, scheduler=sched, state={"mark": 2})
    """
)


def test_sigkill_during_a_save_leaves_the_previous_checkpoint_the_latest(tmp_path):
    process = subprocess.run(
        [sys.executable, "-c", KILLED_SAVE, str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert process.returncode == -9, process.stderr  # really killed mid-save
    leftovers = [p.name for p in (tmp_path / "checkpoints").iterdir()]
    assert "step-000001" in leftovers and "step-000002" not in leftovers
    assert any(name.startswith(".step-000002-") for name in leftovers)  # the killed save's temporary folder

    assert list_checkpoints(tmp_path) == [tmp_path / "checkpoints" / "step-000001"]
    assert latest_checkpoint(tmp_path).name == "step-000001"
    model, opt, sched = parts()
    assert load_checkpoint(latest_checkpoint(tmp_path), model=model, optimizer=opt, scheduler=sched)["mark"] == 1
    assert torch.equal(model.weight, torch.ones(3, 4))  # step 1's weights, not the half-written step 2's

    save(tmp_path, 2, model, opt, sched)  # the next save clears what the killed one left
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000001", "step-000002"]


# ---------------------------------------------------------------------------- disk full


def test_a_disk_too_full_for_the_checkpoint_is_refused_before_writing(tmp_path, monkeypatch):
    model, opt, sched = parts()
    first = save(tmp_path, 1, model, opt, sched)
    monkeypatch.setattr(ckpt, "_free_bytes", lambda root: 1000)
    with pytest.raises(CheckpointWriteError) as caught:
        save(tmp_path, 2, model, opt, sched)
    message = str(caught.value)
    assert "step-000002: not written (the disk is full: " in message and "MB free" in message
    assert "step-000001 is kept and --resume continues from it" in message
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000001"]
    assert latest_checkpoint(tmp_path) == first and damage(first) is None


@pytest.mark.parametrize("failing", ["optimizer.pt", "rng.pt"])
def test_a_disk_that_fills_up_mid_save_keeps_the_last_checkpoint(tmp_path, monkeypatch, failing):
    model, opt, sched = parts()
    first = save(tmp_path, 1, model, opt, sched, keep=1)
    real_save = torch.save

    def fill_up(obj, path, *args, **kwargs):
        if str(path).endswith(failing):
            with open(path, "wb") as handle:  # a partial file, then the disk is full
                handle.write(b"PK\x03\x04 partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(ckpt.torch, "save", fill_up)
    with pytest.raises(
        CheckpointWriteError, match=r"step-000002: not written \(the disk is full\); step-000001 is kept"
    ):
        save(tmp_path, 2, model, opt, sched, keep=1)
    # keep=1 did not prune step 1 for the step 2 that failed; no partial folder is left
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000001"]
    assert latest_checkpoint(tmp_path) == first and damage(first) is None


def test_a_disk_full_error_from_safetensors_is_named(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    model, opt, sched = parts()
    monkeypatch.setattr(ckpt, "save_file", full)
    with pytest.raises(CheckpointWriteError, match=r"not written \(the disk is full\); no earlier checkpoint exists"):
        save(tmp_path, 1, model, opt, sched)


def test_a_failed_save_in_a_run_stops_it_with_one_line(tmp_path, tiny_model_dir, isolated_cache, monkeypatch, capsys):
    import yaml

    from tuneforge.cli import main

    config = make_config(tmp_path, tiny_model_dir, name="full")
    path = tmp_path / "full.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    real = ckpt._free_bytes
    saves = {"n": 0}

    def free_until_second_save(root):
        saves["n"] += 1
        return 1000 if saves["n"] >= 2 else real(root)

    monkeypatch.setattr(ckpt, "_free_bytes", free_until_second_save)
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "error: checkpoint" in err and "step-000004: not written (the disk is full" in err
    assert "step-000002 is kept and --resume continues from it" in err
    assert "Traceback" not in err
    assert [p.name for p in list_checkpoints(tmp_path / "runs" / "full")] == ["step-000002"]


# ---------------------------------------------------------------------------- damaged checkpoints


@pytest.mark.parametrize(
    "harm, problem",
    [
        (lambda f: f.write_bytes(f.read_bytes()[:-7]), "trainable.safetensors is {n} bytes, {m} were written"),
        (lambda f: f.write_bytes(b"\x00" + f.read_bytes()[1:]), "trainable.safetensors does not match its checksum"),
        (lambda f: f.unlink(), "trainable.safetensors is missing"),
    ],
    ids=["truncated", "bit-flip", "deleted"],
)
def test_a_damaged_checkpoint_is_named_and_skipped(tmp_path, harm, problem, capsys):
    model, opt, sched = parts()
    first = save(tmp_path, 1, model, opt, sched)
    second = save(tmp_path, 2, model, opt, sched)
    weights = second / "trainable.safetensors"
    size = weights.stat().st_size
    harm(weights)
    expected = problem.format(n=size - 7, m=size)
    assert damage(second) == expected and damage(first) is None
    assert latest_checkpoint(tmp_path) == first
    err = capsys.readouterr().err
    assert f"checkpoint {second} is damaged ({expected}); skipped: the newest intact one is step-000001" in err


def test_checkpoints_from_before_manifests_are_checked_for_their_files(tmp_path):
    model, opt, sched = parts()
    old = save(tmp_path, 1, model, opt, sched)
    (old / "manifest.json").unlink()  # as written before manifests existed
    assert damage(old) is None
    (old / "rng.pt").write_bytes(b"")
    assert damage(old) == "rng.pt is empty"


def test_resume_skips_a_corrupted_latest_checkpoint_and_matches_an_uninterrupted_run(
    tmp_path, tiny_model_dir, isolated_cache, capsys
):
    from tuneforge.methods.causal_lm import loss as step_module
    from tuneforge.runner import train_from_config
    from tuneforge.training.loop import TrainingInterrupted

    ref = train_from_config(make_config(tmp_path, tiny_model_dir, name="ref"))
    config = make_config(tmp_path, tiny_model_dir, name="cut")
    original = step_module.CausalLMLoss.forward
    calls = {"n": 0}

    def interrupt_in_step_5(self, *args, **kwargs):
        calls["n"] += self.training
        if self.training and calls["n"] == 9:  # 2 micro-batches per step: the first of step 5
            os.kill(os.getpid(), __import__("signal").SIGINT)
        return original(self, *args, **kwargs)

    step_module.CausalLMLoss.forward = interrupt_in_step_5
    try:
        with pytest.raises(TrainingInterrupted) as info:
            train_from_config(config)
    finally:
        step_module.CausalLMLoss.forward = original
    damaged = info.value.checkpoint
    assert damaged.name == "step-000005"
    weights = damaged / "trainable.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a half-written file
    capsys.readouterr()

    resumed = train_from_config(config, resume=True)
    err = capsys.readouterr().err
    assert f"checkpoint {damaged} is damaged (trainable.safetensors is " in err
    assert "skipped: the newest intact one is step-000004" in err and "(step 4/6)" in err
    for (name, a), (_, b) in zip(ref.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.allclose(a, b, atol=1e-6), name


# ---------------------------------------------------------------------------- the tokenisation cache


@pytest.fixture
def cached(tmp_path):
    from tuneforge.config.schema import DataConfig
    from tuneforge.data import load_splits, pipeline

    tok = tiny_tokenizer()
    cfg = DataConfig(format="chat", train=str(write_jsonl(tmp_path / "c.jsonl", chat_rows(8))), eval_fraction=0.25)
    cache_dir = tmp_path / "cache"
    first = load_splits(cfg, tok, cache_dir=cache_dir)
    (entry,) = cache_dir.glob("*.npz")
    builds = []
    real = pipeline.build

    def counting(*args):
        builds.append(1)
        return real(*args)

    return {
        "load": lambda: load_splits(cfg, tok, cache_dir=cache_dir),
        "first": first,
        "entry": entry,
        "builds": builds,
        "count": lambda monkeypatch: monkeypatch.setattr(pipeline, "build", counting),
    }


def _rewrite_npz(path, change):
    import numpy as np

    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    change(arrays)
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def _flip_one_id(arrays):
    arrays["train_ids"] = arrays["train_ids"].copy()
    arrays["train_ids"][3] += 1  # a valid file with one wrong token: only the checksum can tell


def _bad_lengths_with_checksum(arrays):
    from tuneforge.data.cache import _digest

    arrays["train_lengths"] = arrays["train_lengths"] + 1
    del arrays["sha256"]
    arrays["sha256"] = __import__("numpy").array(_digest(arrays))  # consistent checksum, inconsistent content


@pytest.mark.parametrize(
    "harm, reason",
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "not a complete .npz file"),
        (lambda p: p.write_bytes(b"not a zip at all"), "not a complete .npz file"),
        (lambda p: p.write_bytes(b""), "not a complete .npz file"),
        (lambda p: _rewrite_npz(p, _flip_one_id), "checksum mismatch"),
        (lambda p: _rewrite_npz(p, lambda a: a.pop("sha256")), "no checksum"),
        (lambda p: _rewrite_npz(p, _bad_lengths_with_checksum), "lengths add up to"),
    ],
    ids=["truncated", "garbage", "empty", "one-token-changed", "no-checksum", "inconsistent"],
)
def test_a_damaged_tokenisation_cache_is_rebuilt_never_trusted(cached, monkeypatch, caplog, harm, reason):
    harm(cached["entry"])
    cached["count"](monkeypatch)
    with caplog.at_level(logging.WARNING, logger="tuneforge.data"):
        again = cached["load"]()
    assert cached["builds"] == [1]  # rebuilt from the data
    assert [(e.input_ids, e.labels) for e in again.train] == [(e.input_ids, e.labels) for e in cached["first"].train]
    (warning,) = [r.getMessage() for r in caplog.records if "tokenisation cache" in r.getMessage()]
    assert f"tokenisation cache entry {cached['entry']} is damaged (" in warning and reason in warning
    assert "rebuilding it from the data" in warning
    cached["load"]()  # the rebuilt entry was written back and is trusted again
    assert cached["builds"] == [1]


def test_cache_entries_carry_a_checksum_of_their_contents(cached):
    import numpy as np

    from tuneforge.data.cache import _digest

    with np.load(cached["entry"], allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    stored = str(arrays.pop("sha256"))
    assert stored == _digest(arrays) and len(stored) == 64
    assert json.loads(str(arrays["meta"]))["train_where"]  # the rest as before
