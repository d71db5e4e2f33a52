"""Code to copy: a task's request as the JSON body, a curl command and a Python SDK call.

Generated with real serialisers, never by pasting text together: Python literals
come from ``repr`` of the parsed JSON (so ``true`` becomes ``True`` and any string
stays a string), keyword names are only TaskRunInput's own fields (anything else
is refused at intake), and the curl body and headers are quoted by ``shlex``. Both
snippets send the ``parallel-beta`` values Taskdeck itself sends, and both read
``PARALLEL_API_KEY`` and honour ``PARALLEL_BASE_URL`` (pointed at the emulator,
they run against it).
"""

from __future__ import annotations

import json
import pprint
import shlex
from typing import Any

from taskdeck.taskspec import RUN_INPUT_FIELDS
from taskdeck.upstream.client import betas_for

__all__ = ["curl_snippet", "python_snippet", "request_code"]

# Order the SDK's create() documents its arguments in; anything else keeps its own order after these.
_ORDER = (
    "input processor task_spec metadata source_policy advanced_settings enable_events "
    "previous_interaction_id mcp_servers webhook memory_scope_key".split()
)


def _fields(request: dict[str, Any]) -> list[tuple[str, Any]]:
    """The request's TaskRunInput fields, in the SDK's order: only these ever become Python keywords."""
    return [(k, request[k]) for k in _ORDER if k in RUN_INPUT_FIELDS and request.get(k) is not None]


def _literal(value: Any, indent: int) -> str:
    """A Python literal for a JSON value, wrapped to fit; ``repr`` escapes every string."""
    text = pprint.pformat(value, indent=1, width=100 - indent, sort_dicts=False)
    return text.replace("\n", "\n" + " " * indent)


def python_snippet(request: dict[str, Any]) -> str:
    """A runnable script that creates the same run with the official SDK and prints its result."""
    args = "\n".join(f"    {name}={_literal(value, 4 + len(name) + 1)}," for name, value in _fields(request))
    betas = _literal(betas_for(request), 10)
    return (
        "from parallel import Parallel\n"
        "\n"
        "# Reads PARALLEL_API_KEY (and PARALLEL_BASE_URL, if set) from the environment.\n"
        "client = Parallel()\n"
        "run = client.task_run.create(\n"
        f"{args}\n"
        f"    betas={betas},\n"
        ")\n"
        "result = client.task_run.result(run.run_id, api_timeout=3600, timeout=3660)\n"
        "print(result.output.content)\n"
    )


def curl_snippet(request: dict[str, Any]) -> str:
    """A curl command that creates the same run (the body and every header shell-quoted)."""
    body = json.dumps(dict(_fields(request)), ensure_ascii=False, separators=(",", ":"))
    beta = ",".join(betas_for(request))
    return (
        'curl -sS -X POST "${PARALLEL_BASE_URL:-https://api.parallel.ai}/v1/tasks/runs" \\\n'
        '  -H "x-api-key: $PARALLEL_API_KEY" \\\n'
        "  -H 'content-type: application/json' \\\n"
        f"  -H {shlex.quote('parallel-beta: ' + beta)} \\\n"
        f"  --data-binary {shlex.quote(body)}\n"
    )


def request_code(request: dict[str, Any]) -> dict[str, str]:
    """The request three ways: the JSON body, curl, and Python."""
    return {
        "json": json.dumps(request, ensure_ascii=False, indent=2),
        "curl": curl_snippet(request),
        "python": python_snippet(request),
    }
