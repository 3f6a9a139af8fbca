"""The client's Server-Sent Events parser."""

from sdpo.client import Event, parse_sse


def test_parse_sse_events_comments_and_multiline_data():
    lines = [
        ": ping", "", "id: 1-0", "event: status", 'data: {"a": 1}', "",
        "id: 2-0", "event: step", "data: line1", "data: line2", "", "data:x", "",
    ]  # fmt: skip
    assert list(parse_sse(iter(lines))) == [
        Event("1-0", "status", '{"a": 1}'),
        Event("2-0", "step", "line1\nline2"),
        Event(None, "message", "x"),
    ]
