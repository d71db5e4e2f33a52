"""Talking to Parallel: the official SDK for every request, our own reader for event bytes.

Every call takes the key's rate budget first. The SDK's own retries are off: the
engine retries with its own backoff, so each retry also passes the budget.
Responses are kept as the JSON the server sent (``with_raw_response``), so
nothing is lost to model coercion.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import httpx
import parallel
from parallel import AsyncParallel, DefaultAioHttpClient, DefaultAsyncHttpxClient

from taskdeck.jsonbody import storable
from taskdeck.upstream.sse import SseMessage, iter_messages

__all__ = ["Budget", "Upstream", "UpstreamError", "betas_for"]


class Budget(Protocol):
    """What the client needs of a rate budget (the engine's :class:`~taskdeck.engine.ratelimit.RateBudget`).

    A port, so that the client does not import the engine (which owns the budget) and a test or a
    one-off script can hand in its own.
    """

    async def acquire(self, owner: str, *, creates: bool) -> None:
        """Wait until one request of ``owner``'s budget is free and take it."""

    def pause(self, owner: str, seconds: float) -> None:
        """Send nothing for ``owner`` for ``seconds`` (after a 429)."""


EVENTS_BETA = "events-sse-2025-07-24"
WEBHOOK_BETA = "webhook-2025-08-12"
MCP_BETA = "mcp-server-2025-07-17"
# Fields of TaskRunInput the SDK's create() takes as keyword arguments.
CREATE_FIELDS = (
    "input processor task_spec metadata source_policy advanced_settings enable_events mcp_servers "
    "previous_interaction_id webhook memory_scope_key"
).split()


def betas_for(request: dict[str, Any]) -> list[str]:
    """The ``parallel-beta`` values a request needs (contract §1)."""
    betas = [EVENTS_BETA]
    if request.get("webhook"):
        betas.append(WEBHOOK_BETA)
    if request.get("mcp_servers"):
        betas.append(MCP_BETA)
    return betas


@dataclass
class UpstreamError(Exception):
    """A failed upstream call, classified for the engine."""

    status: int | None  # HTTP status, None for network and local errors
    message: str
    retry_after: float | None = None
    local: bool = False  # the request could not even be built or sent (our side): retrying cannot help

    def __str__(self) -> str:
        if self.local:
            return f"local: {self.message}"
        return f"{self.status or 'network'}: {self.message}"

    @property
    def retryable(self) -> bool:
        """429, 408, 5xx and network errors may succeed later; other 4xx and local errors will not."""
        if self.local:
            return False
        return self.status is None or self.status in (408, 409, 429) or self.status >= 500

    @property
    def ambiguous(self) -> bool:
        """Parallel may have acted on the request although it failed (a timeout, a dropped connection, a 5xx)."""
        return not self.local and (self.status is None or self.status == 408 or self.status >= 500)


def _retry_after(headers: httpx.Headers) -> float | None:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw:
            try:
                return max(0.0, float(raw) * scale)
            except ValueError:
                continue
    return None


def _classify(exc: Exception) -> UpstreamError:
    if isinstance(exc, parallel.APIStatusError):
        message = exc.message
        body = exc.body
        if isinstance(body, dict):
            err = body.get("error")
            if isinstance(err, dict) and isinstance(err.get("message"), str):
                message = err["message"]
            elif isinstance(body.get("detail"), list):
                message = "; ".join(str(d.get("msg", d)) for d in body["detail"] if isinstance(d, dict))
        return UpstreamError(exc.status_code, storable(str(message))[:2000], _retry_after(exc.response.headers))
    if isinstance(exc, parallel.APITimeoutError | httpx.TimeoutException | asyncio.TimeoutError):
        return UpstreamError(None, "timed out")
    if isinstance(exc, parallel.APIConnectionError | httpx.TransportError | aiohttp.ClientError | OSError):
        return UpstreamError(None, type(exc).__name__)
    # Anything else happened on our side before or while building the request (a value the SDK
    # cannot serialise, a bad header): sending it again would fail the same way.
    return UpstreamError(None, f"{type(exc).__name__}: {exc}"[:300], local=True)


class Upstream:
    """One SDK client per API key, sharing one HTTP connection pool."""

    def __init__(self, base_url: str, budget: Budget, *, transport: str = "httpx") -> None:
        self.base_url = base_url
        self.budget = budget
        # Every followed run holds a connection, so the pools must not cap them (the SDK's
        # default is 100). aiohttp reads 0 as "no limit"; httpx reads None.
        timeout = httpx.Timeout(60.0, connect=10.0)
        self._http: httpx.AsyncClient = (
            DefaultAioHttpClient(
                timeout=timeout, limits=httpx.Limits(max_connections=0, max_keepalive_connections=1000)
            )
            if transport == "aiohttp"
            else DefaultAsyncHttpxClient(
                timeout=timeout, limits=httpx.Limits(max_connections=None, max_keepalive_connections=1000)
            )
        )
        self._clients: dict[str, AsyncParallel] = {}
        self.requests = 0  # upstream requests sent (for metrics and benchmarks)

    def _client(self, api_key: str) -> AsyncParallel:
        client = self._clients.get(api_key)
        if client is None:
            client = AsyncParallel(api_key=api_key, base_url=self.base_url, http_client=self._http, max_retries=0)
            self._clients[api_key] = client
        return client

    async def close(self) -> None:
        await self._http.aclose()

    async def _send(self, owner: str, *, creates: bool = False) -> None:
        await self.budget.acquire(owner, creates=creates)
        self.requests += 1

    def _note_429(self, owner: str, err: UpstreamError) -> UpstreamError:
        if err.status == 429:
            self.budget.pause(owner, err.retry_after if err.retry_after is not None else 5.0)
        return err

    async def reserve(self, owner: str, *, creates: bool = False) -> None:
        """Take one request of the owner's budget now, for a call made with ``reserved=True``."""
        await self._send(owner, creates=creates)

    async def _call(
        self, owner: str, send: Callable[[], Awaitable[Any]], *, creates: bool = False, reserved: bool = False
    ) -> dict[str, Any]:
        """Take the budget, make one SDK call with a raw response, return its JSON; classify failures."""
        if not reserved:
            await self._send(owner, creates=creates)
        try:
            return await self._json(await send())
        except UpstreamError:
            raise
        except Exception as exc:
            raise self._note_429(owner, _classify(exc)) from exc

    async def create_group(self, owner: str, api_key: str, metadata: dict[str, Any]) -> dict[str, Any]:
        """POST /v1/tasks/groups; the TaskGroupResponse."""
        groups = self._client(api_key).task_group.with_raw_response
        return await self._call(owner, lambda: groups.create(metadata=metadata))

    async def add_run(
        self,
        owner: str,
        api_key: str,
        taskgroup_id: str,
        request: dict[str, Any],
        *,
        timeout: float,  # noqa: ASYNC109 - the HTTP timeout of this request, passed to the SDK
        reserved: bool = False,
    ) -> dict[str, Any]:
        """POST /v1/tasks/groups/{id}/runs with one input; the TaskGroupRunResponse (``run_ids``, ``run_cursor``)."""
        groups = self._client(api_key).task_group.with_raw_response
        run_input = {k: v for k, v in request.items() if v is not None}
        return await self._call(
            owner,
            lambda: groups.add_runs(
                taskgroup_id,
                inputs=[run_input],  # type: ignore[list-item]
                refresh_status=False,
                betas=betas_for(request),
                timeout=httpx.Timeout(timeout, connect=10.0),
            ),
            creates=True,
            reserved=reserved,
        )

    async def group_runs(
        self, owner: str, api_key: str, taskgroup_id: str, after: str | None, read_timeout: float
    ) -> list[dict[str, Any]]:
        """GET /v1/tasks/groups/{id}/runs?last_event_id=after: the TaskRun of every run added after ``after``.

        The stream answers at once with one ``task_run.state`` per run and ends (contract §9).
        """
        states = await self.group_run_states(owner, api_key, taskgroup_id, after=after, read_timeout=read_timeout)
        return [state["run"] for state in states]

    async def add_runs(
        self,
        owner: str,
        api_key: str,
        taskgroup_id: str,
        inputs: list[dict[str, Any]],
        *,
        default_task_spec: dict[str, Any] | None,
        betas: list[str],
        timeout: float,  # noqa: ASYNC109 - the HTTP timeout of this request, passed to the SDK
    ) -> dict[str, Any]:
        """POST /v1/tasks/groups/{id}/runs with up to 1,000 inputs: one request of the budget, as a create.

        The TaskGroupRunResponse: ``run_ids`` in the order of ``inputs``, and the cursors (contract §9).
        """
        if not 1 <= len(inputs) <= 1000:
            raise UpstreamError(None, f"add_runs takes 1 to 1,000 inputs, not {len(inputs)}", local=True)
        groups = self._client(api_key).task_group.with_raw_response
        extra: dict[str, Any] = {}
        if default_task_spec is not None:
            extra["default_task_spec"] = default_task_spec
        return await self._call(
            owner,
            lambda: groups.add_runs(
                taskgroup_id,
                inputs=inputs,  # type: ignore[arg-type]
                refresh_status=False,
                betas=betas,
                timeout=httpx.Timeout(timeout, connect=10.0),
                **extra,
            ),
            creates=True,
        )

    async def group_run_states(
        self,
        owner: str,
        api_key: str,
        taskgroup_id: str,
        *,
        after: str | None,
        include_input: bool = False,
        include_output: bool = False,
        read_timeout: float = 60.0,
    ) -> list[dict[str, Any]]:
        """GET /v1/tasks/groups/{id}/runs: every ``task_run.state`` event after ``after`` (its ``event_id``,
        ``run``, and ``input``/``output`` when asked), in the stream's order. One request, whatever the size.
        """
        states: list[dict[str, Any]] = []
        async for page in self.group_run_pages(
            owner,
            api_key,
            taskgroup_id,
            after=after,
            include_input=include_input,
            include_output=include_output,
            read_timeout=read_timeout,
        ):
            states.extend(page)
        return states

    async def group_run_pages(
        self,
        owner: str,
        api_key: str,
        taskgroup_id: str,
        *,
        after: str | None,
        include_input: bool = False,
        include_output: bool = False,
        read_timeout: float = 60.0,
        page_size: int = 500,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """The same one request as :meth:`group_run_states`, handed over ``page_size`` states at a time as
        they arrive: 10,000 outputs with their citations never sit in memory at once."""
        await self._send(owner)
        client = self._client(api_key)
        page: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "include_input": include_input,
            "include_output": include_output,
            "timeout": httpx.Timeout(30.0, read=read_timeout),
        }
        if after:
            kwargs["last_event_id"] = after
        try:
            async with client.task_group.with_streaming_response.get_runs(taskgroup_id, **kwargs) as response:
                async for message in iter_messages(response.iter_bytes()):
                    payload = message.payload
                    if payload is None:
                        continue
                    if payload.get("type") == "error":
                        err = payload.get("error") or {}
                        raise UpstreamError(None, f"error listing the group's runs: {err.get('message')}")
                    if payload.get("type") == "task_run.state" and isinstance(payload.get("run"), dict):
                        page.append(storable(payload))
                        if len(page) >= page_size:
                            yield page
                            page = []
        except UpstreamError:
            raise
        except Exception as exc:
            raise self._note_429(owner, _classify(exc)) from exc
        if page:
            yield page

    @asynccontextmanager
    async def group_events(
        self, owner: str, api_key: str, taskgroup_id: str, *, after: str | None, read_timeout: float
    ) -> AsyncIterator[AsyncIterator[SseMessage]]:
        """Open a group's event stream after ``after`` (its last ``event_id``); yields its messages.

        Parallel closes it after an hour, or once no run is active (contract §9): reopen with the last id.
        """
        await self._send(owner)
        client = self._client(api_key)
        kwargs: dict[str, Any] = {"timeout": httpx.Timeout(30.0, read=read_timeout)}
        if after:
            kwargs["last_event_id"] = after
        try:
            cm = client.task_group.with_streaming_response.events(taskgroup_id, **kwargs)
            response = await cm.__aenter__()
        except Exception as exc:
            raise self._note_429(owner, _classify(exc)) from exc
        try:
            yield iter_messages(response.iter_bytes())
        finally:
            await cm.__aexit__(None, None, None)

    async def create_run(self, owner: str, api_key: str, request: dict[str, Any]) -> dict[str, Any]:
        """POST /v1/tasks/runs; the TaskRun as sent."""
        kwargs = {k: request[k] for k in CREATE_FIELDS if request.get(k) is not None}
        extra = {k: v for k, v in request.items() if k not in CREATE_FIELDS and v is not None}
        runs = self._client(api_key).task_run.with_raw_response
        return await self._call(
            owner, lambda: runs.create(**kwargs, betas=betas_for(request), extra_body=extra or None), creates=True
        )

    async def retrieve(self, owner: str, api_key: str, run_id: str) -> dict[str, Any]:
        """GET /v1/tasks/runs/{id}."""
        runs = self._client(api_key).task_run.with_raw_response
        return await self._call(owner, lambda: runs.retrieve(run_id))

    async def retrieve_input(self, owner: str, api_key: str, run_id: str) -> dict[str, Any]:
        """GET /v1/tasks/runs/{id}/input: the request as Parallel received it (null fields left out)."""
        runs = self._client(api_key).task_run.with_raw_response
        body = await self._call(owner, lambda: runs.retrieve_input(run_id))
        return {k: v for k, v in body.items() if v is not None}

    async def result(
        self, owner: str, api_key: str, run_id: str, wait: float, betas: list[str]
    ) -> dict[str, Any] | None:
        """GET /result?timeout=wait; None when the run is still active (408)."""
        runs = self._client(api_key).task_run.with_raw_response
        try:
            return await self._call(
                owner, lambda: runs.result(run_id, api_timeout=int(wait), betas=betas, timeout=wait + 30.0)
            )
        except UpstreamError as err:
            if err.status == 408:
                return None
            raise

    @asynccontextmanager
    async def events(
        self, owner: str, api_key: str, run_id: str, read_timeout: float
    ) -> AsyncIterator[AsyncIterator[SseMessage]]:
        """Open a run's event stream; yields an iterator of messages. Raises UpstreamError to open."""
        await self._send(owner)
        timeout = httpx.Timeout(30.0, read=read_timeout)
        client = self._client(api_key)
        try:
            cm = client.task_run.with_streaming_response.events(run_id, timeout=timeout)
            response = await cm.__aenter__()
        except Exception as exc:
            raise self._note_429(owner, _classify(exc)) from exc
        try:
            yield iter_messages(response.iter_bytes())
        finally:
            await cm.__aexit__(None, None, None)

    @staticmethod
    async def _json(raw: Any) -> dict[str, Any]:
        body = json.loads(await raw.read())
        if not isinstance(body, dict):
            raise UpstreamError(None, "upstream answered with something other than a JSON object")
        # Upstream text is stored as is, except what no store can hold (lone surrogates, NUL).
        cleaned: dict[str, Any] = storable(body)
        return cleaned
