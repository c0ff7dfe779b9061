"""Spans as a tree: reads the JSON the OpenTelemetry SDK's console exporter writes and prints each trace
indented, with durations and attributes.

    OTEL_TRACES_EXPORTER=console pocket invoke tools-example/hello hello --body '{"name": "Ada"}' \\
        2>&1 >/dev/null | .venv/bin/python scripts/span_tree.py
"""

from __future__ import annotations

import json
import sys
from datetime import datetime


def spans(text: str) -> list[dict]:
    """The JSON objects in `text`, skipping any other line (progress messages)."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while (at := text.find("{", at)) != -1:
        try:
            span, at = decoder.raw_decode(text, at)
        except ValueError:
            at += 1
            continue
        if isinstance(span, dict) and "context" in span:
            found.append(span)
    return found


def milliseconds(span: dict) -> float:
    start, end = (datetime.fromisoformat(span[key].replace("Z", "+00:00")) for key in ("start_time", "end_time"))
    return (end - start).total_seconds() * 1000


def main() -> None:
    found = spans(sys.stdin.read())
    ids = {span["context"]["span_id"] for span in found}
    children: dict[str | None, list[dict]] = {}
    for span in sorted(found, key=lambda s: s["start_time"]):
        parent = span.get("parent_id") if span.get("parent_id") in ids else None
        children.setdefault(parent, []).append(span)

    def show(parent: str | None, depth: int) -> None:
        for span in children.get(parent, []):
            attributes = " ".join(f"{k}={v}" for k, v in sorted((span.get("attributes") or {}).items()))
            print(f"{'  ' * depth}{span['name']}  {milliseconds(span):.1f} ms  {attributes}".rstrip())
            show(span["context"]["span_id"], depth + 1)

    show(None, 0)


if __name__ == "__main__":
    main()
