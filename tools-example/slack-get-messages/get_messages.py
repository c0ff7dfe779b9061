"""slack_get_messages: the latest messages of a channel (Slack Web API conversations.history).

Reads the request from stdin, prints JSON on stdout. The token arrives in SLACK_BOT_TOKEN; the API's
base URL is SLACK_API_URL (https://slack.com/api unless set, e.g. to a local stand-in in tests).
"""

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def main():
    request = json.load(sys.stdin)
    token = os.environ.get("SLACK_BOT_TOKEN")
    if not token:
        fail("SLACK_BOT_TOKEN is not set: the runner passes it once Slack is authorized")
    base = os.environ.get("SLACK_API_URL", "https://slack.com/api").rstrip("/")
    if not base.startswith(("https://", "http://")):
        fail(f"SLACK_API_URL must be an http(s) URL, got {base!r}")
    query = urllib.parse.urlencode({"channel": request["channel"], "limit": int(request.get("limit", 20))})
    call = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        f"{base}/conversations.history?{query}",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(call, timeout=20) as response:  # noqa: S310
            answer = json.load(response)
    except urllib.error.HTTPError as exc:
        fail(f"Slack answered HTTP {exc.code}")
    except urllib.error.URLError as exc:
        fail(f"cannot reach Slack: {exc.reason}")
    if not answer.get("ok"):  # Slack reports errors with HTTP 200 and ok: false
        fail(f"Slack refused: {answer.get('error', 'unknown error')}")
    messages = [
        {"user": m.get("user") or m.get("bot_id"), "text": m.get("text", ""), "ts": m.get("ts")}
        for m in answer.get("messages", [])
    ]
    print(json.dumps({"channel": request["channel"], "messages": messages, "has_more": bool(answer.get("has_more"))}))


if __name__ == "__main__":
    main()
