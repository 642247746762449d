"""Launch setups (DDP, FSDP, DeepSpeed ZeRO) and what each supports.

tuneforge never implements distribution itself: `accelerate` launches the
processes and wraps the model (PyTorch DDP, FSDP2, DeepSpeed). This module
reads an accelerate config file and rejects combinations that cannot work,
before anything is launched — the same check `tuneforge validate
--accelerate-config FILE` prints. See docs/DISTRIBUTED.md.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import yaml

SETUPS = ("MULTI_CPU", "MULTI_GPU", "FSDP", "DEEPSPEED", "NO")


@dataclass(frozen=True)
class LaunchSetup:
    path: str
    distributed_type: str
    num_processes: int
    num_machines: int
    mixed_precision: str
    zero_stage: int | None = None
    deepspeed_accumulation: object = None
    fsdp_version: int | None = None
    fsdp_offload: bool = False
    fsdp_state_dict_type: str | None = None
    use_cpu: bool = False


def read_accelerate_config(path: str | Path) -> LaunchSetup:
    """Parse an accelerate config file with accelerate's own loader (so its schema is enforced)."""
    from accelerate.commands.config.config_args import load_config_from_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"accelerate config not found: {path}")
    load_config_from_file(str(path))  # raises on keys accelerate does not know
    raw = yaml.safe_load(path.read_text()) or {}
    kind = str(raw.get("distributed_type", "NO")).upper()
    if kind not in SETUPS:
        raise ValueError(f"{path}: distributed_type '{kind}' is not one tuneforge supports ({', '.join(SETUPS)})")
    ds = raw.get("deepspeed_config") or {}
    fsdp = raw.get("fsdp_config") or {}
    return LaunchSetup(
        path=str(path),
        distributed_type=kind,
        num_processes=int(raw.get("num_processes", 1)),
        num_machines=int(raw.get("num_machines", 1)),
        mixed_precision=str(raw.get("mixed_precision", "no")),
        zero_stage=int(ds["zero_stage"]) if "zero_stage" in ds else None,
        deepspeed_accumulation=ds.get("gradient_accumulation_steps"),
        fsdp_version=int(fsdp.get("fsdp_version", 1)) if fsdp else None,
        fsdp_offload=bool(fsdp.get("fsdp_offload_params", False)),
        fsdp_state_dict_type=fsdp.get("fsdp_state_dict_type"),
        use_cpu=bool(raw.get("use_cpu", False)),
    )


def check_launch(setup: LaunchSetup, config, *, cuda_available: bool,
                 deepspeed_available: bool | None = None) -> list[str]:
    """Problems that would make this run fail or be wrong under this setup, each with the reason."""
    problems: list[str] = []
    where = f"{setup.path}: "
    needs_gpu = setup.distributed_type in ("MULTI_GPU", "FSDP", "DEEPSPEED") and not setup.use_cpu
    if needs_gpu and not cuda_available:
        problems.append(where + f"{setup.distributed_type} needs CUDA GPUs and none is visible here; on CPU use "
                        "`tuneforge train CONFIG --num-processes N` (DDP over gloo)")
    if setup.mixed_precision in ("bf16", "fp16") and not cuda_available:
        problems.append(where + f"mixed_precision {setup.mixed_precision} needs CUDA; use 'no' on CPU")
    if setup.distributed_type == "DEEPSPEED":
        if deepspeed_available is None:
            deepspeed_available = importlib.util.find_spec("deepspeed") is not None
        if not deepspeed_available:
            problems.append(where + "DeepSpeed is not installed: pip install deepspeed")
        accum = config.training.gradient_accumulation_steps
        if setup.deepspeed_accumulation not in (None, "auto", accum):
            problems.append(where + f"deepspeed_config.gradient_accumulation_steps is {setup.deepspeed_accumulation} "
                            f"but training.gradient_accumulation_steps is {accum}: DeepSpeed steps the optimizer "
                            "at its own accumulation boundary, so the two must be equal")
    quantization = getattr(config.model, "quantize", None)
    if quantization and setup.distributed_type == "DEEPSPEED" and setup.zero_stage == 3:
        problems.append(where + f"a {quantization}-quantized base cannot be used with ZeRO-3: ZeRO-3 partitions "
                        "parameters, and bitsandbytes' packed quantized weights cannot be partitioned; use ZeRO-2 "
                        "or DDP (QLoRA fits one GPU per process)")
    if quantization and setup.distributed_type == "FSDP" and setup.fsdp_offload:
        problems.append(where + "a quantized base with FSDP parameter offload is not supported; turn "
                        "fsdp_offload_params off or train without quantization")
    if setup.distributed_type == "FSDP" and setup.fsdp_state_dict_type not in (None, "FULL_STATE_DICT"):
        problems.append(where + "fsdp_state_dict_type must be FULL_STATE_DICT: the run's output must be a "
                        "standard Hugging Face / PEFT folder that loads without FSDP")
    if setup.num_machines > 1 and setup.num_processes < setup.num_machines:
        problems.append(where + "num_processes counts processes over all machines and must be ≥ num_machines")
    return problems
