#!/usr/bin/env bash
# gVisor for the sandbox (`sandbox.runtime = "runsc"`): Debian's runsc package, registered with the Docker
# engine as two runtimes, because this runsc (2022) must be told the container's network mode: `runsc`
# (--network=none) for containers without network, `runsc-net` (--network=host: the container's own network
# namespace, through the host kernel) for the ones on a network; the sandbox picks one per container. Idempotent: /etc/docker/daemon.json is rewritten, and dockerd told to
# reload it (SIGHUP: runtimes are reloadable, running containers are untouched), only when the entry changes.
# Called by `setup.sh --gvisor` (and `--test`) once the engine answers. Run as root.
set -euo pipefail

readonly DAEMON_JSON=/etc/docker/daemon.json
readonly APT_LOG=/tmp/pocket-setup-gvisor-apt.log
readonly RELOAD_WAIT_SECONDS=30

log() { printf 'setup-gvisor: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ "$(id -u)" == 0 ]] || die "registering a runtime with dockerd needs root"

if ! command -v runsc >/dev/null; then
  log "installing Debian's runsc (log: $APT_LOG)"
  if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q runsc; } >>"$APT_LOG" 2>&1; then
    tail -n 20 "$APT_LOG" >&2
    die "apt-get install runsc failed (full log: $APT_LOG)"
  fi
fi
RUNSC="$(command -v runsc)"
log "runsc: $RUNSC ($("$RUNSC" --version 2>/dev/null | head -n 1))"

# Merge {"runtimes": {"runsc": {...}}} into daemon.json, keeping every other key; exit 3 when unchanged.
changed=0
python3 - "$DAEMON_JSON" "$RUNSC" <<'PY' || changed=$?
import json, os, sys
path, runsc = sys.argv[1], sys.argv[2]
try:
    with open(path) as f:
        config = json.load(f)
except FileNotFoundError:
    config = {}
wanted = {
    "runsc": {"path": runsc, "runtimeArgs": ["--network=none"]},
    "runsc-net": {"path": runsc, "runtimeArgs": ["--network=host"]},
}
runtimes = config.setdefault("runtimes", {})
if all(runtimes.get(name) == entry for name, entry in wanted.items()):
    sys.exit(3)
runtimes.update(wanted)
os.makedirs(os.path.dirname(path), exist_ok=True)
with open(path + ".tmp", "w") as f:
    json.dump(config, f, indent=2)
    f.write("\n")
os.replace(path + ".tmp", path)
PY
case "$changed" in
  3) log "runtimes runsc and runsc-net already registered in $DAEMON_JSON" ;;
  0)
    log "registered runtimes runsc and runsc-net in $DAEMON_JSON"
    pid="$(cat /var/run/docker.pid 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || die "no running dockerd to reload (/var/run/docker.pid)"
    log "reloading dockerd (pid $pid)"
    kill -HUP "$pid"
    ;;
  *) die "could not update $DAEMON_JSON" ;;
esac

deadline=$((SECONDS + RELOAD_WAIT_SECONDS))
until docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc-net"'; do
  ((SECONDS < deadline)) || die "dockerd does not list the runtimes runsc, runsc-net after reloading $DAEMON_JSON"
  sleep 0.5
done
log "dockerd lists the runtimes runsc and runsc-net"
