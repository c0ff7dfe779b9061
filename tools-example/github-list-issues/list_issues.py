"""github_list_issues: issues of a repository through the GitHub REST API.

The token arrives in GITHUB_TOKEN; the API base URL is GITHUB_API_URL (https://api.github.com unless
set, e.g. to GitHub Enterprise's https://HOST/api/v3 or a local stand-in in tests).
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
    query = urllib.parse.urlencode({"state": request.get("state", "open"), "per_page": int(request.get("limit", 30))})
    call = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        f"{base}/repos/{owner}/{repo}/issues?{query}",
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "pocket-runner-github-list-issues",
        },
    )
    try:
        with urllib.request.urlopen(call, timeout=20) as response:  # noqa: S310
            issues = json.load(response)
    except urllib.error.HTTPError as exc:
        try:
            detail = json.load(exc).get("message", "")
        except ValueError:
            detail = ""
        fail(f"GitHub answered HTTP {exc.code}" + (f": {detail}" if detail else ""))
    except urllib.error.URLError as exc:
        fail(f"cannot reach GitHub: {exc.reason}")
    result = [
        {
            "number": issue["number"],
            "title": issue["title"],
            "state": issue["state"],
            "author": (issue.get("user") or {}).get("login"),
            "url": issue.get("html_url"),
        }
        for issue in issues
        if "pull_request" not in issue
    ]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
