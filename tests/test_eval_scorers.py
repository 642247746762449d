"""Scorers against hand-computed values, and plug-in resolution failure modes."""

from __future__ import annotations

import pytest

from tuneforge.eval.scorers import (
    SCORERS,
    contains,
    exact_match,
    extract_json_object,
    json_field_accuracy,
    json_field_breakdown,
    json_field_errors,
    normalize_text,
    normalized_match,
    resolve_scorer,
)


def test_exact_match_strips_only_surrounding_whitespace():
    assert exact_match("  Paris\n", "Paris") == 1.0
    assert exact_match("paris", "Paris") == 0.0
    assert exact_match("Par is", "Paris") == 0.0


def test_normalize_text_is_squad_style():
    assert normalize_text("  The  Eiffel-Tower, in Paris!  ") == "eiffeltower in paris"
    assert normalize_text("An apple a day") == "apple day"
    # articles only as whole words: "theory" keeps its "the"
    assert normalize_text("Theory") == "theory"


def test_normalized_match():
    assert normalized_match("the Paris.", "paris") == 1.0
    assert normalized_match("Paris, France", "Paris") == 0.0


def test_contains_on_word_boundaries():
    assert contains("I think it is Paris, France.", "paris") == 1.0
    assert contains("concatenate", "cat") == 0.0  # not a word of the prediction
    assert contains("New York City", "new york") == 1.0
    # an empty reference is contained only in an empty prediction
    assert contains("", "The.") == 1.0
    assert contains("anything", "") == 0.0


REF = '{"name": "Ada Lovelace", "year": 1843, "tags": ["Math", "poetry"], "ok": true}'


def test_json_field_accuracy_all_right_with_surrounding_text_and_fence():
    pred = 'Sure! {not json} Here it is:\n```json\n{"ok": true, "year": 1843.0, "name": " ada  LOVELACE", "tags": ["math", "Poetry"]}\n```\nBye.'
    assert json_field_accuracy(pred, REF) == 1.0


def test_json_field_accuracy_partial_and_missing_fields():
    # name right, year wrong, tags missing, ok right -> 2 of 4
    pred = '{"name": "Ada Lovelace", "year": 1842, "ok": true, "extra": 1}'
    assert json_field_accuracy(pred, REF) == 0.5
    assert json_field_breakdown(pred, REF) == {"name": True, "year": False, "tags": False, "ok": True}


def test_json_types_are_strict():
    # documented decision: a numeric string is not the number, true is not 1
    assert json_field_accuracy('{"n": "42"}', '{"n": 42}') == 0.0
    assert json_field_accuracy('{"n": 42.0}', '{"n": 42}') == 1.0
    assert json_field_accuracy('{"b": 1}', '{"b": true}') == 0.0
    assert json_field_accuracy('{"x": null}', '{"x": null}') == 1.0
    # list order matters; nested values are normalised the same way
    assert json_field_accuracy('{"l": [2, 1]}', '{"l": [1, 2]}') == 0.0
    assert json_field_accuracy('{"d": {"b": 1.0, "a": "X"}}', '{"d": {"a": "x", "b": 1}}') == 1.0


def test_json_unparseable_prediction_scores_zero():
    assert json_field_accuracy("no json here", REF) == 0.0
    assert json_field_accuracy("{'name': 'Ada'}", REF) == 0.0  # single quotes are not JSON
    assert json_field_accuracy("[1, 2]", '{"a": 1}') == 0.0
    assert json_field_accuracy('{"a": 1', '{"a": 1}') == 0.0  # truncated


def test_json_empty_reference_object():
    assert json_field_accuracy("{}", "{}") == 1.0
    assert json_field_accuracy("nothing", "{}") == 0.0


def test_json_bad_reference_is_an_error():
    with pytest.raises(ValueError, match="reference is not valid JSON"):
        json_field_accuracy("{}", "Paris")
    with pytest.raises(ValueError, match="must be a JSON object"):
        json_field_accuracy("{}", "[1]")


def test_extract_json_returns_outer_object_first():
    assert extract_json_object('x {"a": {"b": 1}} {"c": 2}') == {"a": {"b": 1}}


def test_json_field_errors_counts_and_orders():
    pairs = [
        ('{"a": 1, "b": 2}', '{"a": 1, "b": 3}'),
        ('{"a": 0, "b": 2}', '{"a": 1, "b": 3}'),
        ("garbage", '{"a": 1, "b": 3}'),
    ]
    errors = json_field_errors(pairs)
    assert errors == {"b": {"wrong": 3, "total": 3}, "a": {"wrong": 2, "total": 3}}
    assert list(errors) == ["b", "a"]


def test_builtins_resolve_by_name():
    for name, func in SCORERS.items():
        assert resolve_scorer(name) is func


def test_unknown_name_suggests_nearest():
    with pytest.raises(ValueError) as info:
        resolve_scorer("exact_mach")
    message = str(info.value)
    assert "Did you mean 'exact_match'?" in message
    assert "normalized_match" in message and "json_field_accuracy" in message


def test_plugin_from_file(tmp_path):
    plugin = tmp_path / "my_scorers.py"
    plugin.write_text(
        "def length_ratio(prediction, reference):\n"
        "    return min(len(prediction), len(reference)) / max(len(prediction), len(reference), 1)\n"
        "NOT_CALLABLE = 3\n"
        "def wrong_arity(prediction):\n    return 1.0\n"
        "def returns_text(prediction, reference):\n    return 'yes'\n"
    )
    scorer = resolve_scorer(f"{plugin}:length_ratio")
    assert scorer("abcd", "ab") == 0.5
    with pytest.raises(ValueError, match="not a function"):
        resolve_scorer(f"{plugin}:NOT_CALLABLE")
    with pytest.raises(ValueError, match=r"cannot be called as fn\(prediction, reference\)"):
        resolve_scorer(f"{plugin}:wrong_arity")
    with pytest.raises(ValueError, match="has no 'missing'.*length_ratio"):
        resolve_scorer(f"{plugin}:missing")
    with pytest.raises(ValueError, match="must return a finite number"):
        resolve_scorer(f"{plugin}:returns_text")("a", "b")
    with pytest.raises(ValueError, match="file not found"):
        resolve_scorer(f"{tmp_path / 'nope.py'}:f")


def test_plugin_from_module():
    scorer = resolve_scorer("tuneforge.eval.scorers:exact_match")
    assert scorer(" a ", "a") == 1.0
    with pytest.raises(ValueError, match="cannot import module"):
        resolve_scorer("no_such_package_xyz.mod:f")


def test_plugin_import_error_is_reported(tmp_path):
    plugin = tmp_path / "broken.py"
    plugin.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ValueError, match="RuntimeError: boom"):
        resolve_scorer(f"{plugin}:f")
