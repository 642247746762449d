"""The run config of `method: ppo`: prompts, sampling, reward sources and the PPO update.

One training step is one rollout: ``ppo.rollout_batch_size`` prompts are sampled
(``ppo.group_size`` responses each), scored, and trained on for ``ppo.ppo_epochs``
epochs of minibatches of ``ppo.minibatch_size`` responses; ``training.max_steps``
counts rollouts (without it, ``training.epochs`` passes over the prompts).
``training.batch_size`` is the micro-batch (responses per forward pass); the
micro-batches of one minibatch are accumulated into one optimizer step.
Defaults follow ``METHODS.md`` ("RLHF with PPO") and Huang et al. 2024, "The N
Implementation Details of RLHF with PPO".
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ...config.schema import RunBase, Section, TrainingConfig


class PromptData(Section):
    train: str | list[str] = Field(
        description="JSONL/JSON/CSV/Parquet file(s), folder, glob or hub dataset of "
        "prompts: {prompt: str} or {messages: [...]} ending with a user turn."
    )
    eval: str | list[str] | None = Field(None, description="Held-out prompts for the before / after evaluation.")
    eval_fraction: float = Field(0.0, ge=0, lt=1, description="Held-out share of train when no eval source is given.")
    template: Literal["auto", "chat", "plain"] = Field(
        "auto",
        description="auto: the tokenizer's chat template if it has one; plain: a string prompt is "
        "continued as it is (e.g. the prefix of a review), messages use the plain 'User:' template.",
    )
    system_prompt: str | None = None
    max_prompt_length: int = Field(256, ge=1, description="Longer prompts keep their last tokens.")
    max_examples: int | None = Field(None, ge=1, description="Use at most this many training prompts.")
    seed: int = 0


class GenerationSettings(Section):
    """Pure sampling, as in the PPO papers: top_k 0 and top_p 1 disable truncation, so the log-probs
    PPO trains on are those of the distribution the responses were sampled from."""

    max_new_tokens: int = Field(64, ge=1)
    temperature: float = Field(
        1.0,
        gt=0,
        description="Logits are divided by it in sampling and in every log-prob PPO computes (policy, reference).",
    )
    top_k: int = Field(0, ge=0, description="0: off.")
    top_p: float = Field(1.0, gt=0, le=1, description="1.0: off.")


class RewardSource(Section):
    """One of ``model``, ``function`` or ``classifier``; the sequence score is Σ weight · source."""

    model: str | None = Field(
        None,
        description="A reward model: a `method: reward` run folder, its model/ or "
        "adapter/ folder, or any AutoModelForSequenceClassification folder with one label.",
    )
    function: str | None = Field(
        None,
        description="'package.module:fn' or 'path/to/file.py:fn', called as "
        "fn(prompts: list[str], responses: list[str]) -> list[float].",
    )
    classifier: str | None = Field(None, description="A `method: classify` run folder (or its model/ / adapter/).")
    label: str | None = Field(None, description="classifier: the label whose score is the reward.")
    score: Literal["probability", "logprob"] = Field("probability", description="classifier: p(label) or log p(label).")
    text: Literal["prompt_and_response", "response"] = Field(
        "prompt_and_response", description="classifier: what it reads (prompt + response suits continuations)."
    )
    weight: float = 1.0
    name: str | None = Field(None, description="Name in the logs (default: from the path or function).")

    @model_validator(mode="after")
    def _one_kind(self):
        given = [k for k in ("model", "function", "classifier") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                "each reward source sets exactly one of model, function or classifier "
                f"(got {', '.join(given) or 'none'}); write e.g. {{model: runs/reward}}"
            )
        if self.classifier and not self.label:
            raise ValueError(
                f"classifier {self.classifier}: set label: to the class whose score is the reward "
                "(e.g. label: positive)"
            )
        changed = [k for k in ("label", "score", "text") if getattr(self, k) != type(self).model_fields[k].default]
        if changed and not self.classifier:
            raise ValueError(f"{', '.join(changed)} only apply to a classifier source")
        return self

    @property
    def kind(self) -> str:
        return "model" if self.model else "function" if self.function else "classifier"

    @property
    def spec(self) -> str:
        return self.model or self.function or self.classifier or ""


class RewardConfig(Section):
    sources: list[RewardSource] = Field(default_factory=list)
    missing_eos_penalty: float | None = Field(
        None,
        ge=0,
        description="Subtracted from the score of a response that reached max_new_tokens without "
        "an end-of-sequence token (the no-EOS penalty of Huang et al. 2024).",
    )


class AdaptiveKL(Section):
    """Ziegler et al. 2019's proportional controller of the KL coefficient."""

    target: float = Field(6.0, gt=0, description="Sequence KL (nats) to hold.")
    horizon: int = Field(10000, ge=1, description="In responses: how fast the coefficient moves.")


class PpoSection(Section):
    rollout_batch_size: int = Field(16, ge=1, description="Prompts sampled per step.")
    group_size: int = Field(1, ge=1, description="Responses per prompt (≥ 2 for grpo / rloo).")
    ppo_epochs: int = Field(4, ge=1, description="Passes over each rollout.")
    minibatch_size: int | None = Field(
        None,
        ge=1,
        description="Responses per optimizer step (default: the whole rollout, one optimizer step per epoch).",
    )
    clip: float = Field(0.2, gt=0, description="ε of the clipped ratio.")
    value_clip: float = Field(0.2, gt=0, description="ε_v of the clipped value loss.")
    vf_coef: float = Field(0.1, ge=0)
    kl_coef: float = Field(0.05, ge=0, description="β of the per-token KL penalty (the start value when adaptive).")
    kl_estimator: Literal["k1", "k3"] = "k1"
    adaptive_kl: AdaptiveKL | None = None
    gamma: float = Field(1.0, ge=0, le=1)
    lam: float = Field(0.95, ge=0, le=1)
    whiten_advantages: bool = Field(True, description="gae: whiten advantages over each rollout's tokens.")
    advantage: Literal["gae", "grpo", "rloo"] = Field(
        "gae", description="gae: value head + GAE; grpo / rloo: group-relative, no value head."
    )
    entropy_coef: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _groups(self):
        if self.advantage != "gae" and self.group_size < 2:
            raise ValueError(
                f"advantage {self.advantage} compares responses to the same prompt: set group_size: "
                "to 2 or more (e.g. 4)"
            )
        rollout = self.rollout_batch_size * self.group_size
        if self.minibatch_size is not None and self.minibatch_size > rollout:
            raise ValueError(
                f"minibatch_size {self.minibatch_size} is larger than a rollout "
                f"({self.rollout_batch_size} prompts × {self.group_size} = {rollout} responses)"
            )
        return self


class PpoTraining(TrainingConfig):
    learning_rate: float = Field(
        1e-5, gt=0, description="PPO wants small steps: 1e-6 … 1e-5 full, 1e-5 … 1e-4 with an adapter (METHODS.md)."
    )


class PpoEval(Section):
    num_prompts: int | None = Field(None, ge=1, description="Held-out prompts to use (default all).")
    batch_size: int = Field(8, ge=1, description="Prompts per generation / scoring batch.")
    seed: int = Field(0, description="Sampling seed: before and after sample with the same one.")
    before: bool = True
    samples_in_report: int = Field(6, ge=0)


class PpoConfig(RunBase):
    """RLHF with PPO (Schulman et al. 2017; Ziegler et al. 2019; Ouyang et al. 2022)."""

    method: Literal["ppo"]
    data: PromptData
    training: PpoTraining = Field(default_factory=PpoTraining)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    ppo: PpoSection = Field(default_factory=PpoSection)
    eval: PpoEval | None = Field(default_factory=PpoEval)

    @model_validator(mode="after")
    def _has_reward(self):
        if not self.reward.sources:
            raise ValueError(
                "reward.sources: PPO needs at least one reward source; write e.g. reward: {sources: "
                "[{model: runs/reward}]}, [{function: rewards.py:score}] or [{classifier: "
                "runs/sentiment, label: positive}]"
            )
        return self
