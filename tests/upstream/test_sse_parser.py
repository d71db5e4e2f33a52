"""The tolerant SSE reader."""

from __future__ import annotations

from taskdeck.upstream.sse import SseParser


def test_chunks_split_anywhere_crlf_comments_and_malformed() -> None:
    text = (
        b': ping\r\n\r\nevent: task_run.state\r\ndata: {"type":"task_run.state","run":{}}\r\n\r\n'
        b'event: x\ndata: {"type":"task_run.progress_msg.pl\n\n'
        b"data: line one\ndata: line two\n\n"
        b'event: task_run.progress_stats\ndata: {"type":"task_run.progress_stats"}\n\nevent: partial\ndata: {"a'
    )
    for size in (1, 3, 7, len(text)):
        parser = SseParser()
        out = []
        for i in range(0, len(text), size):
            out += parser.feed(text[i : i + size])
        assert [m.type for m in out] == ["task_run.state", "x", "message", "task_run.progress_stats"]
        assert out[0].data == '{"type":"task_run.state","run":{}}' and out[0].payload == {
            "type": "task_run.state",
            "run": {},
        }
        assert out[1].payload is None  # malformed JSON is kept as text, not raised
        assert out[2].data == "line one\nline two"


def test_non_rfc_json_from_upstream_is_kept_as_malformed_text() -> None:
    """NaN is not JSON: parsed, it would make every page showing the event fail to render."""
    parser = SseParser()
    out = parser.feed(
        b'event: task_run.progress_stats\ndata: {"type":"task_run.progress_stats","progress_meter":NaN}\n\n'
    )
    assert len(out) == 1 and out[0].payload is None
    assert out[0].data.endswith("NaN}")
