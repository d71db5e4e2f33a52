"""Made-up but plausible research content: outputs, bases, sources and progress messages.

Everything here is a pure function of a ``random.Random``, which the caller seeds
from the emulator seed plus the run's input and spec, so the same request always
gets the same answer. Nothing here is true; it only has the right shape.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any
from urllib.parse import unquote

__all__ = [
    "XSS_TEXT",
    "XSS_URL",
    "auto_output",
    "input_subject",
    "json_output",
    "make_rng",
    "progress_message",
    "resolve_local_ref",
    "source_urls",
    "text_output",
]

XSS_TEXT = '<script>window.__xss=1</script><img src=x onerror="window.__xss=1">'
XSS_URL = "javascript:window.__xss=1"

_DOMAINS = [
    "en.wikipedia.org",
    "www.reuters.com",
    "www.sec.gov",
    "www.bloomberg.com",
    "www.ft.com",
    "www.crunchbase.com",
    "www.linkedin.com",
    "www.statista.com",
    "data.worldbank.org",
    "www.imf.org",
    "www.census.gov",
    "arxiv.org",
    "www.nature.com",
    "techcrunch.com",
    "www.bbc.co.uk",
    "www.nytimes.com",
    "www.economist.com",
    "investor.example.com",
]
_WORDS = (
    "annual report market share revenue growth filing overview profile history leadership "
    "acquisition funding analysis outlook statistics survey release guidance quarterly"
).split()
_FIRST = ["Ada", "Grace", "Alan", "Katherine", "Linus", "Margaret", "Tim", "Barbara", "Dennis", "Frances"]
_LAST = ["Lovelace", "Hopper", "Turing", "Johnson", "Torvalds", "Hamilton", "Berners-Lee", "Liskov", "Ritchie"]
_COUNTRIES = ["United States", "Germany", "Japan", "India", "Brazil", "Canada", "France", "Kenya"]
_CONFIDENCE = ["high", "high", "medium", "medium", "low"]


def make_rng(*parts: object) -> random.Random:
    """A generator seeded from the parts' text, stable across processes and Python versions."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def input_subject(value: Any) -> str:
    """A short human label for a run's input, used inside generated prose."""
    if isinstance(value, str):
        text = " ".join(value.split())
    elif isinstance(value, dict) and value:
        text = ", ".join(f"{k}: {v}" for k, v in list(value.items())[:3])
    else:
        text = "the request"
    return text if len(text) <= 80 else text[:77] + "..."


def source_urls(rng: random.Random, n: int, *, xss: bool = False) -> list[str]:
    """``n`` plausible source URLs (one ``javascript:`` URL first when ``xss``)."""
    urls = [
        f"https://{rng.choice(_DOMAINS)}/{rng.choice(_WORDS)}/{rng.choice(_WORDS)}-{rng.randint(100, 99999)}"
        for _ in range(n)
    ]
    if xss and urls:
        urls[0] = XSS_URL
    return urls


def _citations(rng: random.Random, subject: str, field: str, *, xss: bool) -> list[dict[str, Any]]:
    out = []
    for url in source_urls(rng, rng.randint(1, 3), xss=xss):
        title = f"{subject[:40]} — {rng.choice(_WORDS)} {rng.choice(_WORDS)}".title()
        if xss:
            title = XSS_TEXT + title
        excerpt = f"According to this source, the {field.replace('_', ' ')} of {subject[:40]} is documented here."
        out.append({"url": url, "title": title, "excerpts": [excerpt]})
    return out


def _basis(rng: random.Random, field: str, subject: str, *, xss: bool) -> dict[str, Any]:
    reasoning = (
        f"Cross-checked {rng.randint(2, 6)} sources for the {field.replace('_', ' ')} of {subject}; "
        f"the most recent primary source was preferred."
    )
    if xss:
        reasoning = XSS_TEXT + reasoning
    return {
        "field": field,
        "citations": _citations(rng, subject, field, xss=xss),
        "reasoning": reasoning,
        "confidence": rng.choice(_CONFIDENCE),
    }


def _string_for(name: str, description: str, subject: str, rng: random.Random) -> str:
    key = f"{name} {description}".lower()
    if "url" in key or "website" in key or "link" in key:
        return f"https://www.{''.join(ch for ch in subject.lower() if ch.isalnum())[:20] or 'example'}.com"
    if "date" in key or "founded" in key or "year" in key or "when" in key:
        return f"{rng.randint(1950, 2025)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if "email" in key:
        return f"contact@{''.join(ch for ch in subject.lower() if ch.isalnum())[:20] or 'example'}.com"
    if any(w in key for w in ("ceo", "founder", "person", "author", "name", "leader", "president")):
        return f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
    if "country" in key or "location" in key or "headquarters" in key or "hq" in key:
        return rng.choice(_COUNTRIES)
    if any(w in key for w in ("revenue", "gdp", "price", "valuation", "funding", "cost", "usd")):
        scale = rng.choice(["million", "billion"])
        return f"${rng.randint(1, 999)}.{rng.randint(0, 9)} {scale} ({rng.randint(2019, 2025)})"
    label = description or name.replace("_", " ")
    return f"{label[:60].rstrip('.')} for {subject}: {rng.choice(_WORDS)} {rng.choice(_WORDS)} noted in recent sources."


# -- JSON values from a user's schema ---------------------------------------------
#
# Schemas may use ``$ref``. Only local references (``#`` and ``#/json/pointer``, so
# ``#/$defs/...`` and ``#/definitions/...``) are resolved, against the root schema;
# anything else (``http:``, ``file:``, a relative URI, an ``$anchor`` name) is never
# fetched or read: it is a user-controlled address, and the emulator must not become
# a way to make requests or read files. Such a reference constrains nothing.
#
# References may be recursive (``{"$ref": "#"}``, a tree of ``$defs/node``). Three
# bounds keep generation finite and small: past MAX_REF_DEPTH references along one
# path, values shrink to the least that validates (null where allowed, empty arrays,
# objects with only their required properties); past REF_GIVE_UP along one path, or
# once MAX_REF_EXPANSIONS references were followed in the whole output, a reference
# gives its cheapest value without following it further.

MAX_REF_DEPTH = 3
REF_GIVE_UP = 8
MAX_REF_EXPANSIONS = 200
_UNCONSTRAINED: dict[str, Any] = {}


def resolve_local_ref(root: Any, ref: str) -> Any:
    """The subschema a local ``$ref`` names inside ``root``, or None when it is not local or names nothing.

    ``#`` is the root itself; ``#/a/b`` is a JSON pointer (percent-decoded, then ``~1``
    and ``~0`` unescaped). Nothing outside ``root`` is ever consulted.
    """
    if ref == "#":
        return root
    if not ref.startswith("#/"):
        return None
    node = root
    for raw in ref[2:].split("/"):
        part = unquote(raw).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _merge_all_of(schema: dict[str, Any], parts: list[Any]) -> dict[str, Any]:
    """One schema from an ``allOf`` and its siblings: properties and required are united, other keys overlaid."""
    merged: dict[str, Any] = {}
    for part in [*parts, {k: v for k, v in schema.items() if k != "allOf"}]:
        if not isinstance(part, dict):
            continue
        for key, val in part.items():
            if key == "properties" and isinstance(val, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **val}
            elif key == "required" and isinstance(val, list) and isinstance(merged.get(key), list):
                merged[key] = [*merged[key], *(r for r in val if r not in merged[key])]
            else:
                merged[key] = val
    return merged


def _cheapest(schema: Any) -> Any:
    """The least value for ``schema`` without following any reference: null, [], {}, "", 0 or false."""
    if not isinstance(schema, dict):
        return None
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            if any(isinstance(o, dict) and o.get("type") == "null" for o in options):
                return None
            plain = [o for o in options if isinstance(o, dict) and "$ref" not in o]
            return _cheapest(plain[0]) if plain else None
    kind = schema.get("type", "string")
    if isinstance(kind, list):
        kind = "null" if "null" in kind or not kind else kind[0]
    return {"array": [], "object": {}, "string": "", "integer": 0, "number": 0, "boolean": False}.get(kind)


class _JsonValues:
    """Generates values for one output: the root schema (for ``$ref``) and the reference budget."""

    def __init__(self, root: Any, subject: str, rng: random.Random, xss: bool) -> None:
        self.root = root
        self.subject = subject
        self.rng = rng
        self.xss = xss
        self.expansions = 0

    def _deref(self, schema: Any, refs: int) -> tuple[Any, int, bool]:
        """Follow ``$ref``/``allOf`` at the top of ``schema``: (schema, refs followed, gave up)."""
        while isinstance(schema, dict):
            if isinstance(schema.get("allOf"), list) and "$ref" not in schema:
                parts = []
                for part in schema["allOf"]:
                    part, refs, gave_up = self._deref(part, refs)
                    if gave_up:
                        return part, refs, True
                    parts.append(part)
                schema = _merge_all_of(schema, parts)
                continue
            if "$ref" not in schema:
                break
            ref = schema["$ref"]
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            target = resolve_local_ref(self.root, ref) if isinstance(ref, str) else None
            if not isinstance(target, dict):
                # Remote, relative, dangling or a boolean schema: never fetched, no constraint.
                schema = rest or _UNCONSTRAINED
                break
            if refs + 1 > REF_GIVE_UP or self.expansions >= MAX_REF_EXPANSIONS:
                return {**target, **rest}, refs, True
            refs += 1
            self.expansions += 1
            # Siblings of $ref apply too (2020-12); overlaying them keeps e.g. a field's description.
            schema = {**target, **rest}
        return schema, refs, False

    def value(self, schema: Any, name: str, depth: int = 0, refs: int = 0) -> Any:
        """A value that validates against ``schema`` (the subset Parallel supports, plus local refs)."""
        schema, refs, gave_up = self._deref(schema, refs)
        if gave_up:
            return _cheapest(schema)
        rng = self.rng
        if not isinstance(schema, dict):
            return f"{name} for {self.subject}"
        if "enum" in schema and isinstance(schema["enum"], list) and schema["enum"]:
            return rng.choice(schema["enum"])
        if "const" in schema:
            return schema["const"]
        # Deep in a recursive structure: the least value that validates, so the output stays finite.
        minimal = refs >= MAX_REF_DEPTH
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list) and schema[key]:
                options = [s for s in schema[key] if not (isinstance(s, dict) and s.get("type") == "null")]
                if not options or (minimal and len(options) < len(schema[key])):
                    return None
                if minimal:
                    plain = [o for o in options if not (isinstance(o, dict) and "$ref" in o)]
                    return self.value((plain or options)[0], name, depth, refs)
                return self.value(rng.choice(options), name, depth, refs)
        kind = schema.get("type", "string")
        if isinstance(kind, list):
            non_null = [k for k in kind if k != "null"]
            if minimal:
                if "null" in kind or not non_null:
                    return None
                # An empty array or a scalar ends the recursion; an object may not.
                kind = min(non_null, key=lambda k: (k != "array", k == "object"))
            else:
                if not non_null or ("null" in kind and rng.random() < 0.1):
                    return None
                kind = rng.choice(non_null)
        description = schema.get("description", "") if isinstance(schema.get("description"), str) else ""
        if kind == "null":
            return None
        if kind == "object":
            props_raw = schema.get("properties")
            props: dict[str, Any] = props_raw if isinstance(props_raw, dict) else {}
            if minimal:
                required = schema.get("required")
                wanted = set(required) if isinstance(required, list) else set()
                props = {k: v for k, v in props.items() if k in wanted}
            return {k: self.value(v, k, depth + 1, refs) for k, v in props.items()}
        if kind == "array":
            count = rng.randint(1, 3) if depth < 6 and not minimal else 0
            return [self.value(schema.get("items", {"type": "string"}), name, depth + 1, refs) for _ in range(count)]
        if kind == "integer":
            if "year" in name.lower() or "year" in description.lower():
                return rng.randint(1990, 2025)
            return rng.randint(1, 10_000)
        if kind == "number":
            return round(rng.uniform(0, 10_000), 2)
        if kind == "boolean":
            return rng.random() < 0.5
        text = _string_for(name, description, self.subject, rng)
        return XSS_TEXT + text if self.xss else text


def _value(schema: Any, name: str, subject: str, rng: random.Random, xss: bool) -> Any:
    """A value that validates against ``schema``, which is also the root its local ``$ref``s resolve in."""
    return _JsonValues(schema, subject, rng, xss).value(schema, name)


def json_output(
    json_schema: dict[str, Any], input_value: Any, rng: random.Random, *, xss: bool = False
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Content that validates against ``json_schema``, and one FieldBasis per top-level field."""
    subject = input_subject(input_value)
    content = _value(json_schema, "output", subject, rng, xss)
    if not isinstance(content, dict):
        content = {}
    basis = [_basis(rng, field, subject, xss=xss) for field in content]
    return content, basis


def auto_output(
    input_value: Any, rng: random.Random, *, xss: bool = False
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """An invented schema, content for it, and a basis that includes dotted array paths."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "summary": {"type": "string", "description": "One-paragraph answer to the request"},
            "key_facts": {
                "type": "array",
                "description": "Most important facts found",
                "items": {
                    "type": "object",
                    "properties": {
                        "fact": {"type": "string", "description": "The fact"},
                        "year": {"type": ["integer", "null"], "description": "Year the fact refers to"},
                    },
                    "required": ["fact", "year"],
                    "additionalProperties": False,
                },
            },
            "headquarters_country": {"type": "string", "description": "Country of headquarters"},
        },
        "required": ["summary", "key_facts", "headquarters_country"],
        "additionalProperties": False,
    }
    subject = input_subject(input_value)
    content = _value(schema, "output", subject, rng, xss)
    basis = [_basis(rng, field, subject, xss=xss) for field in content]
    for i, _ in enumerate(content.get("key_facts", [])):
        basis.append(_basis(rng, f"key_facts.{i}", subject, xss=xss))
    return content, basis, schema


def text_output(
    description: str | None, input_value: Any, rng: random.Random, *, xss: bool = False
) -> tuple[str, list[dict[str, Any]]]:
    """A Markdown report and its single ``output`` basis entry."""
    subject = input_subject(input_value)
    urls = source_urls(rng, rng.randint(3, 6))
    lines = [f"# {subject}", ""]
    if description:
        lines += [f"_Brief: {description[:200]}_", ""]
    if xss:
        lines += [XSS_TEXT, f"[click me]({XSS_URL})", ""]
    lines += ["## Summary", ""]
    lines.append(
        f"Research on **{subject}** drew on {len(urls)} sources. The picture is consistent across "
        f"primary filings and press coverage, with {rng.choice(_WORDS)} and {rng.choice(_WORDS)} standing out."
    )
    lines += ["", "## Findings", ""]
    for i, url in enumerate(urls, 1):
        lines.append(f"- Finding {i}: {rng.choice(_WORDS)} {rng.choice(_WORDS)} ([source {i}]({url}))")
    lines += ["", "| Metric | Value |", "| --- | --- |"]
    for word in rng.sample(_WORDS, 3):
        lines.append(f"| {word} | {rng.randint(1, 999)} |")
    basis = _basis(rng, "output", subject, xss=xss)
    basis["citations"] = [
        {"url": u, "title": f"Source {i}", "excerpts": [f"Excerpt {i} about {subject[:40]}."]}
        for i, u in enumerate(urls, 1)
    ]
    return "\n".join(lines) + "\n", [basis]


_MESSAGES = {
    "exec_status": [
        "Reviewing gathered evidence",
        "Cross-checking figures across sources",
        "Preparing the final answer",
    ],
    "plan": [
        "I'm gathering background on {s} before narrowing to the requested fields.",
        "Next I'll look for primary sources that confirm the figures for {s}.",
        "I'll compare recent coverage of {s} to resolve conflicting values.",
    ],
    "search": [
        "Searching for {s} {w}",
        "Searching for {w} {w2} {s}",
        "Searching official filings about {s}",
    ],
    "tool_call": [
        "Reading https://{d}/{w}",
        "Fetching the {w} page for {s}",
    ],
    "result": [
        "Found {n} relevant sources on {s} {w}",
        "Confirmed the {w} figure from two independent sources",
    ],
}


def progress_message(kind: str, subject: str, rng: random.Random, *, xss: bool = False) -> str:
    """One progress message of ``kind`` (``plan``, ``search``, ``tool_call``, ``result``, ``exec_status``)."""
    template = rng.choice(_MESSAGES.get(kind, ["Working on {s}"]))
    text = template.format(
        s=subject, w=rng.choice(_WORDS), w2=rng.choice(_WORDS), d=rng.choice(_DOMAINS), n=rng.randint(2, 40)
    )
    return XSS_TEXT + text if xss else text
