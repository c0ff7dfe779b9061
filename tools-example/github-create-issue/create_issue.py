"""github_create_issue: open an issue through the GitHub REST API (POST /repos/OWNER/REPO/issues).

The token arrives in GITHUB_TOKEN; the API base URL is GITHUB_API_URL (https://api.github.com unless set).
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
    token = os.environ.get("GITHUB_TOKEN")
    if not token:
        fail("GITHUB_TOKEN is not set: the runner passes it once GitHub is authorized")
    base = os.environ.get("GITHUB_API_URL", "https://api.github.com").rstrip("/")
    if not base.startswith(("https://", "http://")):
        fail(f"GITHUB_API_URL must be an http(s) URL, got {base!r}")
    owner = urllib.parse.quote(request["owner"], safe="")
    repo = urllib.parse.quote(request["repo"], safe="")
    payload = {"title": request["title"], "body": request.get("body", ""), "labels": request.get("labels", [])}
    call = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        f"{base}/repos/{owner}/{repo}/issues",
        data=json.dumps(payload).encode(),
        method="POST",
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "Content-Type": "application/json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "pocket-runner-github-create-issue",
        },
    )
    try:
        with urllib.request.urlopen(call, timeout=20) as response:  # noqa: S310
            issue = json.load(response)
    except urllib.error.HTTPError as exc:
        try:
            detail = json.load(exc).get("message", "")
        except ValueError:
            detail = ""
        fail(f"GitHub answered HTTP {exc.code}" + (f": {detail}" if detail else ""))
    except urllib.error.URLError as exc:
        fail(f"cannot reach GitHub: {exc.reason}")
    print(json.dumps({"number": issue["number"], "url": issue.get("html_url"), "state": issue.get("state")}))


if __name__ == "__main__":
    main()
