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
    fsdp_cpu_ram_efficient_loading: bool = False


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
        fsdp_cpu_ram_efficient_loading=bool(fsdp.get("fsdp_cpu_ram_efficient_loading", False)),
    )


def check_launch(
    setup: LaunchSetup, config, *, cuda_available: bool, deepspeed_available: bool | None = None
) -> list[str]:
    """Problems that would make this run fail or be wrong under this setup, each with the reason."""
    problems: list[str] = []
    where = f"{setup.path}: "
    # use_cpu does not make FSDP / DeepSpeed run on CPU: accelerate (1.15) then sets up plain
    # DDP (MULTI_CPU) without a word, so a sharded config would silently train unsharded.
    sharded = setup.distributed_type in ("FSDP", "DEEPSPEED")
    needs_gpu = sharded or (setup.distributed_type == "MULTI_GPU" and not setup.use_cpu)
    if needs_gpu and not cuda_available:
        why = (
            " (use_cpu does not change that: on CPU accelerate runs the processes as plain DDP, unsharded)"
            if sharded and setup.use_cpu
            else ""
        )
        problems.append(
            where + f"{setup.distributed_type} needs CUDA GPUs and none is visible here{why}; on CPU "
            "use `tuneforge train CONFIG --num-processes N` (DDP over gloo)"
        )
    if setup.mixed_precision == "fp16" and not cuda_available:
        # bf16 autocast runs on CPU (fast with AVX512-BF16 / AMX); fp16 autocast does not.
        problems.append(where + "mixed_precision fp16 needs CUDA; use 'no' or 'bf16' on CPU")
    if setup.distributed_type == "DEEPSPEED":
        if deepspeed_available is None:
            deepspeed_available = importlib.util.find_spec("deepspeed") is not None
        if not deepspeed_available:
            problems.append(where + "DeepSpeed is not installed: pip install deepspeed")
        accum = config.training.gradient_accumulation_steps
        if setup.deepspeed_accumulation not in (None, "auto", accum):
            problems.append(
                where + f"deepspeed_config.gradient_accumulation_steps is {setup.deepspeed_accumulation} "
                f"but training.gradient_accumulation_steps is {accum}: DeepSpeed steps the optimizer "
                "at its own accumulation boundary, so the two must be equal"
            )
    quantization = getattr(config.model, "quantize", None)
    if quantization and setup.distributed_type == "DEEPSPEED" and setup.zero_stage == 3:
        problems.append(
            where + f"a {quantization}-quantized base cannot be used with ZeRO-3: ZeRO-3 partitions "
            "parameters, and bitsandbytes' packed quantized weights cannot be partitioned; use ZeRO-2 "
            "or DDP (QLoRA fits one GPU per process)"
        )
    if quantization and setup.distributed_type == "FSDP" and setup.fsdp_offload:
        problems.append(
            where + "a quantized base with FSDP parameter offload is not supported; turn "
            "fsdp_offload_params off or train without quantization"
        )
    if setup.distributed_type == "FSDP" and setup.fsdp_state_dict_type not in (None, "FULL_STATE_DICT"):
        problems.append(
            where + "fsdp_state_dict_type must be FULL_STATE_DICT: the run's output must be a "
            "standard Hugging Face / PEFT folder that loads without FSDP"
        )
    if setup.distributed_type == "FSDP" and setup.fsdp_cpu_ram_efficient_loading:
        # accelerate moves the prepared module to the meta device and re-ties weights only with the
        # module's own tie_weights(); tuneforge prepares its loss module around the model, so a tied
        # lm_head / input embedding would train as two separate matrices (seen on CPU, FSDP2).
        problems.append(
            where + "fsdp_cpu_ram_efficient_loading must be false: with it, accelerate unties the "
            "output projection from the input embedding of models that tie them, which then train "
            "and save as two different matrices"
        )
    if setup.num_machines > 1 and setup.num_processes < setup.num_machines:
        problems.append(where + "num_processes counts processes over all machines and must be ≥ num_machines")
    return problems


def broadcast_from_main(accelerator, module) -> None:
    """Give every process the main process's trainable parameters (collective).

    DDP copies rank 0's weights to every process when it wraps the model; FSDP2's
    ``fully_shard`` keeps each process's own rows as they are. Weights loaded from a
    checkpoint agree anyway, but randomly initialised ones (adapters, new heads) can
    differ between processes, and sharding them would stitch one tensor together
    from several initialisations. Call this before ``accelerator.prepare`` when sharded.
    """
    import torch
    import torch.distributed as dist

    if accelerator.num_processes == 1 or not dist.is_initialized():
        return
    with torch.no_grad():
        for param in module.parameters():
            if param.requires_grad:
                dist.broadcast(param.data, src=0)
