"""Scorers: pure functions ``score(prediction, reference) -> float`` in [0, 1].

Built-ins live in ``SCORERS``; ``resolve_scorer`` also loads a user's plug-in
from ``"package.module:function"`` or ``"path/to/file.py:function"``.

Decisions where a scorer could go either way (tests pin each one):

* ``normalized_match`` is SQuAD's answer normalisation: lowercase, drop ASCII
  punctuation, drop the articles a/an/the, collapse whitespace.
* ``contains`` matches on word boundaries of the normalised texts, so
  reference "cat" is not found in "concatenate". An empty (normalised)
  reference is only "contained" in an empty prediction; otherwise every
  prediction would score 1.
* ``json_field_accuracy`` is strict about JSON *types*, because whatever reads
  the model's JSON downstream is: the string ``"42"`` does not match the number
  ``42``, and ``true`` does not match ``1``. Numbers compare numerically
  (``1 == 1.0``), strings ignore case and whitespace runs, lists and objects
  compare after normalising their contents the same way (list order matters).
  Only real JSON is accepted (no single quotes or trailing commas).
* The tool-call scorers read calls with ``data.tools.parse_tool_calls``
  (``<tool_call>{...}</tool_call>`` blocks, or an answer that is one JSON call)
  from the prediction and from the reference. ``tool_call_accuracy``: every
  call is valid JSON with object arguments, and the calls match the
  reference's as a multiset (order free) on function name and arguments,
  arguments compared as ``json_field_accuracy`` compares values;
  ``tool_call_name``: the same function names; ``tool_call_valid``: at least
  one call and no broken ``<tool_call>`` block. A reference without a call (a
  plain answer) scores 1 only when the prediction calls nothing either.
* A sample with several acceptable answers (a Natural Instructions instance
  with more than one output) scores the best of them: ``best_reference`` runs
  the scorer against each one. Scorers themselves, plug-ins included, only
  ever see one reference.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import json
import math
import numbers
import re
import string
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from tuneforge.data.tools import parse_tool_calls

Scorer = Callable[[str, str], float]

# --------------------------------------------------------------------------- text

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_text(text: str) -> str:
    """SQuAD normalisation: lowercase, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    return float(prediction.strip() == reference.strip())


def normalized_match(prediction: str, reference: str) -> float:
    return float(normalize_text(prediction) == normalize_text(reference))


def contains(prediction: str, reference: str) -> float:
    ref, pred = normalize_text(reference), normalize_text(prediction)
    if not ref:
        return float(not pred)
    # Pad with spaces so the match lands on whole words of the normalised text.
    return float(f" {ref} " in f" {pred} ")


# --------------------------------------------------------------------------- JSON

_DECODER = json.JSONDecoder()


def extract_json_object(text: str) -> dict | None:
    """The first JSON object in ``text`` (around it: prose, code fences), or None.

    Tries every ``{`` left to right, so a stray brace in the prose before the
    object does not hide it; an object nested in an outer one is never returned
    on its own because the outer one parses first.
    """
    for match in re.finditer(r"\{", text):
        try:
            value, _ = _DECODER.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _normalize_json(value):
    """Canonical form for comparison: see the module docstring for the rules."""
    if isinstance(value, bool) or value is None:
        return value  # before numbers: bool is an int subclass in Python
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        return " ".join(value.lower().split())
    if isinstance(value, list):
        return [_normalize_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _normalize_json(v) for k, v in value.items()}
    return value


def json_values_equal(predicted, expected) -> bool:
    a, b = _normalize_json(predicted), _normalize_json(expected)
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, (list, dict)):
        return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    return a == b


def _reference_object(reference: str) -> dict:
    try:
        value = json.loads(reference)
    except json.JSONDecodeError as err:
        raise ValueError(f"json_field_accuracy: reference is not valid JSON ({err}): {reference[:200]!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f"json_field_accuracy: reference must be a JSON object, got {type(value).__name__}")
    return value


def json_field_breakdown(prediction: str, reference: str) -> dict[str, bool]:
    """Per top-level field of the reference: did the prediction get it right?

    An unparseable prediction gets every field wrong. Raises ValueError when the
    reference itself is not a JSON object (a data problem, not a model one).
    """
    expected = _reference_object(reference)
    predicted = extract_json_object(prediction)
    if predicted is None:
        return dict.fromkeys(expected, False)
    return {key: key in predicted and json_values_equal(predicted[key], value) for key, value in expected.items()}


def json_field_accuracy(prediction: str, reference: str) -> float:
    fields = json_field_breakdown(prediction, reference)
    if not fields:  # reference is {}: any object is right, anything else is not
        return float(extract_json_object(prediction) is not None)
    return sum(fields.values()) / len(fields)


def json_field_errors(pairs: Iterable[tuple[str, str]]) -> dict[str, dict[str, int]]:
    """``{field: {"wrong": n, "total": m}}`` over (prediction, reference) pairs,
    most often wrong first: which fields the model struggles with."""
    counts: dict[str, dict[str, int]] = {}
    for prediction, reference in pairs:
        for key, ok in json_field_breakdown(prediction, reference).items():
            entry = counts.setdefault(key, {"wrong": 0, "total": 0})
            entry["total"] += 1
            entry["wrong"] += not ok
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1]["wrong"], kv[0])))


# --------------------------------------------------------------------------- tool calls


def tool_call_breakdown(prediction: str, reference: str) -> dict[str, bool]:
    """``{"valid", "name", "arguments"}``: the three tests behind the tool-call scorers (module docstring)."""
    expected, predicted = parse_tool_calls(reference), parse_tool_calls(prediction)
    if not expected.calls:
        quiet = not predicted.calls and not predicted.broken
        return {"valid": quiet, "name": quiet, "arguments": quiet}
    valid = bool(predicted.calls) and not predicted.broken
    names = sorted(c["name"] for c in predicted.calls) == sorted(c["name"] for c in expected.calls)
    left = list(predicted.calls)
    for call in expected.calls:
        match = next(
            (p for p in left if p["name"] == call["name"] and json_values_equal(p["arguments"], call["arguments"])),
            None,
        )
        if match is None:
            break
        left.remove(match)
    else:
        return {"valid": valid, "name": names, "arguments": valid and not left}
    return {"valid": valid, "name": names, "arguments": False}


def tool_call_accuracy(prediction: str, reference: str) -> float:
    return float(tool_call_breakdown(prediction, reference)["arguments"])


def tool_call_name(prediction: str, reference: str) -> float:
    return float(tool_call_breakdown(prediction, reference)["name"])


def tool_call_valid(prediction: str, reference: str) -> float:
    return float(tool_call_breakdown(prediction, reference)["valid"])


# --------------------------------------------------------------------------- several references


def best_reference(scorer: Scorer, prediction: str, references: Sequence[str]) -> tuple[float, str]:
    """``(score, reference)`` for the acceptable answer the prediction matches best.

    Ties go to the earlier reference, so the primary answer (listed first) is the
    one named whenever it does as well as any other.
    """
    if not references:
        raise ValueError("best_reference: no references to score against")
    best_score, best = float(scorer(prediction, references[0])), references[0]
    for reference in references[1:]:
        score = float(scorer(prediction, reference))
        if score > best_score:
            best_score, best = score, reference
    return best_score, best


# --------------------------------------------------------------------------- registry

SCORERS: dict[str, Scorer] = {
    "exact_match": exact_match,
    "normalized_match": normalized_match,
    "contains": contains,
    "json_field_accuracy": json_field_accuracy,
    "tool_call_accuracy": tool_call_accuracy,
    "tool_call_name": tool_call_name,
    "tool_call_valid": tool_call_valid,
}


def resolve_scorer(spec: str) -> Scorer:
    """A built-in scorer by name, or a plug-in ``module:function`` / ``file.py:function``.

    Plug-ins are wrapped so a non-numeric return value fails with the plug-in's
    name instead of somewhere inside a mean. Their values are not clamped: a
    plug-in may use another scale, and the report shows what it returns.
    """
    if spec in SCORERS:
        return SCORERS[spec]
    if ":" not in spec:
        close = difflib.get_close_matches(spec, SCORERS, n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(
            f"unknown scorer '{spec}'.{hint} Built-in scorers: {', '.join(SCORERS)}; "
            "or a plug-in 'package.module:function' or 'path/to/file.py:function'."
        )
    func = load_function(spec)
    _check_callable(func, spec)
    return _checked(func, spec)


def load_function(spec: str, *, what: str = "scorer plug-in"):
    """``package.module:function`` or ``path/to/file.py:function`` → the object it names.

    ``what`` names it in errors (ValueError): "scorer plug-in", "reward function"…
    """
    # Split at the last colon: a Windows path ("C:\\x\\s.py:f") has a colon of its own.
    where, _, name = spec.rpartition(":")
    if not where or not name:
        raise ValueError(f"{what} '{spec}' must look like 'package.module:function' or 'file.py:function'")
    try:
        module = _load_file(where, spec) if _looks_like_path(where) else _load_module(where, spec)
    except ValueError as err:
        raise ValueError(str(err).replace("scorer plug-in", what)) from None
    func = getattr(module, name, None)
    if func is None:
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise ValueError(f"{what} '{spec}': '{where}' has no '{name}' (callables there: {', '.join(found) or 'none'})")
    return func


def _looks_like_path(where: str) -> bool:
    return where.endswith(".py") or "/" in where or "\\" in where


def _load_module(dotted: str, spec: str):
    try:
        return importlib.import_module(dotted)
    except ImportError as err:
        raise ValueError(f"scorer plug-in '{spec}': cannot import module '{dotted}': {err}") from err


def _load_file(path_text: str, spec: str):
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise ValueError(f"scorer plug-in '{spec}': file not found: {path.resolve()}")
    # A name derived from the full path: two plug-in files both called scorers.py
    # must not replace each other in sys.modules.
    module_name = "tuneforge_scorer_" + re.sub(r"\W", "_", str(path.resolve()))
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"scorer plug-in '{spec}': cannot load {path} as Python")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up here
    try:
        module_spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[module_name]
        raise ValueError(f"scorer plug-in '{spec}': importing {path} failed: {type(err).__name__}: {err}") from err
    return module


def _check_callable(func, spec: str) -> None:
    if not callable(func):
        raise ValueError(
            f"scorer plug-in '{spec}' is a {type(func).__name__}, not a function; "
            "it must be callable as fn(prediction: str, reference: str) -> float"
        )
    try:
        inspect.signature(func).bind("prediction", "reference")
    except TypeError as err:
        raise ValueError(f"scorer plug-in '{spec}' cannot be called as fn(prediction, reference): {err}") from None
    except ValueError:
        pass  # no introspectable signature (some builtins): let the call decide


def _checked(func, spec: str) -> Scorer:
    def scorer(prediction: str, reference: str) -> float:
        value = func(prediction, reference)
        if not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            raise ValueError(f"scorer plug-in '{spec}' returned {value!r}; it must return a finite number")
        return float(value)

    scorer.__name__ = getattr(func, "__name__", spec)
    scorer.__doc__ = func.__doc__
    return scorer
