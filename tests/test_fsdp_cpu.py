"""FSDP2 on CPU: 2 processes train a sharded tiny model over gloo and match DDP.

accelerate (1.15) turns an FSDP config into FSDP only for GPU process groups: on a
CPU (gloo) group `AcceleratorState` keeps MULTI_CPU, i.e. plain DDP, without a word
(see docs/DISTRIBUTED.md). PyTorch's FSDP2 `fully_shard` itself runs on a CPU
device mesh, so this test launches its workers with `accelerate launch` and the
shipped `configs/accelerate/fsdp.yaml` (2 processes, fp32), and each worker (this
file run as a script) first lets accelerate's state take FSDP on the CPU group —
the one step a GPU run does not need. Everything after it is the code a GPU run
executes: `fully_shard` via accelerate, sharded forward/backward, the gathered
checkpoint weights (`get_state_dict`), `save_state` / `load_state` for the sharded
model and optimizer, padded held-out batches, and the gathered final output.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]


def allow_fsdp_on_cpu() -> None:
    """Let accelerate's FSDP plugin apply on a CPU (gloo) process group.

    accelerate only switches to DistributedType.FSDP from the GPU-type setups; on CPU
    the plugin is built from the launcher's FSDP_* variables and then ignored. This sets
    the type (in both AcceleratorState and PartialState: each new AcceleratorState copies
    PartialState's type back) and hands the plugin over, as accelerate does on GPUs.
    """
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    original = AcceleratorState.__init__

    def init(self, *args, fsdp_plugin=None, **kwargs):
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            if self._mixed_precision != "no":
                fsdp_plugin.set_mixed_precision(self._mixed_precision)
            self.fsdp_plugin = fsdp_plugin
            self.distributed_type = DistributedType.FSDP
            PartialState._shared_state["distributed_type"] = DistributedType.FSDP
            print(
                f"FSDP{fsdp_plugin.fsdp_version} on CPU: process {self.process_index} of {self.num_processes}",
                file=sys.stderr,
                flush=True,
            )

    AcceleratorState.__init__ = init


def write_config(tmp_path, model_dir, name, *, max_steps=4, save_every=2, lora=False):
    import yaml
    from conftest import chat_rows, write_jsonl

    train = write_jsonl(tmp_path / "data" / "train.jsonl", chat_rows(32, seed=1))
    # 5 held-out rows over 2 processes at 2 rows per batch: 2 batches on one, 1 on the other,
    # so the sharded held-out loss pads one process with a dropped extra forward.
    evals = write_jsonl(tmp_path / "data" / "eval.jsonl", chat_rows(5, seed=2))
    raw = {
        "method": "sft",
        "name": name,
        "output_dir": str(tmp_path / "runs"),
        "model": {"name": str(model_dir)},  # no adapter: full fine-tuning, what FSDP is for
        "data": {"format": "chat", "train": str(train), "eval": str(evals), "max_length": 128},
        "training": {
            "max_steps": max_steps,
            "batch_size": 2,
            "learning_rate": 2e-3,
            "seed": 3,
            "save_every": save_every,
            "eval_every": 2,
            "keep_checkpoints": 10,
            "mixed_precision": "no",
        },
        "eval": {"scorers": ["exact_match"], "max_new_tokens": 4, "batch_size": 4, "num_samples": 2},
    }
    if lora:  # a quick adapter run: no generation, no held-out loss
        raw["adapter"] = {"type": "lora", "r": 4, "alpha": 8}
        raw["training"].update(eval_every=None, learning_rate=5e-3)
        del raw["eval"]
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def fsdp_launch_config(tmp_path) -> Path:
    """The shipped FSDP2 config, on 2 processes in fp32 (exact comparison with DDP)."""
    import yaml

    raw = yaml.safe_load((ROOT / "configs" / "accelerate" / "fsdp.yaml").read_text())
    assert raw["distributed_type"] == "FSDP" and raw["fsdp_config"]["fsdp_version"] == 2
    raw.update(num_processes=2, mixed_precision="no")
    path = tmp_path / "fsdp_cpu.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run(cmd, tmp_path):
    env = {
        **os.environ,
        "TUNEFORGE_NO_PROGRESS": "1",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return done


def train_ddp(config_path, tmp_path):
    return run([sys.executable, "-m", "tuneforge", "train", str(config_path), "--num-processes", "2"], tmp_path)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_fsdp(config_path, tmp_path, *extra):
    done = run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(fsdp_launch_config(tmp_path)),
            "--main_process_port",
            str(free_port()),
            __file__,
            "train",
            str(config_path),
            *extra,
        ],
        tmp_path,
    )
    assert done.stderr.count("FSDP2 on CPU: process") == 2, done.stderr[-3000:]
    return done


def losses(run_dir, key="loss"):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r[key] for r in rows if key in r]


def model_weights(run_dir):
    return load_file(str(run_dir / "model" / "model.safetensors"))


def assert_weights_close(a, b, atol):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=atol), (key, (a[key] - b[key]).abs().max().item())


@pytest.mark.slow
def test_fsdp2_on_cpu_matches_ddp_and_resumes(tmp_path, tiny_model_dir, isolated_cache):
    import shutil

    runs = tmp_path / "runs"
    train_ddp(write_config(tmp_path, tiny_model_dir, "ddp"), tmp_path)
    sharded = write_config(tmp_path, tiny_model_dir, "fsdp")
    train_fsdp(sharded, tmp_path)

    # Tolerance: the same fp32 sums in another order (FSDP's reduce-scatter vs DDP's all-reduce).
    ddp, fsdp = runs / "ddp", runs / "fsdp"
    assert losses(fsdp) == pytest.approx(losses(ddp), abs=1e-5)
    assert losses(fsdp, "eval_loss") == pytest.approx(losses(ddp, "eval_loss"), abs=1e-5)
    assert len(losses(fsdp)) == 4  # rank 0 alone wrote the metrics
    summary = json.loads((fsdp / "summary.json").read_text())
    reference = json.loads((ddp / "summary.json").read_text())
    assert summary["train"]["processes"] == 2
    assert summary["after"]["eval_loss"] == pytest.approx(reference["after"]["eval_loss"], abs=1e-5)
    # The gathered output is a standard, full (unsharded) Hugging Face folder.
    final = model_weights(fsdp)
    assert_weights_close(final, model_weights(ddp), atol=5e-5)
    assert final.keys() == load_file(str(tiny_model_dir / "model.safetensors")).keys()

    # The sharded checkpoint: gathered trainable weights + accelerate's model / optimizer state, complete.
    ckpt = fsdp / "checkpoints" / "step-000002"
    assert (ckpt / "accelerate_state").is_dir() and not (ckpt / "PENDING").exists()
    assert not (ckpt / "optimizer.pt").exists()  # the optimizer state is in accelerate_state
    gathered = load_file(str(ckpt / "trainable.safetensors"))
    ddp_ckpt = load_file(str(ddp / "checkpoints" / "step-000002" / "trainable.safetensors"))
    assert_weights_close(gathered, ddp_ckpt, atol=5e-5)

    # Resume the sharded run from step 2 as if it had died there: same losses, same final weights.
    for sub in ("model", "summary.json", "report.html"):
        target = fsdp / sub
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    shutil.rmtree(fsdp / "checkpoints" / "step-000004", ignore_errors=True)
    full_losses = losses(fsdp)
    done = train_fsdp(sharded, tmp_path, "--resume")
    assert "Resuming from" in done.stderr + done.stdout
    assert losses(fsdp) == pytest.approx(full_losses, abs=1e-6)
    assert_weights_close(model_weights(fsdp), final, atol=1e-6)


@pytest.mark.slow
def test_fsdp2_lora_on_cpu_matches_ddp(tmp_path, tiny_model_dir, isolated_cache):
    runs = tmp_path / "runs"
    train_ddp(write_config(tmp_path, tiny_model_dir, "ddp", max_steps=2, save_every=None, lora=True), tmp_path)
    train_fsdp(write_config(tmp_path, tiny_model_dir, "fsdp", max_steps=2, save_every=None, lora=True), tmp_path)
    a = load_file(str(runs / "ddp" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(runs / "fsdp" / "adapter" / "adapter_model.safetensors"))
    assert_weights_close(b, a, atol=5e-5)
    assert losses(runs / "fsdp") == pytest.approx(losses(runs / "ddp"), abs=1e-5)


def test_fsdp_configs_that_would_silently_misbehave_are_refused(tmp_path):
    """What this test found: a use_cpu FSDP config trains unsharded on CPU, and
    fsdp_cpu_ram_efficient_loading unties a tied lm_head (see allow_fsdp_on_cpu and docs)."""
    from tuneforge.config import load_config
    from tuneforge.distributed import check_launch, read_accelerate_config

    config = load_config(ROOT / "configs" / "quickstart.yaml")
    shipped = (ROOT / "configs" / "accelerate" / "fsdp.yaml").read_text()
    on_cpu = tmp_path / "fsdp_cpu.yaml"
    on_cpu.write_text(shipped.replace("use_cpu: false", "use_cpu: true"))
    (problem,) = check_launch(read_accelerate_config(on_cpu), config, cuda_available=False)
    assert "FSDP needs CUDA" in problem and "use_cpu does not change that" in problem
    efficient = tmp_path / "fsdp_efficient.yaml"
    efficient.write_text(
        shipped.replace("fsdp_cpu_ram_efficient_loading: false", "fsdp_cpu_ram_efficient_loading: true")
    )
    (problem,) = check_launch(read_accelerate_config(efficient), config, cuda_available=True)
    assert "fsdp_cpu_ram_efficient_loading must be false" in problem


if __name__ == "__main__":  # a worker process of `accelerate launch ... tests/test_fsdp_cpu.py train CONFIG`
    allow_fsdp_on_cpu()
    from tuneforge.cli import main

    sys.exit(main(sys.argv[1:]))
