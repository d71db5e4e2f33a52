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
