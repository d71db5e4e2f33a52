"""Parallel's run-request rules, as pure functions."""

from __future__ import annotations

from typing import Any

import pytest

from taskdeck.taskspec import Problem, check_run_input, check_task_spec, normalize_schema


def schema(props: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"output_schema": {"type": "json", "json_schema": {"type": "object", "properties": props, **extra}}}


def test_bare_string_is_a_text_schema() -> None:
    assert normalize_schema("founding date") == {"type": "text", "description": "founding date"}
    assert normalize_schema({"json_schema": {}})["type"] == "json"  # type: ignore[index]
    assert normalize_schema(5) is None


def test_clean_spec_has_no_problems_or_warnings() -> None:
    check = check_task_spec(schema({"a": {"type": "string"}}, required=["a"], additionalProperties=False))
    assert check.ok and not check.warnings


def test_unsupported_keyword_inside_nested_items() -> None:
    spec = schema({"xs": {"type": "array", "items": {"type": "string", "pattern": "^a"}}})
    problems = check_task_spec(spec).problems
    assert [p.loc[-1] for p in problems] == ["pattern"]
    assert "xs" in problems[0].path


def test_property_named_like_a_keyword_is_fine() -> None:
    check = check_task_spec(schema({"pattern": {"type": "string"}}, required=["pattern"], additionalProperties=False))
    assert check.ok


def test_too_many_fields_for_processor_warns() -> None:
    props = {f"f{i}": {"type": "string"} for i in range(3)}
    check = check_task_spec(schema(props, required=list(props), additionalProperties=False), processor="lite")
    assert check.ok and any("lite" in w.message for w in check.warnings)


def test_problem_path_formatting() -> None:
    assert Problem(("inputs", 2, "processor"), "x").path == "inputs[2].processor"
    assert Problem((), "x").path == "body"


def test_group_default_spec_is_used_for_size_checks() -> None:
    big = schema({"a": {"type": "string", "description": "d" * 14_000}})
    check = check_run_input({"input": "i" * 11_500, "processor": "lite"}, default_task_spec=big)
    assert not check.ok and "25000" in str(check.problems[0])


def test_metadata_numbers_and_bools_are_allowed() -> None:
    assert check_run_input({"input": "x", "processor": "lite", "metadata": {"n": 1, "f": 1.5, "b": True}}).ok


@pytest.mark.parametrize(
    "root",
    [
        {"type": "object"},  # no properties
        {"type": "array", "properties": {"a": {"type": "string"}}},  # properties, but not an object
        {"properties": {"a": {"type": "string"}}},  # no type at all
    ],
)
def test_an_output_schema_root_must_be_an_object_with_properties(root: dict[str, object]) -> None:
    spec = {"output_schema": {"type": "json", "json_schema": root}}
    check = check_run_input({"input": "x", "processor": "lite", "task_spec": spec})
    assert any("root must be" in p.message for p in check.problems), check.problems
