"""The config sections every method shares: pydantic v2, unknown keys forbidden.

Each method's own run config (``method: cpt`` → ``CptConfig``, ...) lives in
its folder under ``methods/`` and extends :class:`RunBase`; the registry
(``registry.py``) maps the ``method:`` value to it.

Every section forbids unknown keys (a misspelt key is an error with a
suggestion, never silently ignored) and no validator rewrites what the user
wrote: defaults fill gaps, nothing else changes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..adapters.config import AdapterConfig
from .continual import ContinualConfig, StageConfig

DataFormat = Literal["text", "prompt_completion", "chat", "natural_instructions"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Section):
    name: str = Field(
        "smollm2-135m-instruct", description="Embedded model name, local Hugging Face folder, .gguf file or hub id."
    )
    revision: str | None = None
    trust_remote_code: bool = False
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="Weight dtype. auto: float32 on CPU (bf16 speed comes from "
        "training.mixed_precision), bfloat16 on CUDA.",
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] | None = None
    packed_attention: Literal["auto", "segments", "mask"] = Field(
        "auto",
        description="How packed training rows keep their examples apart. segments: causal attention per "
        "example, no T×T mask (models/segment_attention.py); mask: the dense block-diagonal mask; auto: segments "
        "with sdpa on CPU, and on CUDA where torch has its flash-attention varlen kernel; the mask elsewhere. "
        "flash_attention_2 always gets the segments as its variable-length arguments.",
    )
    quantize: Literal["8bit", "4bit"] | None = Field(
        None,
        description="Load the frozen base quantized with bitsandbytes: 8bit (LLM.int8, Dettmers et al. 2022) "
        "or 4bit (QLoRA, Dettmers et al. 2023). Needs an adapter: quantized weights are not trained.",
    )
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4bit: NormalFloat4 (QLoRA's) or FP4.")
    double_quant: bool = Field(True, description="4bit: quantize the quantization constants too (QLoRA).")
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="4bit: dtype of the matmuls on dequantized weights (auto: the model dtype)."
    )

    @model_validator(mode="after")
    def _quant_options(self):
        # Only values other than the defaults: a dumped config spells every key out and must reload.
        stray = sorted(
            k
            for k in ("quant_type", "double_quant", "compute_dtype")
            if getattr(self, k) != type(self).model_fields[k].default
        )
        if stray and self.quantize != "4bit":
            raise ValueError(f"{', '.join(stray)} only apply to quantize: 4bit")
        return self


class NaturalInstructionsOptions(Section):
    num_positive: int = Field(2, ge=0, description="Positive examples shown in each prompt.")
    num_negative: int = Field(0, ge=0, description="Negative examples shown in each prompt.")
    include_explanations: bool = Field(False, description="Show each example's reason / explanation after it.")
    include_avoid_and_emphasis: bool = Field(
        True, description="Show v1 'Things to Avoid' and 'Emphasis & Caution' when present."
    )
    split_by: Literal["instance", "task"] = Field(
        "instance", description="Hold out instances of every task, or whole tasks."
    )
    max_instances_per_task: int | None = Field(None, ge=1)


class TrainSource(Section):
    """One source of a mixture (``data.train: [{path: ..., weight: ...}, ...]``); see data/mixture.py."""

    path: str | list[str] = Field(description="JSONL/JSON/CSV/Parquet file(s), folder, glob or hub dataset.")
    name: str | None = Field(None, description="Its name in logs and the report (default: the file's stem).")
    weight: float | None = Field(None, gt=0, description="Its share of each epoch's rows (relative to the others').")
    examples: int | None = Field(None, ge=1, description="A fixed number of its rows in each epoch instead.")
    format: DataFormat | None = Field(None, description="Its own format (default: data.format), e.g. text.")
    columns: dict[str, str] | None = Field(None, description="Its own column names (default: data.columns).")
    eval: str | list[str] | None = Field(None, description="Its own held-out rows (logged as eval_loss/<name>).")

    @model_validator(mode="after")
    def _weight_or_examples(self):
        if self.weight is not None and self.examples is not None:
            raise ValueError("give weight or examples, not both")
        return self


class DataConfig(Section):
    format: DataFormat
    train: str | list[str | TrainSource] = Field(
        description="JSONL/JSON/CSV/Parquet file(s), folder, glob or hub dataset; or a mixture: a list of "
        "{path, weight | examples, format, columns, eval, name} sampled anew each epoch."
    )

    @field_validator("train", mode="before")
    @classmethod
    def _mixture_sources(cls, value):
        """A mixture's sources checked one by one, so a mistake names its source (not the union's branches)."""
        if not isinstance(value, list) or all(isinstance(item, str) for item in value):
            return value
        out = []
        for k, item in enumerate(value):
            if isinstance(item, (str, TrainSource)):
                out.append(item)
                continue
            if not isinstance(item, dict):
                raise ValueError(f"[{k}]: a path or a source {{path: ..., weight: ...}}, not {type(item).__name__}")
            try:
                out.append(TrainSource.model_validate(item))
            except ValidationError as err:
                first = err.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                problem = first["msg"].removeprefix("Value error, ")
                raise ValueError(f"[{k}]{'.' + where if where else ''}: {problem}") from None
        return out

    eval: str | list[str] | None = None
    eval_fraction: float = Field(0.0, ge=0, lt=1, description="Held-out share of train when no eval source is given.")
    max_length: int = Field(512, ge=8)
    packing: bool = True
    template: Literal["auto", "chat", "plain"] = Field(
        "auto", description="auto: the tokenizer's chat template if it has one, else plain text."
    )
    completion_only_loss: bool = Field(
        True, description="SFT: loss on completions / assistant turns only (prompt tokens masked)."
    )
    columns: dict[str, str] = Field(
        default_factory=dict, description="Map the format's field names to your column names, e.g. {prompt: question}."
    )
    system_prompt: str | None = None
    max_examples: int | None = Field(None, ge=1)
    natural_instructions: NaturalInstructionsOptions = Field(default_factory=NaturalInstructionsOptions)
    seed: int = 0


class EarlyStoppingConfig(Section):
    metric: str = Field(
        "eval_loss",
        description="A held-out metric the method reports (eval_loss, a scorer's name, recall@1, macro_f1 …); "
        "a metric other than the held-out loss runs the method's full evaluation every eval_every steps.",
    )
    mode: Literal["auto", "min", "max"] = Field(
        "auto", description="Whether lower or higher is better; auto: from the name (loss, perplexity … lower)."
    )
    patience: int = Field(3, ge=1, description="Evaluations without a gain of min_delta before the run stops.")
    min_delta: float = Field(0.0, ge=0, description="The least change that counts as a gain.")


class TrainingConfig(Section):
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1, description="Overrides epochs when set.")
    batch_size: int = Field(4, ge=1, description="Rows per micro-batch per process.")
    gradient_accumulation_steps: int = Field(1, ge=1)
    learning_rate: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_epsilon: float = 1e-8
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    warmup_steps: int | None = Field(None, ge=0, description="Overrides warmup_ratio when set.")
    max_grad_norm: float | None = Field(1.0, gt=0)
    on_divergence: Literal["stop", "warn", "off"] = Field(
        "stop",
        description="When the training loss climbs far above its start or to the chance level "
        "(the model is being destroyed, usually by too high a learning rate): stop, warn, or do nothing.",
    )
    seed: int = 42
    gradient_checkpointing: bool = False
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        "auto",
        description="Autocast precision; weights, gradients and optimizer state stay fp32. auto: bf16 on "
        "CUDA (fp16 without bf16 support); on CPU bf16 where the CPU has AVX512-BF16/AMX-BF16 and a timed matmul "
        "confirms it is faster, else fp32 (`tuneforge validate` says which and why). fp16 needs CUDA.",
    )
    save_every: int | None = Field(None, ge=1, description="Checkpoint every N optimizer steps.")
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(1, ge=1)
    eval_every: int | None = Field(None, ge=1, description="Held-out loss every N steps.")
    early_stopping: EarlyStoppingConfig | None = Field(
        None,
        description="Stop when the held-out metric has not improved for `patience` evaluations (every eval_every "
        "steps); the best weights become the run's output, the last ones are kept beside it (…-last).",
    )
    trackers: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(default_factory=list)
    num_threads: int | None = Field(None, ge=1, description="CPU threads (default: all cores).")

    @model_validator(mode="after")
    def _early_stopping_needs_evaluations(self):
        if self.early_stopping is not None and not self.eval_every:
            raise ValueError(
                "early_stopping needs eval_every (held-out evaluations every N steps), e.g. eval_every: 50"
            )
        return self

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, value):
        # YAML 1.1 reads a bare `no` as false: `mixed_precision: no` means the option "no", not a boolean.
        return "no" if value is False else value


class EvalConfig(Section):
    scorers: list[str] = Field(
        default_factory=lambda: ["exact_match"],
        description="Built-in: exact_match, normalized_match, json_field_accuracy, contains, "
        "tool_call_accuracy, tool_call_name, tool_call_valid; "
        "or a plug-in 'module:function' / 'path/to/file.py:function'.",
    )
    num_samples: int | None = Field(None, ge=1, description="Held-out samples to generate for (default all).")
    max_new_tokens: int = Field(128, ge=1)
    batch_size: int = Field(8, ge=1)
    before: bool = Field(True, description="Score the base model before training too.")
    samples_in_report: int = Field(6, ge=0)


class RunBase(Section):
    name: str | None = Field(None, description="Run folder name under output_dir (default: from the config file).")
    output_dir: str = "runs"
    model: ModelConfig = Field(default_factory=ModelConfig)
    adapter: AdapterConfig | None = None
    data: DataConfig
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    eval: EvalConfig | None = None
    stages: list[StageConfig] | None = Field(
        None,
        description="Continual learning: train these stages one after another in one run, each with its "
        "own data and held-out set (config/continual.py). data: then holds the settings they share.",
    )
    continual: ContinualConfig | None = Field(
        None, description="With stages: the strategy against forgetting (naive, replay, l2, ewc, adapter, joint)."
    )

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str | None) -> str | None:
        if value is not None and ("/" in value or value in {"", ".", ".."}):
            raise ValueError("must be a plain folder name (no '/'); use output_dir for the parent")
        return value

    @model_validator(mode="before")
    @classmethod
    def _stage_one_data(cls, values):
        # With stages, data: holds what they share and its train may be left out: it is stage 1's.
        if isinstance(values, dict) and isinstance(values.get("stages"), list) and values["stages"]:
            first = values["stages"][0]
            data = values.get("data")
            if isinstance(data, dict) and "train" not in data and isinstance(first, dict):
                train = (first.get("data") or {}).get("train")
                if train is not None:
                    values = {**values, "data": {**data, "train": train}}
        return values

    @model_validator(mode="after")
    def _stages_fit(self):
        if self.continual is not None and not self.stages:
            raise ValueError("continual: needs stages: (a list of {name, data: {train, eval}})")
        if not self.stages:
            if self.stages is not None:
                raise ValueError("stages: give at least one stage, or leave stages out")
            return self
        names = [stage.name for stage in self.stages]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"stages: names must be unique; {', '.join(twice)} appears more than once")
        for index, _stage in enumerate(self.stages):
            stage_data(self, index)  # raises ValueError naming the stage and the key
        return self


def stage_data(config: RunBase, index: int):
    """Stage ``index``'s ``data:`` section (validated); ValueError naming the stage and the key.

    Here rather than in ``continual/stages.py`` (which re-exports it) because validating a config
    needs it, and the config package imports nothing that imports it back.
    """
    stage = config.stages[index]
    merged = {**config.data.model_dump(), **stage.data}
    try:  # the method's own data section (chat / text for cpt and sft, classification for classify …)
        return type(config.data).model_validate(merged)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'data'}: {e['msg']}" for e in err.errors())
        raise ValueError(f"stages[{index}] ({stage.name}).data: {problems}") from None
