"""A batch's spec: what every row's run is asked (processor, outputs, input mapping, policy, metadata).

The REST API and the CLI both end here, so a batch made in the browser and one made with
``taskdeck enrich`` are the same thing for the same choices (and resume each other: the resume key
is the input's digest and this canonical spec). Every refusal names the field, as the rest of the
API does.

The spec stored on a batch::

    {"processor": "core",
     "task_spec": {"output_schema": {...}},   # optional: absent means Parallel's auto schema
     "columns": ["company", "site"],          # optional: the input columns sent (default: all)
     "template": "Who runs {company}?",       # optional: a text input instead of an object
     "source_policy": {...}, "metadata": {...}}
"""

from __future__ import annotations

import string
from typing import Any

from taskdeck.engine.intake import field_problem as _problem
from taskdeck.processors import PROCESSORS, get_processor

__all__ = ["OUTPUT_TYPES", "output_fields", "outputs_schema", "spec_from_body", "template_fields"]

# What an output column may hold, by the names people write (CLI ``name:type: description``, API ``type``).
OUTPUT_TYPES = {
    "str": "string",
    "string": "string",
    "text": "string",
    "int": "integer",
    "integer": "integer",
    "float": "number",
    "number": "number",
    "bool": "boolean",
    "boolean": "boolean",
}
SPEC_KEYS = ("processor", "outputs", "task_spec", "columns", "template", "source_policy", "metadata")
MAX_OUTPUTS = 50


def template_fields(template: str) -> list[str]:
    """The column names a template refers to (``{name}``); ValueError for anything but plain names.

    Attribute and index lookups (``{a.b}``, ``{a[0]}``) and conversions are refused: a row's values are
    text from a file, and a template must not reach into Python objects.
    """
    names: list[str] = []
    for _, field, spec, conversion in string.Formatter().parse(template):
        if field is None:
            continue
        if not field or any(c in field for c in ".[]") or spec or conversion:
            raise ValueError(f"{{{field}}} is not a column reference: write {{column}} with a column's name")
        names.append(field)
    return names


def outputs_schema(outputs: list[tuple[str, str, str]]) -> dict[str, Any]:
    """A JSON schema (an object of required properties) from (name, type, description) triples."""
    props = {name: {"type": kind, "description": description} for name, kind, description in outputs}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def output_fields(spec: dict[str, Any]) -> list[str]:
    """The output columns of a spec's JSON schema (``output`` for text or auto results)."""
    schema = ((spec.get("task_spec") or {}).get("output_schema") or {}).get("json_schema") or {}
    props = schema.get("properties") if isinstance(schema, dict) else None
    return list(props) if isinstance(props, dict) and props else ["output"]


def _outputs(value: Any) -> list[tuple[str, str, str]]:
    if not isinstance(value, list) or not value:
        raise _problem(["spec", "outputs"], "must be a non-empty list of {name, type, description}")
    if len(value) > MAX_OUTPUTS:
        raise _problem(["spec", "outputs"], f"{len(value)} columns; at most {MAX_OUTPUTS}")
    seen: set[str] = set()
    out: list[tuple[str, str, str]] = []
    for i, item in enumerate(value):
        where: list[str | int] = ["spec", "outputs", i]
        if not isinstance(item, dict):
            raise _problem(where, "must be an object {name, type, description}")
        unknown = sorted(set(item) - {"name", "type", "description"})
        if unknown:
            raise _problem([*where, unknown[0]], "unknown field (an output has name, type and description)")
        name, kind, description = item.get("name"), item.get("type", "string"), item.get("description")
        if not isinstance(name, str) or not name.isidentifier() or len(name) > 64:
            raise _problem([*where, "name"], "must be a simple identifier (letters, digits, _), at most 64 characters")
        if name in seen:
            raise _problem([*where, "name"], f"{name!r} is named twice")
        seen.add(name)
        if not isinstance(kind, str) or kind.lower() not in OUTPUT_TYPES:
            raise _problem([*where, "type"], f"must be one of {', '.join(sorted(set(OUTPUT_TYPES.values())))}")
        if not isinstance(description, str) or not description.strip():
            raise _problem([*where, "description"], "say what the column should hold")
        out.append((name, OUTPUT_TYPES[kind.lower()], description.strip()))
    return out


def spec_from_body(value: Any, columns: list[str]) -> dict[str, Any]:
    """The stored spec from an API body's ``spec`` and the input's columns, or IntakeError naming the field.

    ``outputs`` (a list of columns) becomes a JSON ``task_spec``; a full ``task_spec`` is taken as
    Parallel defines it (checked with every row's request when the batch is built).
    """
    if not isinstance(value, dict):
        raise _problem(["spec"], "required: an object with processor and outputs (or task_spec)")
    unknown = sorted(set(value) - set(SPEC_KEYS))
    if unknown:
        raise _problem(["spec", unknown[0]], f"unknown field; a spec has {', '.join(SPEC_KEYS)}")
    processor = value.get("processor")
    if not isinstance(processor, str) or get_processor(processor) is None:
        raise _problem(["spec", "processor"], f"must be one of {', '.join(PROCESSORS)}")
    spec: dict[str, Any] = {"processor": processor}
    if value.get("outputs") is not None and value.get("task_spec") is not None:
        raise _problem(["spec", "outputs"], "give outputs or task_spec, not both")
    if value.get("outputs") is not None:
        schema = outputs_schema(_outputs(value["outputs"]))
        spec["task_spec"] = {"output_schema": {"type": "json", "json_schema": schema}}
    elif value.get("task_spec") is not None:
        if not isinstance(value["task_spec"], dict):
            raise _problem(["spec", "task_spec"], "must be an object (Parallel's TaskSpec)")
        spec["task_spec"] = value["task_spec"]
    chosen = value.get("columns")
    if chosen is not None:
        if not isinstance(chosen, list) or not chosen or not all(isinstance(c, str) for c in chosen):
            raise _problem(["spec", "columns"], "must be a non-empty list of the input's column names")
        for i, name in enumerate(chosen):
            if name not in columns:
                raise _problem(["spec", "columns", i], f"{name[:80]!r} is not a column of the input")
        spec["columns"] = list(dict.fromkeys(chosen))
    template = value.get("template")
    if template is not None:
        if not isinstance(template, str) or not template.strip():
            raise _problem(["spec", "template"], "must be text with {column} references")
        if chosen is not None:
            raise _problem(["spec", "template"], "give columns or template, not both")
        try:
            names = template_fields(template)
        except ValueError as err:
            raise _problem(["spec", "template"], str(err)) from None
        if not names:
            raise _problem(["spec", "template"], "refers to no {column}: every row would ask (and pay for) the same")
        for name in names:
            if name not in columns:
                raise _problem(["spec", "template"], f"{{{name[:80]}}} is not a column of the input")
        spec["template"] = template
    for key in ("source_policy", "metadata"):
        if value.get(key) is not None:
            if not isinstance(value[key], dict):
                raise _problem(["spec", key], "must be an object")
            spec[key] = value[key]
    return spec
