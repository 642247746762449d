"""A run's resource plan from its config: memory by part, time per step and per run, and whether it fits.

Nothing here reads weights: the model's config.json, the model built on the
meta device with the adapter attached, and the training rows (tokenised as
`validate` and `train` tokenise them, cached on disk) or, without them, the
row and token counts `validate` already has.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import torch

from . import memory as M
from . import speed as S
from .profile import PlanExtras, PlanInputs, PlanProfile
from .shapes import Arch, Params, arch_of, count_params
from .steps import StepShape, estimated_shape, shape_from_rows


class PlanError(Exception):
    pass


@dataclass
class Plan:
    method: str
    model: str
    device: str
    precision: str  # "fp32", "bf16" or "fp16": the matmuls' dtype
    processes: int
    parts: list[M.Part]
    runtime_bytes: int  # the process itself (CPU): Python, libraries, tokenizer, data
    step: StepShape
    step_seconds: float
    run_seconds: float
    flops_per_step: float
    peak_flops: float
    peak_how: str
    util: float
    util_source: str
    free_bytes: int | None
    notes: list[str] = field(default_factory=list)

    @property
    def process_bytes(self) -> int:
        """Peak of one process: runtime + static parts + the largest phase (memory.Part)."""
        phases: dict[str, int] = {}
        for part in self.parts:
            phases[part.phase] = phases.get(part.phase, 0) + part.bytes
        static = phases.pop("static", 0)
        return self.runtime_bytes + static + max(phases.values(), default=0)

    @property
    def machine_bytes(self) -> int:
        """What the machine must hold: every process on a CPU; one process per GPU."""
        return self.process_bytes * (self.processes if self.device == "cpu" else 1)

    @property
    def fits(self) -> bool | None:
        return None if self.free_bytes is None else self.machine_bytes <= self.free_bytes

    def summary(self) -> dict:
        """The plan for summary.json: MB per part, seconds, the assumptions."""
        return {
            "device": self.device,
            "precision": self.precision,
            "processes": self.processes,
            "memory_mb": {p.name: _mb(p.bytes) for p in self.parts} | {"runtime": _mb(self.runtime_bytes)},
            "peak_memory_mb": _mb(self.process_bytes),
            "machine_memory_mb": _mb(self.machine_bytes),
            "free_memory_mb": _mb(self.free_bytes) if self.free_bytes is not None else None,
            "fits": self.fits,
            "step_seconds": round(self.step_seconds, 6),
            "run_seconds": round(self.run_seconds, 3),
            "steps": self.step.steps,
            "tokens_per_step": round(self.step.tokens_per_step, 1),
            "tokens_per_second": round(self.step.tokens_per_step * self.processes / max(self.step_seconds, 1e-9), 1),
            "flops_per_step": self.flops_per_step,
            "matmul_peak_gflops": round(self.peak_flops / 1e9, 1),
            "utilisation": self.util,
            "utilisation_source": self.util_source,
            "data": asdict(self.step),
            "notes": self.notes,
        }


def _mb(n: int | float) -> float:
    return round(n / 2**20, 1)


# ----------------------------------------------------------------------------- building


def build_plan(
    config,
    *,
    processes: int = 1,
    data=None,
    facts: dict | None = None,
    device: str | None = None,
    precision: str | None = None,
) -> Plan:
    """The plan for ``config``. ``data``: the method's loaded data (rows counted exactly); else
    ``facts`` (validate's counts) or, with neither, the rows are loaded here."""
    from ..registry import get_method

    method = get_method(config.method)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    notes: list[str] = []
    config = _stand_in_for_unwritten_model(config, notes)
    model_config = read_model_config(config.model.name, trust_remote_code=config.model.trust_remote_code)
    arch = arch_of(model_config)
    precision = precision or _precision(config, device)
    storage = _storage_dtype(config, device)
    compute_bytes = 2 if precision in ("bf16", "fp16") or storage != torch.float32 else 4
    profile = method.plan_profile(config)
    params = _params(config, method, profile, model_config, storage, arch, data)
    if data is None and facts is None:
        data = _load_rows(config, method, notes)
    step = method.plan_step(config, data, facts, processes) or _step_shape(config, profile, data, facts, processes)
    extras = method.plan_extras(config, PlanInputs(arch, params, step, compute_bytes, notes))
    autocast = precision in ("bf16", "fp16") and storage == torch.float32
    parts = _memory_parts(config, profile, arch, params, step, compute_bytes, device=device, autocast=autocast)
    parts.extend(extras.parts)
    flops, step_seconds, peak, util, util_source = _timing(arch, params, step, extras, device, precision, processes)
    return Plan(
        method=config.method,
        model=config.model.name,
        device=device,
        precision=precision,
        processes=processes,
        parts=parts,
        runtime_bytes=_runtime_bytes(device),
        step=step,
        step_seconds=step_seconds,
        run_seconds=step_seconds * step.steps,
        flops_per_step=flops,
        peak_flops=peak.flops,
        peak_how=peak.how,
        util=util,
        util_source=util_source,
        free_bytes=free_memory(device),
        notes=notes,
    )


def read_model_config(name: str, *, trust_remote_code: bool = False):
    """The model's config.json (as checks._read_model_config reads it), or PlanError."""
    from transformers import AutoConfig

    from ..models.load import resolve_model

    try:
        return AutoConfig.from_pretrained(resolve_model(name), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise PlanError(f"model.name: cannot read {name}'s config.json: {exc}") from None


def _stand_in_for_unwritten_model(config, notes: list[str]):
    """A model.name inside output_dir that does not exist yet is an earlier run's output (a pipeline's
    later stage): plan with the default embedded model's architecture, and say so."""
    from pathlib import Path

    from ..config.schema import ModelConfig

    name = config.model.name
    path, runs = Path(name), Path(config.output_dir)
    if path.exists() or not (path == runs or runs in path.parents or Path(runs.parts[0]) in path.parents):
        return config
    stand_in = ModelConfig.model_fields["name"].default
    notes.append(
        f"model.name {name} does not exist yet (an earlier run writes it): planned with {stand_in}'s "
        f"architecture; plan another with model.name=..."
    )
    return config.model_copy(update={"model": config.model.model_copy(update={"name": stand_in})})


def _precision(config, device: str) -> str:
    try:
        from ..training.precision import resolve_precision

        choice = resolve_precision(config.training.mixed_precision, cpu=device == "cpu").choice
    except Exception:  # the precision module is optional here: fall back to the documented defaults
        requested = config.training.mixed_precision
        choice = requested if requested != "auto" else ("no" if device == "cpu" else "bf16")
    return {"no": "fp32"}.get(choice, choice)


def _storage_dtype(config, device: str) -> torch.dtype:
    from ..models.load import resolve_dtype

    return resolve_dtype(config.model.dtype, device)


def _params(config, method, profile: PlanProfile, model_config, storage: torch.dtype, arch: Arch, data) -> Params:
    """Params of the adapted model on the meta device (what validate's dry run counts)."""
    from ..adapters.checks import meta_model

    labels = (data.extra.get("labels") if data is not None else None) or []
    num_labels = profile.head_outputs or len(labels) or 2
    model = meta_model(model_config, method.peft_task_type, num_labels)
    if config.adapter is not None:
        from ..adapters import attach_adapter

        cfg = config.adapter
        if cfg.type == "lora" and cfg.init != "default":
            cfg = cfg.model_copy(update={"init": "default"})  # PiSSA / LoftQ need real weights; same shapes
        if cfg.type == "prompt_tuning" and cfg.init == "text":
            cfg = cfg.model_copy(update={"init": "random", "init_text": None})
        model = attach_adapter(model, cfg, task_type=method.peft_task_type, total_steps=1_000_000).model
    from ..adapters.config import SELECTIVE

    # Base weights are stored at the storage dtype, trained ones too (full fine-tuning, bitfit,
    # partial); additive adapters' own weights stay fp32, as peft keeps them.
    base_dtype_trains = config.adapter is None or config.adapter.type in SELECTIVE
    for param in model.parameters():
        if param.is_floating_point() and (not param.requires_grad or base_dtype_trains):
            param.data = param.data.to(storage)
    m = config.model
    return count_params(
        model, storage_dtype=storage, quantize=m.quantize, double_quant=m.double_quant, layers=arch.layers
    )


def _load_rows(config, method, notes: list[str]):
    from ..models.load import load_tokenizer

    tokenizer = load_tokenizer(
        config.model.name, trust_remote_code=config.model.trust_remote_code, revision=config.model.revision
    )
    try:
        return method.load_data(config, tokenizer)
    except Exception as exc:  # an unreadable data set still gets a plan, from max_length
        notes.append(f"data not loaded ({str(exc).splitlines()[0][:120]}): sizes from max_length")
        return None


def _step_shape(config, profile: PlanProfile, data, facts: dict | None, processes: int) -> StepShape:
    """A step of global batches of rows: counted from the loaded rows, else estimated from validate's facts."""
    from ..training.engine import total_steps

    t = config.training
    global_batch = t.batch_size * t.gradient_accumulation_steps * processes
    if data is not None:
        rows = data.train
        steps = total_steps(len(rows), global_batch, t.epochs, t.max_steps)
        return shape_from_rows(
            rows,
            batch_size=t.batch_size,
            accumulation=t.gradient_accumulation_steps,
            processes=processes,
            steps=steps,
            shared_prompt=profile.shared_prompt,
            lm_loss=profile.lm_head,
            seed=t.seed,
        )
    facts = facts or {}
    rows = int(facts.get("examples") or facts.get("rows") or 0)
    max_length = getattr(config.data, "max_length", 512)
    packing = getattr(config.data, "packing", False)
    tokens = facts.get("tokens")
    if packing and tokens:  # packed rows are ≈ full: max_length each
        rows = max(1, -(-int(tokens) // max_length))
    steps = total_steps(max(rows, 1), global_batch, t.epochs, t.max_steps)
    return estimated_shape(
        rows=rows,
        tokens=tokens,
        max_length=max_length,
        batch_size=t.batch_size,
        accumulation=t.gradient_accumulation_steps,
        steps=steps,
        sequences_per_item=profile.sequences_per_item,
        loss_fraction=float(facts.get("loss_fraction") or 1.0) if profile.lm_head else 0.0,
    )


def _memory_parts(
    config,
    profile: PlanProfile,
    arch: Arch,
    params: Params,
    step: StepShape,
    compute_bytes: int,
    *,
    device: str,
    autocast: bool,
) -> list[M.Part]:
    m = config.model
    weights_note = f"{params.frozen:,} frozen parameters" + (f", {m.quantize}" if m.quantize else "")
    parts = [M.Part("weights (frozen)", params.frozen_bytes, weights_note), *M.state_parts(params)]
    checkpointing = config.training.gradient_checkpointing
    act = M.activation_bytes(
        arch, params, tokens=step.max_slots, compute_bytes=compute_bytes, checkpointing=checkpointing
    )
    parts.append(
        M.Part(
            "activations",
            act,
            f"largest micro-batch: {step.max_slots:,} positions × "
            f"{arch.layers} layers" + (", gradient checkpointing" if checkpointing else ""),
            phase="forward",
        )
    )
    if autocast:
        parts.append(
            M.Part(
                "autocast weight copies",
                M.autocast_copies_bytes(params, autocast=True),
                "16-bit copies of the linear weights, kept for backward",
                phase="forward",
            )
        )
    parts.append(
        M.Part(
            "working set",
            M.working_set_bytes(act, arch, device=device),
            "temporaries + allocator slack beyond the activations (measured ratio)"
            if device == "cpu"
            else "temporaries: about one layer's activations",
            phase="forward",
        )
    )
    lm = profile.lm_head
    logits = M.logits_bytes(
        arch, params, loss_positions=step.max_loss_positions, compute_bytes=compute_bytes, lm_head=lm
    )
    parts.append(
        M.Part(
            "logits / loss",
            logits,
            f"chunked projection at {step.max_loss_positions:,} loss positions" if lm else "pooled head: negligible",
            phase="forward",
        )
    )
    return parts


def _timing(
    arch: Arch, params: Params, step: StepShape, extras: PlanExtras, device: str, precision: str, processes: int
):
    """(FLOPs per step per process, seconds per step, peak, utilisation, its source).

    The training passes, plus the method's forward-only passes (a reference model …) at the same
    utilisation and its sampled tokens (rollouts) at the measured generation utilisation."""
    path = "encoder" if arch.kind == "encoder" else ("full" if params.trainable >= 0.5 * params.total else "adapter")
    peak = S.matmul_peak(device, precision)
    util, source = S.utilisation(device, precision, path)
    per_token = S.train_flops_per_token(arch, params, seq_len=step.mean_seq_len)
    head = S.head_flops_per_position(arch, params) * step.mean_loss_positions * step.micro_batches
    flops = per_token * step.slots_per_step + head
    seconds = flops / (peak.flops * util)
    fwd = S.forward_flops_per_token(arch, params.total - params.embeddings, seq_len=step.mean_seq_len)
    extra = fwd * extras.forward_tokens
    seconds += extra / (peak.flops * util)
    if extras.generated_tokens:
        gen_util, _ = S.utilisation(device, precision, "generate")
        per_generated = S.forward_flops_per_token(arch, params.total, seq_len=step.mean_seq_len)
        seconds += extras.generated_tokens * per_generated / (peak.flops * gen_util)
    if device == "cpu":  # processes on one CPU share its cores: the step's work is done by all of them together
        seconds *= processes
    return flops + extra, seconds, peak, util, source


def _runtime_bytes(device: str) -> int:
    """This process's resident memory now (CPU): Python, torch, libraries, tokenizer, data."""
    if device != "cpu":
        return 0
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def free_memory(device: str) -> int | None:
    """Available bytes: MemAvailable on CPU, free GPU memory on CUDA (None when unknown)."""
    if device == "cuda":
        try:
            return int(torch.cuda.mem_get_info()[0])
        except Exception:
            return None
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
