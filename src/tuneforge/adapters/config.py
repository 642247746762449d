"""The `adapter:` section: one pydantic class per method, discriminated by ``type:``.

The taxonomy follows Lialin et al. 2023, "Scaling Down to Scale Up: A Guide to
Parameter-Efficient Fine-Tuning" (arXiv 2303.15647):

- reparametrisation: ``lora`` (+ rsLoRA, DoRA, PiSSA / OLoRA / LoftQ / gaussian
  init), ``loha``, ``lokr``, ``vera``, ``adalora``, ``oft``;
- additive: ``bottleneck`` (series / parallel, ours), ``prompt_tuning``,
  ``prefix_tuning``, ``p_tuning``, ``ia3``;
- selective: ``bitfit``, ``layernorm``, ``partial``;
- hybrid: ``mam`` (parallel adapter + prefix tuning).

Defaults are the papers' / peft's where those suit Llama-family models; each
class says where it departs. ``adapter: {r: 8}`` without a ``type`` is LoRA, as
before this section had types.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

LINEAR_TARGETS = "all-linear"


class _Adapter(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LoraConfig(_Adapter):
    """LoRA (Hu et al. 2021, arXiv 2106.09685): ``h = W0 x + (α/r)·B A x``, B = 0 at init.

    rsLoRA (Kalajdzievski 2023) scales by α/√r; DoRA (Liu et al. 2024) adds a
    learned magnitude per output row. ``init``: ``default`` (B = 0, the base
    model exactly), ``gaussian``, ``pissa`` (Meng et al. 2024: principal
    singular vectors; changes the base weights it keeps), ``olora`` (Büyükakyüz
    2024: QR of the weights). LoftQ (Li et al. 2023) is not offered: peft runs it
    either on CUDA only (``replace_lora_weights_loftq``) or by rewriting the base
    weights, which would then have to ship with the adapter (docs/PEFT.md).
    """

    type: Literal["lora"] = "lora"
    r: int = Field(16, ge=1)
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = LINEAR_TARGETS
    use_rslora: bool = False
    use_dora: bool = False
    init: Literal["default", "gaussian", "pissa", "olora"] = "default"


class LohaConfig(_Adapter):
    """LoHa (Yeh et al. 2023, LyCORIS, arXiv 2309.14859): ΔW = (B1 A1) ⊙ (B2 A2), Hadamard product of two low-rank products."""

    type: Literal["loha"]
    r: int = Field(8, ge=1)
    alpha: float = Field(8, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1, description="Module dropout (the whole adapter off for a step).")
    target_modules: list[str] | Literal["all-linear"] = LINEAR_TARGETS


class LokrConfig(_Adapter):
    """LoKr (Yeh et al. 2023; KronA, Edalati et al. 2022): ΔW = C ⊗ (B A), a Kronecker product."""

    type: Literal["lokr"]
    r: int = Field(8, ge=1)
    alpha: float = Field(8, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1, description="Module dropout (the whole adapter off for a step).")
    target_modules: list[str] | Literal["all-linear"] = LINEAR_TARGETS
    decompose_factor: int = Field(-1, description="Kronecker factor size; -1 picks the most balanced.")


class VeraConfig(_Adapter):
    """VeRA (Kopiczko et al. 2024, arXiv 2310.11454): frozen random A, B shared by all layers; trains two scaling vectors per layer."""

    type: Literal["vera"]
    r: int = Field(256, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = LINEAR_TARGETS
    d_initial: float = Field(0.1, gt=0, description="Initial value of the d scaling vector.")
    projection_seed: int = Field(0, description="Seed of the frozen random projections (saved with the adapter).")


class AdaloraConfig(_Adapter):
    """AdaLoRA (Zhang et al. 2023, arXiv 2303.10512): SVD-form LoRA whose rank budget is pruned by importance.

    The budget schedule (warm-up ``tinit`` steps at ``init_r``, cubic decay to
    ``target_r``, final ``tfinal`` steps fixed) runs over the run's total step
    count, which tuneforge passes in; ``tinit + tfinal`` must leave steps to prune in.
    """

    type: Literal["adalora"]
    init_r: int = Field(12, ge=1)
    target_r: int = Field(8, ge=1)
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = LINEAR_TARGETS
    tinit: float = Field(0.1, ge=0, lt=1, description="Warm-up share of the steps before pruning starts.")
    tfinal: float = Field(0.2, ge=0, lt=1, description="Final share of the steps with the budget fixed.")
    delta_t: int = Field(1, ge=1, description="Steps between budget allocations.")
    beta1: float = Field(0.85, gt=0, lt=1)
    beta2: float = Field(0.85, gt=0, lt=1)
    orth_reg_weight: float = Field(0.5, ge=0)

    @model_validator(mode="after")
    def _ranks(self):
        if self.target_r > self.init_r:
            raise ValueError(f"target_r ({self.target_r}) must not exceed init_r ({self.init_r})")
        if self.tinit + self.tfinal >= 1:
            raise ValueError("tinit + tfinal must be below 1: no steps would be left to prune the rank in")
        return self


class OftConfig(_Adapter):
    """OFT (Qiu et al. 2023, arXiv 2306.07280): a learned block-diagonal orthogonal rotation of each weight's rows."""

    type: Literal["oft"]
    block_size: int = Field(32, ge=1, description="Size of each orthogonal block (must divide the layer width).")
    target_modules: list[str] | Literal["all-linear"] = LINEAR_TARGETS
    coft: bool = Field(False, description="Constrained OFT: keep the rotation within eps of the identity.")
    eps: float = Field(6e-5, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1, description="Multiplicative dropout on the blocks.")


class Ia3Config(_Adapter):
    """(IA)³ (Liu et al. 2022, arXiv 2205.05638): learned vectors, initialised to 1, scaling keys, values and the FFN input of the down projection."""

    type: Literal["ia3"]
    target_modules: list[str] = Field(default_factory=lambda: ["k_proj", "v_proj", "down_proj"])
    feedforward_modules: list[str] = Field(
        default_factory=lambda: ["down_proj"],
        description="Targets whose input (not output) is scaled; must be a subset of target_modules.",
    )

    @model_validator(mode="after")
    def _subset(self):
        extra = sorted(set(self.feedforward_modules) - set(self.target_modules))
        if extra:
            raise ValueError(f"feedforward_modules {extra} are not in target_modules")
        return self


class BottleneckConfig(_Adapter):
    """Bottleneck adapters (Houlsby et al. 2019, arXiv 1902.00751; He et al. 2022, arXiv 2110.04366),
    in the two placements LLM-Adapters (Hu et al. 2023, arXiv 2304.01933) found best:

    - ``series``: after the MLP, ``h ← m + s·W_up f(W_down m)`` with ``m = MLP(x)``;
    - ``parallel``: beside the MLP, ``h ← MLP(x) + s·W_up f(W_down x)``.

    W_up starts at zero, so the adapted model starts exactly at the base model
    (near-identity init). LLM-Adapters used bottleneck 256 on 4096-wide models;
    the default 64 keeps a similar share of parameters on small models.
    """

    type: Literal["bottleneck"]
    placement: Literal["series", "parallel"] = "parallel"
    size: int = Field(64, ge=1, description="Bottleneck width.")
    activation: Literal["relu", "gelu", "silu", "tanh"] = "relu"
    scaling: float = Field(1.0, gt=0, description="s: multiplies the adapter's output.")
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["mlp"], description="Submodules (by name suffix) the adapter goes after / beside."
    )
    init: Literal["identity", "random"] = Field(
        "identity", description="identity: W_up = 0 (the base model exactly). random: both matrices random (tests)."
    )


class PromptTuningConfig(_Adapter):
    """Prompt tuning (Lester et al. 2021, arXiv 2104.08691): ``num_virtual_tokens`` trainable input embeddings prepended to every sequence."""

    type: Literal["prompt_tuning"]
    num_virtual_tokens: int = Field(20, ge=1)
    init: Literal["random", "text"] = "random"
    init_text: str | None = Field(
        None, description="init: text — the prompt whose token embeddings start the soft prompt."
    )

    @model_validator(mode="after")
    def _text(self):
        if self.init == "text" and not self.init_text:
            raise ValueError("init: text needs init_text (e.g. 'Classify the sentiment of this review:')")
        if self.init != "text" and self.init_text:
            raise ValueError("init_text is only used with init: text")
        return self


class PrefixTuningConfig(_Adapter):
    """Prefix tuning (Li & Liang 2021, arXiv 2101.00190): trainable key/value prefixes at every layer.

    With grouped-query attention each prefix is ``num_key_value_heads × head_dim``
    wide. ``projection: true`` trains them through the paper's reparametrisation
    MLP (more parameters while training, the same prefixes after).
    """

    type: Literal["prefix_tuning"]
    num_virtual_tokens: int = Field(20, ge=1)
    projection: bool = False
    projection_hidden_size: int = Field(512, ge=1)
    init: Literal["real_tokens", "random"] | None = Field(
        None,
        description="real_tokens: the prefixes start as the keys / values of real tokens (Li & Liang 2021), "
        "so training starts from the base model's behaviour; random: peft's N(0, 1) start. "
        "Default: real_tokens, or random with projection: true (the MLP's output has no such start).",
    )

    @model_validator(mode="after")
    def _init(self):
        if self.projection and self.init == "real_tokens":
            raise ValueError("init: real_tokens needs projection: false (with the MLP the prefixes are its output)")
        return self


class PTuningConfig(_Adapter):
    """P-tuning (Liu et al. 2021, "GPT Understands, Too", arXiv 2103.10385): virtual token embeddings produced by a small prompt encoder."""

    type: Literal["p_tuning"]
    num_virtual_tokens: int = Field(20, ge=1)
    encoder: Literal["mlp", "lstm"] = "mlp"
    encoder_hidden_size: int = Field(128, ge=1)


class BitfitConfig(_Adapter):
    """BitFit (Ben Zaken et al. 2022, arXiv 2106.10199): train the bias terms only.

    Llama-family models have no biases; validation refuses such a model rather
    than train nothing.
    """

    type: Literal["bitfit"]


class LayernormConfig(_Adapter):
    """Layer-norm tuning (Zhao et al. 2024, arXiv 2312.11420): train the normalisation layers' weights only (peft ``LN_TUNING``)."""

    type: Literal["layernorm"]
    target_modules: list[str] | None = Field(None, description="Norm module names; default: every norm layer.")


class PartialConfig(_Adapter):
    """Selective fine-tuning of part of the network (Lialin et al. 2023, §"selective"; Lee et al. 2019 "what would Elsa do"):
    the top ``top_k_layers`` blocks, and/or every parameter whose name matches one of ``patterns`` (fnmatch globs)."""

    type: Literal["partial"]
    top_k_layers: int | None = Field(None, ge=1, description="Train the last k transformer blocks.")
    patterns: list[str] = Field(default_factory=list, description="Globs over parameter names, e.g. '*.mlp.*'.")
    include_final_norm: bool = Field(True, description="With top_k_layers: also train the final norm.")

    @model_validator(mode="after")
    def _something(self):
        if self.top_k_layers is None and not self.patterns:
            raise ValueError("set top_k_layers, patterns, or both: otherwise nothing would be trained")
        return self


class MamConfig(_Adapter):
    """Mix-and-match adapter (He et al. 2022, "Towards a Unified View of Parameter-Efficient Transfer Learning",
    arXiv 2110.04366): a scaled parallel adapter beside the MLP plus prefix tuning in attention."""

    type: Literal["mam"]
    size: int = Field(64, ge=1, description="Parallel adapter bottleneck width.")
    scaling: float = Field(4.0, gt=0, description="s of the parallel adapter (the paper's 4).")
    activation: Literal["relu", "gelu", "silu", "tanh"] = "relu"
    num_virtual_tokens: int = Field(30, ge=1, description="Prefix length (the paper's 30).")
    projection: bool = False
    projection_hidden_size: int = Field(512, ge=1)
    init: Literal["real_tokens", "random"] | None = Field(
        None, description="The prefix half's start, as for prefix_tuning (default: real_tokens without projection)."
    )

    @model_validator(mode="after")
    def _init(self):
        if self.projection and self.init == "real_tokens":
            raise ValueError("init: real_tokens needs projection: false (with the MLP the prefixes are its output)")
        return self


def _adapter_tag(value) -> str:
    if isinstance(value, dict):
        return value.get("type", "lora")
    return getattr(value, "type", "lora")


AdapterConfig = Annotated[
    Annotated[LoraConfig, Tag("lora")]
    | Annotated[LohaConfig, Tag("loha")]
    | Annotated[LokrConfig, Tag("lokr")]
    | Annotated[VeraConfig, Tag("vera")]
    | Annotated[AdaloraConfig, Tag("adalora")]
    | Annotated[OftConfig, Tag("oft")]
    | Annotated[Ia3Config, Tag("ia3")]
    | Annotated[BottleneckConfig, Tag("bottleneck")]
    | Annotated[PromptTuningConfig, Tag("prompt_tuning")]
    | Annotated[PrefixTuningConfig, Tag("prefix_tuning")]
    | Annotated[PTuningConfig, Tag("p_tuning")]
    | Annotated[BitfitConfig, Tag("bitfit")]
    | Annotated[LayernormConfig, Tag("layernorm")]
    | Annotated[PartialConfig, Tag("partial")]
    | Annotated[MamConfig, Tag("mam")],
    Discriminator(_adapter_tag),
]


def adapter_class(type_name: str) -> type[_Adapter]:
    """The config class for an ``adapter.type`` value."""
    return _CLASSES[type_name]


_CLASSES = {
    cls.model_fields["type"].annotation.__args__[0]: cls
    for cls in (
        LoraConfig,
        LohaConfig,
        LokrConfig,
        VeraConfig,
        AdaloraConfig,
        OftConfig,
        Ia3Config,
        BottleneckConfig,
        PromptTuningConfig,
        PrefixTuningConfig,
        PTuningConfig,
        BitfitConfig,
        LayernormConfig,
        PartialConfig,
        MamConfig,
    )
}

ADAPTER_TYPES = (
    "lora",
    "loha",
    "lokr",
    "vera",
    "adalora",
    "oft",
    "ia3",
    "bottleneck",
    "prompt_tuning",
    "prefix_tuning",
    "p_tuning",
    "bitfit",
    "layernorm",
    "partial",
    "mam",
)
SOFT_PROMPTS = ("prompt_tuning", "prefix_tuning", "p_tuning", "mam")
SELECTIVE = ("bitfit", "partial")  # train base weights in place: the output is a full model folder
OURS = ("bottleneck", "mam")  # adapters peft does not implement
MERGEABLE = ("lora", "loha", "lokr", "vera", "adalora", "oft", "ia3", "layernorm")
