#!/usr/bin/env bash
# What the tests need beyond the Python packages. Idempotent; called by `setup.sh --test`.
#   - Debian's chromium, for the auth pages checked in a real headless browser (tests/test_auth_browser.py)
#   - node and npm (Debian's packages when missing), and the pinned node modules of the test
#     authorization server (tests/oidc: `npm ci` from the committed package-lock.json)
#   - Debian's postgresql, whose initdb and postgres the tests run themselves (tests/fixtures_postgres.py:
#     a server on a free 127.0.0.1 port in a temporary folder); no cluster of the package's own is made
#   - the TypeScript MCP SDK, a second MCP client for the tests (tests/mcp_ts, `npm ci` likewise)
#   - Debian's docker-registry, the local registry the Kubernetes backend's tests push tool images to
# Run as root (or with sudo) on Debian/Ubuntu.
set -euo pipefail

cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=""
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing="$missing chromium"
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
postgres_initdb() { ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1; }
if [ -z "$(postgres_initdb)" ]; then
    missing="$missing postgresql"
    # The package would make and start a "main" cluster on port 5432; the tests start their own servers.
    as_root mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" | as_root tee /etc/postgresql-common/createcluster.d/pocket-tests.conf >/dev/null
fi
# The image registry the Kubernetes backend's tests push to (tests/kube_standin.py starts it on 127.0.0.1)
command -v docker-registry >/dev/null 2>&1 || missing="$missing docker-registry"

if [ -n "$missing" ]; then
    echo "setup-test-deps: installing$missing"
    as_root apt-get update -qq
    # shellcheck disable=SC2086
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
fi

node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 18 ]; then
    echo "setup-test-deps: node $node_major is too old for oidc-provider (18 or newer needed)" >&2
    exit 1
fi

if [ ! -d tests/oidc/node_modules/oidc-provider ]; then
    echo "setup-test-deps: npm ci in tests/oidc"
    (cd tests/oidc && npm ci --no-audit --no-fund --loglevel=error)
fi

if [ ! -d tests/mcp_ts/node_modules/@modelcontextprotocol/sdk ]; then
    echo "setup-test-deps: npm ci in tests/mcp_ts (the TypeScript MCP SDK, a second client)"
    (cd tests/mcp_ts && npm ci --no-audit --no-fund --loglevel=error)
fi

postgres_version="$("$(postgres_initdb)" --version | awk '{print $3}')"
echo "setup-test-deps: ready (chromium: $(command -v chromium || command -v chromium-browser), node $(node --version), PostgreSQL $postgres_version)"
