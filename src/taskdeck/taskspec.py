"""Parallel's rules for a run request (``TaskRunInput``), checked before anything is sent.

The emulator answers a request that breaks these rules with 422, as Parallel does;
Taskdeck's own API runs the same checks so a person learns of a mistake before
paying for a run. Rules and limits come from the contract §3; each problem names
the field (as a ``loc`` path) and what is wrong with it.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import jsonschema.validators
from referencing import Registry
from referencing.exceptions import Unresolvable

from taskdeck.processors import get_processor

__all__ = [
    "MAX_DOMAINS",
    "RUN_INPUT_FIELDS",
    "Problem",
    "RunInputCheck",
    "SpecWarning",
    "check_run_input",
    "check_task_spec",
    "compact_json",
    "normalize_schema",
]

MAX_NESTING = 5
MAX_PROPERTIES = 100
MAX_ENUM_VALUES = 500
LARGE_ENUM_THRESHOLD = 250
LARGE_ENUM_MAX_CHARS = 7_500
MAX_SPEC_CHARS = 15_000
MAX_SPEC_AND_INPUT_CHARS = 25_000
MAX_DOMAINS = 200
MAX_MCP_SERVERS = 10
MAX_METADATA_KEY = 16
MAX_METADATA_VALUE = 512
# Most keyword evaluations one input-schema check may take: a crafted schema (nested anyOf over
# references) can otherwise cost exponential time for a 15,000-character spec.
MAX_VALIDATION_STEPS = 10_000
REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")

# The fields of Parallel's TaskRunInput (spec), plus the SDK's memory_scope_key.
RUN_INPUT_FIELDS = frozenset(
    "input processor task_spec metadata source_policy advanced_settings enable_events "
    "previous_interaction_id mcp_servers webhook memory_scope_key".split()
)

UNSUPPORTED_KEYWORDS = frozenset(
    "contains format maxContains maxItems maxLength maxProperties maximum minContains minItems "
    "minLength minimum minProperties multipleOf pattern patternProperties propertyNames "
    "uniqueItems unevaluatedItems unevaluatedProperties".split()
)
RESERVED_PROPERTY_NAMES = frozenset("citations confidence evidence reasoning source sources source_urls".split())
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# A plain domain or a bare ending (".gov", ".co.uk"): labels of letters, digits and inner hyphens.
_DOMAIN = re.compile(r"\.?(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)*[^\W_](?:[\w-]{0,61}[^\W_])?", re.IGNORECASE)
JSON_TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})
_COUNTRY = re.compile(r"^[A-Za-z]{2}$")

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason a request is refused: where (``loc``) and what (``message``)."""

    loc: Loc
    message: str
    kind: str = "value_error"

    @property
    def path(self) -> str:
        """Dotted field path such as ``task_spec.output_schema.json_schema``."""
        out = ""
        for part in self.loc:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
        return out or "body"

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True, slots=True)
class SpecWarning:
    """A non-blocking remark, in the shape of Parallel's ``Warning`` object."""

    type: str
    message: str
    detail: dict[str, Any] | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "detail": self.detail}


@dataclass(slots=True)
class RunInputCheck:
    """Outcome of :func:`check_run_input`."""

    problems: list[Problem] = field(default_factory=list)
    warnings: list[SpecWarning] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def compact_json(value: Any) -> str:
    """JSON as Parallel sends it: no spaces, non-ASCII kept."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def normalize_schema(value: Any) -> dict[str, Any] | None:
    """Turn a bare-string schema into ``{"type": "text", "description": ...}`` and fill ``type``.

    Returns None for values that are not schemas at all (the caller reports them).
    """
    if isinstance(value, str):
        return {"type": "text", "description": value}
    if isinstance(value, dict):
        out = dict(value)
        if "type" not in out:
            out["type"] = "json" if "json_schema" in out else "text"
        return out
    return None


def check_run_input(
    body: Any, *, loc: Loc = (), default_task_spec: Any = None, known_fields_only: bool = False
) -> RunInputCheck:
    """Check one ``TaskRunInput`` against Parallel's rules.

    ``default_task_spec`` is a task group's default, used when the input has none.
    Unknown processors are *not* a problem here: Parallel answers those with 403,
    which callers decide themselves. ``known_fields_only`` refuses top-level fields
    that TaskRunInput does not have (Taskdeck's own API does; Parallel ignores them).
    Never fetches anything: schemas may only refer to themselves (``#/...``).
    """
    try:
        return _check_run_input(body, loc, default_task_spec, known_fields_only)
    except RecursionError:
        check = RunInputCheck()
        check.problems.append(Problem(loc, "nests too deeply to check"))
        return check


def _check_run_input(body: Any, loc: Loc, default_task_spec: Any, known_fields_only: bool) -> RunInputCheck:
    check = RunInputCheck()
    p = check.problems
    if not isinstance(body, dict):
        p.append(Problem(loc, "must be a JSON object", "type_error"))
        return check
    if known_fields_only:
        for key in body:
            if key not in RUN_INPUT_FIELDS:
                p.append(
                    Problem(
                        (*loc, key),
                        f"is not a field of Parallel's TaskRunInput (known: {', '.join(sorted(RUN_INPUT_FIELDS))})",
                        "extra_forbidden",
                    )
                )

    if "processor" not in body:
        p.append(Problem((*loc, "processor"), "field required", "missing"))
    elif not isinstance(body["processor"], str) or not body["processor"]:
        p.append(Problem((*loc, "processor"), "must be a non-empty string", "type_error"))

    value = body.get("input")
    if "input" not in body:
        p.append(Problem((*loc, "input"), "field required", "missing"))
    elif isinstance(value, str):
        if not value.strip():
            p.append(Problem((*loc, "input"), "must not be empty"))
    elif not isinstance(value, dict):
        p.append(Problem((*loc, "input"), "must be a string or a JSON object", "type_error"))

    spec = body.get("task_spec")
    if spec is None:
        spec = default_task_spec
    spec_ok = True
    if spec is not None:
        spec_check = check_task_spec(spec, loc=(*loc, "task_spec"), processor=body.get("processor"))
        p.extend(spec_check.problems)
        check.warnings.extend(spec_check.warnings)
        spec_ok = not spec_check.problems
    if spec_ok and isinstance(value, str | dict):
        # The limit counts the spec and the input together; with no spec, the input alone.
        spec_chars = len(compact_json(spec)) if spec is not None else 0
        input_chars = len(value) if isinstance(value, str) else len(compact_json(value))
        if spec_chars + input_chars > MAX_SPEC_AND_INPUT_CHARS:
            what = "task spec plus input" if spec is not None else "input"
            p.append(
                Problem(
                    (*loc, "input"),
                    f"{what} is {spec_chars + input_chars} characters; the limit is {MAX_SPEC_AND_INPUT_CHARS}",
                    "too_long",
                )
            )
        elif spec is not None:
            warnings, problems = _input_warnings(spec, value, (*loc, "task_spec", "input_schema"))
            check.warnings.extend(warnings)
            p.extend(problems)

    _check_metadata(body.get("metadata"), (*loc, "metadata"), p)
    _check_source_policy(body.get("source_policy"), (*loc, "source_policy"), p)
    _check_advanced(body.get("advanced_settings"), (*loc, "advanced_settings"), p)
    _check_optional(body, "enable_events", bool, "a boolean", loc, p)
    _check_optional(body, "previous_interaction_id", str, "a string", loc, p)
    _check_optional(body, "memory_scope_key", str, "a string", loc, p)
    _check_mcp_servers(body.get("mcp_servers"), (*loc, "mcp_servers"), p)
    _check_webhook(body.get("webhook"), (*loc, "webhook"), p)
    return check


def check_task_spec(spec: Any, *, loc: Loc = ("task_spec",), processor: Any = None) -> RunInputCheck:
    """Check a ``TaskSpec`` (output schema and optional input schema)."""
    check = RunInputCheck()
    p = check.problems
    if not isinstance(spec, dict):
        p.append(Problem(loc, "must be an object with an output_schema", "type_error"))
        return check
    if "output_schema" not in spec:
        p.append(Problem((*loc, "output_schema"), "field required", "missing"))
        return check
    spec_chars = len(compact_json(spec))
    if spec_chars > MAX_SPEC_CHARS:
        p.append(Problem(loc, f"task spec is {spec_chars} characters; the limit is {MAX_SPEC_CHARS}"))

    out = normalize_schema(spec["output_schema"])
    out_loc = (*loc, "output_schema")
    if out is None:
        p.append(Problem(out_loc, "must be a string or a schema object", "type_error"))
    else:
        _check_schema_object(out, out_loc, p, check.warnings, allow_auto=True, processor=processor)

    if spec.get("input_schema") is not None:
        inp = normalize_schema(spec["input_schema"])
        in_loc = (*loc, "input_schema")
        if inp is None:
            p.append(Problem(in_loc, "must be a string or a schema object", "type_error"))
        else:
            _check_schema_object(inp, in_loc, p, [], allow_auto=False, processor=None)
    return check


def _check_schema_object(
    schema: dict[str, Any],
    loc: Loc,
    p: list[Problem],
    warnings: list[SpecWarning],
    *,
    allow_auto: bool,
    processor: Any,
) -> None:
    kind = schema.get("type")
    allowed = ("json", "text", "auto") if allow_auto else ("json", "text")
    if kind not in allowed:
        p.append(Problem((*loc, "type"), f"must be one of {', '.join(allowed)}", "enum"))
        return
    if kind == "text":
        desc = schema.get("description")
        if desc is not None and not isinstance(desc, str):
            p.append(Problem((*loc, "description"), "must be a string", "type_error"))
        return
    if kind == "auto":
        return
    js = schema.get("json_schema")
    if not isinstance(js, dict):
        p.append(Problem((*loc, "json_schema"), "field required: a JSON Schema object", "missing"))
        return
    ref_problems = _remote_refs(js, (*loc, "json_schema"))
    if ref_problems:
        p.extend(ref_problems)
        return
    if not allow_auto:
        # Input schemas only describe the input; the output-schema rules do not apply.
        try:
            jsonschema.Draft202012Validator.check_schema(js)
        except jsonschema.SchemaError as exc:
            p.append(Problem((*loc, "json_schema"), f"is not valid JSON Schema: {exc.message}"))
        return
    _check_json_schema(js, (*loc, "json_schema"), p, warnings)
    proc = get_processor(processor) if isinstance(processor, str) else None
    props = js.get("properties")
    if proc is not None and isinstance(props, dict) and len(props) > proc.max_fields:
        warnings.append(
            SpecWarning(
                "spec_validation_warning",
                f"Output schema has {len(props)} fields; processor {proc.name} handles about "
                f"{proc.max_fields} well. Consider a larger processor.",
                {"num_fields": len(props), "processor": proc.name},
            )
        )


def _check_json_schema(js: dict[str, Any], loc: Loc, p: list[Problem], warnings: list[SpecWarning]) -> None:
    if "anyOf" in js:
        p.append(Problem(loc, "anyOf is not allowed at the root of an output schema"))
    if js.get("type") != "object" or not isinstance(js.get("properties"), dict):
        p.append(Problem(loc, 'root must be {"type": "object"} with "properties"'))
        return
    totals = {"properties": 0, "enum_values": 0, "enum_chars": 0}
    for node, node_loc, depth in _walk(js, loc, 1):
        for key in node:
            if key in UNSUPPORTED_KEYWORDS:
                p.append(Problem((*node_loc, key), f"keyword {key!r} is not supported", "unsupported"))
        in_union = len(node_loc) >= 2 and node_loc[-2] in ("anyOf", "oneOf")
        if not in_union:
            _check_types(node, node_loc, p)
        if isinstance(node.get("enum"), list):
            totals["enum_values"] += len(node["enum"])
            totals["enum_chars"] += sum(len(str(v)) for v in node["enum"])
        props = node.get("properties")
        if not isinstance(props, dict):
            continue
        if depth > MAX_NESTING:
            p.append(Problem(node_loc, f"objects nest {depth} levels deep; the limit is {MAX_NESTING}"))
        totals["properties"] += len(props)
        required_raw = node.get("required")
        required: list[Any] = required_raw if isinstance(required_raw, list) else []
        for name in props:
            if name in RESERVED_PROPERTY_NAMES:
                warnings.append(
                    SpecWarning(
                        "spec_validation_warning",
                        f"Property {name!r} duplicates the basis, which already gives citations, "
                        "reasoning and confidence for every field.",
                        {"property": name},
                    )
                )
            if name not in required:
                warnings.append(
                    SpecWarning(
                        "spec_validation_warning",
                        f"Property {name!r} is not required; make every property required and "
                        'use ["type", "null"] for optional values.',
                        {"property": name},
                    )
                )
        if node.get("additionalProperties") is not False:
            warnings.append(
                SpecWarning(
                    "spec_validation_warning",
                    "Objects should set additionalProperties to false.",
                    {"path": ".".join(str(x) for x in node_loc)},
                )
            )
    if totals["properties"] > MAX_PROPERTIES:
        p.append(Problem(loc, f"schema has {totals['properties']} properties; the limit is {MAX_PROPERTIES}"))
    if totals["enum_values"] > MAX_ENUM_VALUES:
        p.append(Problem(loc, f"schema has {totals['enum_values']} enum values; the limit is {MAX_ENUM_VALUES}"))
    if totals["enum_values"] > LARGE_ENUM_THRESHOLD and totals["enum_chars"] > LARGE_ENUM_MAX_CHARS:
        p.append(
            Problem(
                loc,
                f"enums with more than {LARGE_ENUM_THRESHOLD} values may total at most "
                f"{LARGE_ENUM_MAX_CHARS} characters; these total {totals['enum_chars']}",
            )
        )


def _check_types(node: dict[str, Any], loc: Loc, p: list[Problem]) -> None:
    kind = node.get("type")
    names = kind if isinstance(kind, list) else [kind] if kind is not None else []
    unknown = [t for t in names if t not in JSON_TYPES]
    if unknown:
        p.append(Problem((*loc, "type"), f"unknown type {unknown[0]!r}; use one of {', '.join(sorted(JSON_TYPES))}"))
        return
    if kind == "null":
        p.append(Problem((*loc, "type"), '"null" is only allowed inside a union such as ["string", "null"]'))
    elif isinstance(kind, list) and (not kind or kind == ["null"]):
        p.append(Problem((*loc, "type"), "a type union needs at least one type besides null"))


def _walk(node: dict[str, Any], loc: Loc, depth: int) -> Iterator[tuple[dict[str, Any], Loc, int]]:
    """Every schema node below ``node`` (itself included), with its nesting depth in objects."""
    yield node, loc, depth
    child_depth = depth + 1 if isinstance(node.get("properties"), dict) else depth
    props = node.get("properties")
    if isinstance(props, dict):
        for name, sub in props.items():
            if isinstance(sub, dict):
                yield from _walk(sub, (*loc, "properties", name), child_depth)
    items = node.get("items")
    if isinstance(items, dict):
        yield from _walk(items, (*loc, "items"), depth)
    for key in ("anyOf", "oneOf", "allOf"):
        subs = node.get(key)
        if isinstance(subs, list):
            for i, sub in enumerate(subs):
                if isinstance(sub, dict):
                    yield from _walk(sub, (*loc, key, i), depth)
    for key in ("$defs", "definitions"):
        defs = node.get(key)
        if isinstance(defs, dict):
            for name, sub in defs.items():
                if isinstance(sub, dict):
                    yield from _walk(sub, (*loc, key, name), depth)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        yield from _walk(extra, (*loc, "additionalProperties"), child_depth)


def _remote_refs(schema: Any, loc: Loc) -> list[Problem]:
    """A problem for every reference that is not local (``#...``): those would need a fetch."""
    out: list[Problem] = []
    stack: list[tuple[Any, Loc]] = [(schema, loc)]
    while stack:
        node, at = stack.pop()
        if isinstance(node, dict):
            for key, sub in node.items():
                if key in REF_KEYWORDS and not (isinstance(sub, str) and sub.startswith("#")):
                    out.append(
                        Problem(
                            (*at, key),
                            "only local references such as '#/$defs/name' are allowed; schemas are never fetched",
                            "value_error.ref",
                        )
                    )
                else:
                    stack.append((sub, (*at, key)))
        elif isinstance(node, list):
            stack.extend((sub, (*at, i)) for i, sub in enumerate(node))
    return out


class SchemaTooComplex(Exception):
    """Checking an input against its schema took more than :data:`MAX_VALIDATION_STEPS` steps."""


_steps = threading.local()


def _counted(fn: Callable[..., Any]) -> Callable[..., Any]:
    def step(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        _steps.left -= 1
        if _steps.left < 0:
            raise SchemaTooComplex
        return fn(validator, value, instance, schema)

    return step


# Draft 2020-12 with every keyword counted, and a registry that never retrieves anything.
_BoundedValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    validators={name: _counted(fn) for name, fn in jsonschema.Draft202012Validator.VALIDATORS.items()},
)
_NO_FETCH: Registry[Any] = Registry()  # its default retrieve refuses every URI


def _input_warnings(spec: Any, value: Any, loc: Loc) -> tuple[list[SpecWarning], list[Problem]]:
    """Warnings for an input that does not match its input schema; problems when that cannot be checked."""
    if not isinstance(spec, dict):
        return [], []
    inp = normalize_schema(spec.get("input_schema")) if spec.get("input_schema") is not None else None
    if inp is None or inp.get("type") != "json" or not isinstance(inp.get("json_schema"), dict):
        return [], []
    if not isinstance(value, dict):
        return [
            SpecWarning("input_validation_warning", "Input is text but the input schema expects a JSON object.")
        ], []
    _steps.left = MAX_VALIDATION_STEPS
    try:
        validator = _BoundedValidator(inp["json_schema"], registry=_NO_FETCH)
        errors = sorted(validator.iter_errors(value), key=str)
    except jsonschema.SchemaError as exc:
        return [SpecWarning("input_validation_warning", f"Input schema is not valid JSON Schema: {exc.message}")], []
    except SchemaTooComplex:
        return [], [Problem((*loc, "json_schema"), f"is too complex to check (over {MAX_VALIDATION_STEPS} steps)")]
    except RecursionError:
        return [], [Problem((*loc, "json_schema"), "refers to itself without end")]
    except Unresolvable as exc:
        return [], [Problem((*loc, "json_schema"), f"has a reference that cannot be resolved: {exc}")]
    return [
        SpecWarning(
            "input_validation_warning",
            f"Input does not match the input schema: {err.message}",
            {"path": [str(x) for x in err.absolute_path]},
        )
        for err in errors[:5]
    ], []


def _check_optional(body: dict[str, Any], key: str, kind: type, label: str, loc: Loc, p: list[Problem]) -> None:
    value = body.get(key)
    if value is not None and not isinstance(value, kind):
        p.append(Problem((*loc, key), f"must be {label} or null", "type_error"))


def _check_metadata(meta: Any, loc: Loc, p: list[Problem]) -> None:
    if meta is None:
        return
    if not isinstance(meta, dict):
        p.append(Problem(loc, "must be an object of string, number or boolean values", "type_error"))
        return
    for key, value in meta.items():
        if len(key) > MAX_METADATA_KEY:
            p.append(Problem((*loc, key), f"key is {len(key)} characters; the limit is {MAX_METADATA_KEY}"))
        if not isinstance(value, str | int | float | bool) or value is None:
            p.append(Problem((*loc, key), "value must be a string, number or boolean", "type_error"))
        elif len(str(value)) > MAX_METADATA_VALUE:
            p.append(Problem((*loc, key), f"value is {len(str(value))} characters; the limit is {MAX_METADATA_VALUE}"))


def _check_source_policy(policy: Any, loc: Loc, p: list[Problem]) -> None:
    if policy is None:
        return
    if not isinstance(policy, dict):
        p.append(Problem(loc, "must be an object", "type_error"))
        return
    total = 0
    for key in ("include_domains", "exclude_domains"):
        domains = policy.get(key)
        if domains is None:
            continue
        if not isinstance(domains, list) or not all(isinstance(d, str) and d.strip() for d in domains):
            p.append(Problem((*loc, key), "must be a list of domain names", "type_error"))
            continue
        for i, domain in enumerate(domains):
            if not _DOMAIN.fullmatch(domain.strip()):
                p.append(
                    Problem(
                        (*loc, key, i),
                        f"{domain[:80]!r} is not a domain: write example.com, sub.example.gov or an ending like .edu",
                        "value_error.domain",
                    )
                )
        total += len(domains)
    if total > MAX_DOMAINS:
        p.append(Problem(loc, f"lists {total} domains; the limit is {MAX_DOMAINS} in all"))
    after = policy.get("after_date")
    if after is not None and (not isinstance(after, str) or not _DATE.match(after)):
        p.append(Problem((*loc, "after_date"), "must be a date as YYYY-MM-DD", "value_error.date"))


def _check_advanced(settings: Any, loc: Loc, p: list[Problem]) -> None:
    if settings is None:
        return
    if not isinstance(settings, dict):
        p.append(Problem(loc, "must be an object", "type_error"))
        return
    location = settings.get("location")
    if location is not None and (not isinstance(location, str) or not _COUNTRY.match(location)):
        p.append(Problem((*loc, "location"), "must be an ISO 3166-1 alpha-2 country code such as 'us'"))


def _check_mcp_servers(servers: Any, loc: Loc, p: list[Problem]) -> None:
    if servers is None:
        return
    if not isinstance(servers, list):
        p.append(Problem(loc, "must be a list of MCP servers", "type_error"))
        return
    if len(servers) > MAX_MCP_SERVERS:
        p.append(Problem(loc, f"lists {len(servers)} servers; the limit is {MAX_MCP_SERVERS}"))
    for i, server in enumerate(servers):
        s_loc = (*loc, i)
        if not isinstance(server, dict):
            p.append(Problem(s_loc, "must be an object with url and name", "type_error"))
            continue
        for key in ("url", "name"):
            if not isinstance(server.get(key), str) or not server[key]:
                p.append(Problem((*s_loc, key), "field required: a non-empty string", "missing"))
        if server.get("type", "url") != "url":
            p.append(Problem((*s_loc, "type"), "must be 'url' (Streamable HTTP servers only)", "enum"))
        headers = server.get("headers")
        if headers is not None and (
            not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values())
        ):
            p.append(Problem((*s_loc, "headers"), "must be an object of string values", "type_error"))
        tools = server.get("allowed_tools")
        if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, str) for t in tools)):
            p.append(Problem((*s_loc, "allowed_tools"), "must be a list of tool names or null", "type_error"))


def _check_webhook(hook: Any, loc: Loc, p: list[Problem]) -> None:
    if hook is None:
        return
    if not isinstance(hook, dict):
        p.append(Problem(loc, "must be an object with a url", "type_error"))
        return
    url = hook.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        p.append(Problem((*loc, "url"), "field required: an http(s) URL", "missing"))
    kinds = hook.get("event_types", [])
    if not isinstance(kinds, list) or any(k != "task_run.status" for k in kinds):
        p.append(Problem((*loc, "event_types"), "the only event type is 'task_run.status'", "enum"))
