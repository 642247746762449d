"""Natural Instructions task files, v1 and v2 (Super-NaturalInstructions).

A source is one or more task JSON files (one task per file; a folder of them).
The schema is detected per file:

- v1 (Mishra et al. 2022, "Cross-Task Generalization via Natural Language
  Crowdsourcing Instructions"): ``Title``, ``Prompt``, ``Definition``,
  ``Things to Avoid``, ``Emphasis & Caution``, ``Examples`` → {``Positive
  Examples``: [{input, output, reason}], ``Negative Examples``: [{input, output,
  reason, suggestion}]}, ``Instances``: [{input, output: [...]}]; a missing
  field is written ``"-"``.
- v2 (Wang et al. 2022, "Super-NaturalInstructions"): ``Definition`` (string or
  list), top-level ``Positive Examples`` / ``Negative Examples`` [{input,
  output, explanation}], ``Instances`` [{input, output: [...]}], and metadata
  (``Categories``, ``Domains``, ...), which is ignored.

Each instance becomes one prompt/completion pair rendered through the same
chat / plain path as ``prompt_completion``. The prompt follows the encoding of
Wang et al. (definition, then demonstrations, then the instance; they report
definition + 2 positive examples as the strongest), in our own wording:

    Definition: <definition>
    Prompt: <v1 prompt>                        (v1, when present)
    Things to avoid: <...>                     (v1, include_avoid_and_emphasis)
    Emphasis and caution: <...>                (v1, include_avoid_and_emphasis)

    Positive example 1:
    Input: ... / Output: ... / Explanation: ...    (explanation: include_explanations)

    Negative example 1 (a wrong answer, do not answer like this):
    Input: ... / Output: ... / Explanation: ... / Suggestion: ...

    Now complete the following example.
    Input: <instance input>
    Output:

Demonstrations are the first ``num_positive`` / ``num_negative`` of the task's
lists, in file order (fewer if the task has fewer). The completion is the
instance's first output; all outputs are kept as the sample's ``references``
(the first is also ``reference``). The human-readable prompt of a generation
sample is the instance input (the full prompt is long and the same for a task).

``max_instances_per_task`` keeps a seeded random subset of each task's
instances (in file order). Splitting by instance holds out ``eval_fraction`` of
every task's instances (seeded per task name); splitting by task holds out
whole tasks, chosen by a seeded shuffle of task names.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.data.formats import split_indices
from tuneforge.data.formats.prompt_completion import PromptCompletion
from tuneforge.data.types import Record

VERSION = 1
MISSING = "-"


@dataclass
class Demo:
    input: str
    output: str
    explanation: str = ""
    suggestion: str = ""  # v1 negative examples only


@dataclass
class Instance:
    input: str
    outputs: list[str]
    where: str


@dataclass
class Task:
    name: str
    where: str
    schema: str  # "v1" | "v2"
    definition: str = ""
    prompt: str = ""
    avoid: str = ""
    emphasis: str = ""
    positives: list[Demo] = field(default_factory=list)
    negatives: list[Demo] = field(default_factory=list)
    instances: list[Instance] = field(default_factory=list)


def detect_schema(data: dict) -> str | None:
    """ "v1", "v2", or None when the object is not a Natural Instructions task."""
    if "Instances" not in data:
        return None
    if isinstance(data.get("Examples"), dict) or "Things to Avoid" in data or "Emphasis & Caution" in data:
        return "v1"
    return "v2"


def _text(value, where: str, name: str, problems: list[str]) -> str:
    """A free-text field: string, list of strings (joined by newlines), "-" or absent."""
    if value is None or value == MISSING:
        return ""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n".join(v for v in value if v != MISSING).strip()
    if isinstance(value, str):
        return value.strip()
    problems.append(f"{where}: {name}: must be a string or a list of strings (got {type(value).__name__})")
    return ""


def _outputs(value, where: str, name: str, problems: list[str]) -> list[str]:
    outputs = [value] if isinstance(value, str) else value
    if not isinstance(outputs, list) or not outputs or not all(isinstance(o, str) and o.strip() for o in outputs):
        problems.append(f"{where}: {name}: must be a non-empty string or a non-empty list of non-empty strings")
        return []
    return outputs


def _demos(value, where: str, name: str, reason_key: str, problems: list[str]) -> list[Demo]:
    if value is None or value == MISSING:
        return []
    if not isinstance(value, list):
        problems.append(f"{where}: {name}: must be a list of {{input, output, {reason_key}}} objects")
        return []
    demos = []
    for i, item in enumerate(value):
        if item == MISSING:
            continue
        if not isinstance(item, dict) or not isinstance(item.get("input"), str):
            problems.append(f"{where}: {name}[{i}].input: missing or not a string")
            continue
        outputs = _outputs(item.get("output"), where, f"{name}[{i}].output", problems)
        if not outputs:
            continue
        demos.append(
            Demo(
                item["input"],
                outputs[0],
                _text(item.get(reason_key), where, f"{name}[{i}].{reason_key}", problems),
                _text(item.get("suggestion"), where, f"{name}[{i}].suggestion", problems),
            )
        )
    return demos


def _task_name(where: str) -> str:
    path, _, index = where.rpartition(":")
    stem = Path(path or where).stem
    return stem if index in ("", "1") else f"{stem}[{index}]"


def parse_task(record: Record, problems: list[str]) -> Task | None:
    """Validate one task object; append ``where: field: problem`` lines and return None if bad."""
    data, where = record.data, record.where
    schema = detect_schema(data)
    if schema is None:
        problems.append(
            f"{where}: Instances: missing; not a Natural Instructions task "
            "(expected Definition, Positive Examples / Examples, and Instances)"
        )
        return None
    before = len(problems)
    task = Task(_task_name(where), where, schema)
    task.definition = _text(data.get("Definition"), where, "Definition", problems)
    if schema == "v1":
        task.prompt = _text(data.get("Prompt"), where, "Prompt", problems)
        task.avoid = _text(data.get("Things to Avoid"), where, "Things to Avoid", problems)
        task.emphasis = _text(data.get("Emphasis & Caution"), where, "Emphasis & Caution", problems)
        examples = data.get("Examples")
        examples = examples if isinstance(examples, dict) else {}
        prefix = "Examples."
        reason = "reason"
    else:
        examples, prefix, reason = data, "", "explanation"
    task.positives = _demos(examples.get("Positive Examples"), where, f"{prefix}Positive Examples", reason, problems)
    task.negatives = _demos(examples.get("Negative Examples"), where, f"{prefix}Negative Examples", reason, problems)
    instances = data.get("Instances")
    if not isinstance(instances, list) or not instances:
        problems.append(f"{where}: Instances: must be a non-empty list of {{input, output}} objects")
        return None
    for i, item in enumerate(instances):
        name = f"Instances[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("input"), str):
            problems.append(f"{where}: {name}.input: missing or not a string")
            continue
        outputs = _outputs(item.get("output"), where, f"{name}.output", problems)
        if outputs:
            task.instances.append(Instance(item["input"], outputs, f"{where}:{name}"))
    return task if len(problems) == before else None


@dataclass(frozen=True)
class PromptOptions:
    """Flat rendering options (from the config's ``natural_instructions`` section)."""

    num_positive: int = 2
    num_negative: int = 0
    include_explanations: bool = False
    include_avoid_and_emphasis: bool = True


def instruction_text(task: Task, options: PromptOptions) -> str:
    """Everything in the prompt before the instance: definition and demonstrations."""
    head = []
    if task.definition:
        head.append(f"Definition: {task.definition}")
    if task.prompt:
        head.append(f"Prompt: {task.prompt}")
    if options.include_avoid_and_emphasis:
        if task.avoid:
            head.append(f"Things to avoid: {task.avoid}")
        if task.emphasis:
            head.append(f"Emphasis and caution: {task.emphasis}")
    blocks = ["\n".join(head)] if head else []
    for i, demo in enumerate(task.positives[: options.num_positive], start=1):
        lines = [f"Positive example {i}:", f"Input: {demo.input}", f"Output: {demo.output}"]
        if options.include_explanations and demo.explanation:
            lines.append(f"Explanation: {demo.explanation}")
        blocks.append("\n".join(lines))
    for i, demo in enumerate(task.negatives[: options.num_negative], start=1):
        lines = [
            f"Negative example {i} (a wrong answer, do not answer like this):",
            f"Input: {demo.input}",
            f"Output: {demo.output}",
        ]
        if options.include_explanations and demo.explanation:
            lines.append(f"Explanation: {demo.explanation}")
        if options.include_explanations and demo.suggestion:
            lines.append(f"Suggestion: {demo.suggestion}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def to_pair(task: Task, instance: Instance, instruction: str) -> PromptCompletion:
    lead = "Now complete the following example.\n" if instruction else ""
    body = f"{lead}Input: {instance.input}\nOutput:"
    prompt = f"{instruction}\n\n{body}" if instruction else body
    return PromptCompletion(
        prompt=prompt,
        completion=instance.outputs[0],
        where=instance.where,
        plain_space=True,  # the prompt ends with "Output:"
        display=instance.input,
        references=list(instance.outputs),
    )


def capped(task: Task, cap: int | None, seed: int) -> list[Instance]:
    """At most ``cap`` instances: a seeded random subset, kept in file order."""
    if cap is None or len(task.instances) <= cap:
        return task.instances
    keep = sorted(random.Random(f"{seed}:{task.name}:cap").sample(range(len(task.instances)), cap))
    return [task.instances[i] for i in keep]


def task_pairs(task: Task, options: PromptOptions, instances: list[Instance]) -> list[PromptCompletion]:
    instruction = instruction_text(task, options)
    return [to_pair(task, instance, instruction) for instance in instances]


def split_tasks(
    tasks: list[Task], *, split_by: str, eval_fraction: float, seed: int, cap: int | None
) -> tuple[list[tuple[Task, list[Instance]]], list[tuple[Task, list[Instance]]]]:
    """Train and held-out ``(task, instances)`` lists, by instance or by whole task."""
    if split_by == "task":
        order = sorted(range(len(tasks)), key=lambda i: tasks[i].name)
        train_idx, eval_idx = split_indices(len(order), eval_fraction, seed)
        pick = lambda idx: [(tasks[order[i]], capped(tasks[order[i]], cap, seed)) for i in idx]  # noqa: E731
        return pick(train_idx), pick(eval_idx)
    train, held = [], []
    for task in tasks:
        instances = capped(task, cap, seed)
        train_idx, eval_idx = split_indices(len(instances), eval_fraction, f"{seed}:{task.name}")
        train.append((task, [instances[i] for i in train_idx]))
        if eval_idx:
            held.append((task, [instances[i] for i in eval_idx]))
    return train, held
