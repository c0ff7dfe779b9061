#!/usr/bin/env bash
# Prepare a machine (a developer's or CI's: Debian 12, root) to build and test
# pocket-runner. Idempotent: a second run checks everything and changes nothing.
#
#   1. apt packages: docker.io (a Docker engine), debootstrap, git
#   2. a Docker engine that answers `docker info` (dockerd started in the background)
#   3. .venv at the repository root with `pip install -e '.[dev]'`
#   4. the base images tools name, each pulled or, with no registry reachable, built:
#      python:3.11-slim  from Debian packages with debootstrap and `docker import`
#      golang:latest     (`baseImage: golang`) the Python image plus Debian's golang-1.23 (backports)
#      node:20-slim      (`language: node`, sandbox.node_image) the Python image plus
#                        Debian's nodejs and npm (Debian 12's node is 18)
#
# Usage: scripts/setup.sh [--no-image] [--gvisor] [--test]
#   --no-image                 skip step 4 (lint-only use)
#   --gvisor                   also install gVisor and register it with the engine (scripts/setup-gvisor.sh),
#                              for sandbox.runtime = "runsc"
#   --test                     also install what the tests need (scripts/setup-test-deps.sh), gVisor included:
#                              the hostile-tool tests run under both runtimes
#   POCKET_SETUP_PYTHON_IMAGE  image name to ensure instead of python:3.11-slim
#   POCKET_SETUP_GOLANG_IMAGE  image name to ensure instead of golang:latest
#   POCKET_SETUP_NODE_IMAGE    image name to ensure instead of node:20-slim
#
# Progress goes to stderr, each line prefixed "setup:".
set -euo pipefail

readonly PYTHON_IMAGE="${POCKET_SETUP_PYTHON_IMAGE:-python:3.11-slim}"
readonly GOLANG_IMAGE="${POCKET_SETUP_GOLANG_IMAGE:-golang:latest}"
readonly NODE_IMAGE="${POCKET_SETUP_NODE_IMAGE:-node:20-slim}"
readonly APT_PACKAGES=(docker.io debootstrap git)
readonly DOCKERD_LOG=/var/log/pocket-dockerd.log
readonly DOCKERD_PIDFILE=/var/run/pocket-dockerd.pid
readonly DOCKERD_WAIT_SECONDS=60
readonly PULL_TIMEOUT_SECONDS=20
readonly CACHE_DIR=/var/cache/pocket-runner
readonly LOG_DIR=/tmp
# What debootstrap builds. The rootfs cache key is derived from these and from
# ROOTFS_RECIPE, so changing any of them (or the customisation below, which
# must bump ROOTFS_RECIPE) builds a fresh rootfs instead of reusing a stale one.
readonly DEBIAN_SUITE=bookworm
readonly DEBIAN_MIRROR=http://deb.debian.org/debian
readonly DEBOOTSTRAP_INCLUDE=python3,python3-venv,python3-pip,python-is-python3,ca-certificates
readonly ROOTFS_RECIPE=1
# The same environment python:3.11-slim declares, so tools see no difference.
readonly IMPORT_CHANGES=(
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
  --change 'ENV LANG=C.UTF-8'
  --change 'CMD ["python3"]'
)

# The script works from any cwd: everything is relative to the repository root.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
readonly ROOT
readonly VENV="$ROOT/.venv"
readonly STAMP="$VENV/.pocket-setup-stamp"

# ---------------------------------------------------------------- helpers

log() { printf 'setup: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Milliseconds since the epoch, from bash itself (no fork). EPOCHREALTIME uses
# the locale's decimal separator, so keep only the digits (microseconds).
now_ms() { local us="${EPOCHREALTIME//[!0-9]/}"; echo $((us / 1000)); }

# "1234" (ms) -> "1.2s"
fmt_ms() { printf '%d.%ds' $(($1 / 1000)) $(($1 % 1000 / 100)); }

# Run a step function, announcing it and how long it took.
step() {
  local title="$1"; shift
  local t0; t0="$(now_ms)"
  log "$title ..."
  "$@"
  log "$title: done ($(fmt_ms $(($(now_ms) - t0))))"
}

# Print the last lines of a log file to stderr, for a failure message.
show_tail() {
  local file="$1" lines="${2:-30}"
  [[ -s "$file" ]] || return 0
  log "last $lines lines of $file:"
  tail -n "$lines" "$file" | sed 's/^/setup:   | /' >&2
}

need_root() {
  [[ "$(id -u)" == 0 ]] || die "$1 needs root (run as root)"
}

# Run a command with its output appended to a log file; on failure show the tail.
run_logged() {
  local logfile="$1"; shift
  if ! "$@" >>"$logfile" 2>&1; then
    show_tail "$logfile"
    die "command failed: $* (full log: $logfile)"
  fi
}

# ---------------------------------------------------------------- 1. apt packages

pkg_installed() {
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

# Debian's own python3 has no venv module without python3-venv (pyenv's has),
# and a machine with no Python 3.11 at all gets Debian 12's, which is 3.11.
host_python_packages() {
  local py
  venv_usable && return 0 # the host Python is only needed to create the venv
  if ! py="$(find_python)"; then
    echo python3 python3-venv
  elif [[ "$(command -v "$py")" == /usr/bin/* ]] && ! "$py" -c 'import ensurepip' 2>/dev/null; then
    echo python3-venv
  fi
}

ensure_apt_packages() {
  local missing=() pkg extra=()
  for pkg in "${APT_PACKAGES[@]}"; do
    pkg_installed "$pkg" || missing+=("$pkg")
  done
  read -r -a extra <<<"$(host_python_packages)"
  missing+=("${extra[@]}")
  if ((${#missing[@]} == 0)); then
    log "apt packages present: ${APT_PACKAGES[*]}"
    return 0
  fi
  need_root "installing ${missing[*]}"
  log "installing ${missing[*]} (log: $LOG_DIR/pocket-setup-apt.log)"
  local apt_log="$LOG_DIR/pocket-setup-apt.log"
  : >"$apt_log"
  # A fresh machine has no (or stale) package lists; update only when we install.
  run_logged "$apt_log" apt-get update -q
  # With Recommends, as measured here: docker.io recommends cgroupfs-mount and
  # apparmor, debootstrap recommends the archive keyring it verifies with.
  run_logged "$apt_log" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
}

# ---------------------------------------------------------------- 2. Docker engine

docker_answers() { docker info >/dev/null 2>&1; }

# True when the pid in file $1 is a live process.
pidfile_alive() {
  local pid
  [[ -r "$1" ]] && pid="$(cat "$1" 2>/dev/null)" && [[ "$pid" =~ ^[0-9]+$ ]] &&
    kill -0 "$pid" 2>/dev/null
}

ensure_docker_engine() {
  if docker_answers; then
    log "Docker engine answers ($(docker version -f '{{.Server.Version}}' 2>/dev/null || echo '?'))"
    return 0
  fi
  # A dockerd that is still starting (ours from a previous run, or one started by
  # the system) does not answer yet: wait for it rather than start a second one,
  # which would fight it over /var/run/docker.pid and the socket.
  if pidfile_alive "$DOCKERD_PIDFILE" || pidfile_alive /var/run/docker.pid; then
    log "a dockerd is running but not answering yet; waiting for it"
  else
    need_root "starting dockerd"
    command -v dockerd >/dev/null || die "dockerd not found (is docker.io installed?)"
    log "starting dockerd in the background (log: $DOCKERD_LOG)"
    # setsid + nohup: the engine must outlive this script and any process group
    # or terminal that CI tears down after it. 9>&-: it must not inherit the
    # setup lock (see main), or every later setup.sh would wait for it forever.
    setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null 9>&- &
    echo $! >"$DOCKERD_PIDFILE"
  fi
  local deadline=$((SECONDS + DOCKERD_WAIT_SECONDS))
  until docker_answers; do
    if ((SECONDS >= deadline)); then
      show_tail "$DOCKERD_LOG" 40
      die "Docker engine did not answer 'docker info' within ${DOCKERD_WAIT_SECONDS}s"
    fi
    if ! pidfile_alive "$DOCKERD_PIDFILE" && ! pidfile_alive /var/run/docker.pid; then
      show_tail "$DOCKERD_LOG" 40
      die "dockerd exited before answering 'docker info'"
    fi
    sleep 0.5
  done
  log "Docker engine answers ($(docker version -f '{{.Server.Version}}' 2>/dev/null || echo '?'))"
}

# ---------------------------------------------------------------- 3. Python venv

# The Python 3.11 on PATH: python3.11 if there is one, else python3 if it is 3.11+.
find_python() {
  local cand
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null &&
      "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$cand"
      return 0
    fi
  done
  return 1
}

venv_usable() {
  [[ -x "$VENV/bin/python" ]] &&
    "$VENV/bin/python" -c 'import sys, pip; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}

pyproject_hash() { sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1; }

ensure_venv() {
  if ! venv_usable; then
    local py
    py="$(find_python)" || die "no Python 3.11 on PATH (python3.11 or python3 >= 3.11)"
    # A broken venv (its interpreter gone, e.g. after a Python upgrade) cannot be
    # repaired in place; start over.
    [[ -e "$VENV" ]] && log "removing unusable $VENV"
    rm -rf "$VENV"
    log "creating $VENV with $(command -v "$py") ($("$py" -V 2>&1))"
    "$py" -m venv "$VENV" || die "'$py -m venv' failed (Debian's python3 needs python3-venv)"
  fi
  local want
  want="$(pyproject_hash)"
  if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    log "dependencies up to date (pyproject.toml unchanged since the last install)"
    return 0
  fi
  log "pip install -e '.[dev]' into $VENV"
  local t0; t0="$(now_ms)"
  # cd: pip resolves '.' against the cwd; stdout to stderr keeps stdout clean.
  (cd "$ROOT" && "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[dev]') >&2 ||
    die "pip install -e '.[dev]' failed"
  log "pip install took $(fmt_ms $(($(now_ms) - t0)))"
  # Only after success, so a failed install is retried on the next run.
  echo "$want" >"$STAMP"
}

# ---------------------------------------------------------------- 4. base image

image_present() { docker image inspect "$1" >/dev/null 2>&1; }

# Cache file for the finished rootfs; the name changes whenever the recipe does.
rootfs_cache_file() {
  local key
  key="$(printf '%s\n' "$DEBIAN_SUITE" "$DEBIAN_MIRROR" "$DEBOOTSTRAP_INCLUDE" "$ROOTFS_RECIPE" "$(dpkg --print-architecture)" |
    sha256sum | cut -c1-12)"
  echo "$CACHE_DIR/rootfs-$DEBIAN_SUITE-minbase-$key.tar"
}

# Unmount anything debootstrap may have left mounted in $1 (if it was killed
# half way), then delete it without ever crossing into another file system.
remove_rootfs_dir() {
  local dir="$1" m
  [[ -d "$dir" ]] || return 0
  for m in dev/pts dev proc sys; do
    if mountpoint -q "$dir/$m" 2>/dev/null; then umount -l "$dir/$m" || true; fi
  done
  rm -rf --one-file-system "$dir"
}

# Make the Debian rootfs behave like python:3.11-slim for tools.
customise_rootfs() {
  local dir="$1"
  # Debian marks its Python as externally managed (PEP 668), so `pip install .`
  # as root would refuse; the official image has no such marker.
  rm -f "$dir"/usr/lib/python3*/EXTERNALLY-MANAGED
  [[ -x "$dir/usr/bin/python3" ]] || die "rootfs has no /usr/bin/python3"
  [[ -e "$dir/usr/bin/python" ]] || die "rootfs has no /usr/bin/python (python-is-python3)"
  if [[ ! -e "$dir/usr/bin/pip" && ! -e "$dir/usr/local/bin/pip" ]]; then
    mkdir -p "$dir/usr/local/bin"
    printf '#!/bin/sh\nexec python3 -m pip "$@"\n' >"$dir/usr/local/bin/pip"
    chmod 755 "$dir/usr/local/bin/pip"
  fi
  # Downloaded .debs and package lists only take space at run time (the
  # official image ships without them too).
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/cache/apt/*.bin
  [[ ! -d "$dir/var/lib/apt/lists" ]] ||
    find "$dir/var/lib/apt/lists" -mindepth 1 -maxdepth 1 ! -name partial ! -name lock -exec rm -rf {} +
  # The host's resolver settings and name leak in through debootstrap; Docker
  # provides its own at run time.
  : >"$dir/etc/resolv.conf"
  rm -f "$dir/etc/hostname"
}

# Build the rootfs tarball with debootstrap into $1 (atomically: a killed build
# leaves no half-written cache file behind).
build_rootfs_tarball() {
  local tarball="$1" dir deb_log="$LOG_DIR/pocket-setup-debootstrap.log"
  need_root "debootstrap"
  command -v debootstrap >/dev/null || die "debootstrap not found"
  mkdir -p "$CACHE_DIR"
  dir="$(mktemp -d /var/tmp/pocket-rootfs.XXXXXX)"
  # shellcheck disable=SC2064  # expand $dir now: it is local to this function
  trap "remove_rootfs_dir '$dir'; rm -f '$tarball.tmp'" EXIT
  log "debootstrap $DEBIAN_SUITE into $dir (about 70 s; log: $deb_log)"
  local t0; t0="$(now_ms)"
  if ! debootstrap --variant=minbase --include="$DEBOOTSTRAP_INCLUDE" \
    "$DEBIAN_SUITE" "$dir" "$DEBIAN_MIRROR" >"$deb_log" 2>&1; then
    show_tail "$deb_log"
    show_tail "$dir/debootstrap/debootstrap.log"
    die "debootstrap failed"
  fi
  log "debootstrap took $(fmt_ms $(($(now_ms) - t0)))"
  customise_rootfs "$dir"
  t0="$(now_ms)"
  tar -C "$dir" --numeric-owner -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  log "cached rootfs $tarball ($(du -h "$tarball" | cut -f1), $(fmt_ms $(($(now_ms) - t0))))"
  remove_rootfs_dir "$dir"
  trap - EXIT
}

# Fail (and leave nothing half-made behind) unless every check succeeds: a shell
# command run offline in the image, written "LABEL: COMMAND"; its output is shown.
#   verify_image IMAGE TARBALL CHECK...   (TARBALL: the cached rootfs it came from, or "")
verify_image() {
  local image="$1" tarball="$2" check out
  shift 2
  for check in "$@"; do
    if out="$(docker run --rm --network none --entrypoint /bin/sh "$image" -c "${check#*: }" 2>&1)"; then
      log "  ${check%%: *}: ${out//$'\n'/ }"
      continue
    fi
    log "  ${check#*: }: ${out//$'\n'/ }"
    docker rmi -f "$image" >/dev/null 2>&1 || true
    # A cached rootfs that produced a broken image must not be reused.
    [[ -n "$tarball" ]] && rm -f "$tarball"
    die "image $image failed the check '${check%%: *}'; removed it"
  done
}

readonly PYTHON_CHECKS=("python: python -c 'import sys; print(sys.version)'" "pip: pip --version")
# `go build` itself, not only `go version`: a stdlib program, built and run.
readonly GOLANG_CHECKS=(
  "go: go version"
  "go build: cd /tmp && printf 'package main\\n\\nfunc main() { println(\"go build works\") }\\n' >m.go && go build -o m m.go && ./m 2>&1"
)
readonly NODE_CHECKS=("node: node --version" "npm: npm --version")

# True when `docker pull` brought the image (never waits long: with no registry a
# pull may fail fast or hang on DNS/TCP). Otherwise says why, briefly.
pulled() {
  local image="$1" pull_log="$LOG_DIR/pocket-setup-pull.log"
  log "image $image missing; trying docker pull (at most ${PULL_TIMEOUT_SECONDS}s)"
  if timeout -k 5 "$PULL_TIMEOUT_SECONDS" docker pull -q "$image" >"$pull_log" 2>&1; then
    return 0
  fi
  log "pull failed ($(tail -n 1 "$pull_log" | cut -c1-120))"
  return 1
}

ensure_python_image() {
  if image_present "$PYTHON_IMAGE"; then
    log "image $PYTHON_IMAGE present"
    return 0
  fi
  if pulled "$PYTHON_IMAGE"; then
    verify_image "$PYTHON_IMAGE" "" "${PYTHON_CHECKS[@]}"
    return 0
  fi
  log "building $PYTHON_IMAGE from Debian packages"
  local tarball
  tarball="$(rootfs_cache_file)"
  if [[ -s "$tarball" ]]; then
    log "reusing cached rootfs $tarball"
  else
    build_rootfs_tarball "$tarball"
  fi
  local t0; t0="$(now_ms)"
  docker import "${IMPORT_CHANGES[@]}" "$tarball" "$PYTHON_IMAGE" >/dev/null ||
    die "docker import of $tarball failed"
  log "imported $PYTHON_IMAGE ($(fmt_ms $(($(now_ms) - t0))))"
  verify_image "$PYTHON_IMAGE" "$tarball" "${PYTHON_CHECKS[@]}"
}

# An image made of the Python image plus Debian packages, by `docker build` (apt
# fetches them from the Python image's Debian mirror: 15-30 s, where a debootstrap
# per image would take 70 s more). It keeps the Python image's files (tools never
# mind an extra Python).
#   ensure_layered_image IMAGE "PACKAGES" "DOCKERFILE LINES" CHECK...
ensure_layered_image() {
  local image="$1" packages="$2" lines="$3"
  shift 3
  if image_present "$image"; then
    log "image $image present"
    return 0
  fi
  if pulled "$image"; then
    verify_image "$image" "" "$@"
    return 0
  fi
  image_present "$PYTHON_IMAGE" || die "$image is built from $PYTHON_IMAGE, which is missing"
  local build_log="$LOG_DIR/pocket-setup-build-${image//[^A-Za-z0-9_.-]/_}.log"
  log "building $image: $PYTHON_IMAGE plus Debian's $packages (log: $build_log)"
  local t0; t0="$(now_ms)"
  : >"$build_log"
  # No build context: the Dockerfile comes on stdin. Debian's package lists and
  # .debs are removed in the same layer, as in the Python image.
  run_logged "$build_log" docker build --pull=false -t "$image" - <<DOCKERFILE
FROM $PYTHON_IMAGE
RUN echo "deb $DEBIAN_MIRROR $DEBIAN_SUITE-backports main" >/etc/apt/sources.list.d/backports.list && \
    apt-get update -q && \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $packages && \
    apt-get clean && rm -rf /var/lib/apt/lists/*
$lines
DOCKERFILE
  log "built $image ($(fmt_ms $(($(now_ms) - t0))))"
  verify_image "$image" "" "$@"
}

# Go from bookworm-backports: bookworm's own golang-go is 1.19, which refuses the `go 1.23.2` line today's
# `go mod init` writes. golang:latest's environment: GOPATH=/go with its bin on PATH, WORKDIR /go;
# GOTOOLCHAIN=local, so a go.mod asking for a newer Go fails saying so instead of trying to download one.
readonly GOLANG_PACKAGES="-t $DEBIAN_SUITE-backports golang-1.23-go"
readonly GOLANG_LINES='ENV GOPATH=/go GOTOOLCHAIN=local
ENV PATH=/go/bin:/usr/lib/go-1.23/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /go
CMD ["go", "version"]'
readonly NODE_LINES='CMD ["node"]'

ensure_base_images() {
  step "base image $PYTHON_IMAGE" ensure_python_image
  step "base image $GOLANG_IMAGE" ensure_layered_image "$GOLANG_IMAGE" "$GOLANG_PACKAGES" "$GOLANG_LINES" "${GOLANG_CHECKS[@]}"
  step "base image $NODE_IMAGE" ensure_layered_image "$NODE_IMAGE" "nodejs npm" "$NODE_LINES" "${NODE_CHECKS[@]}"
}

# ---------------------------------------------------------------- main

usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; }

main() {
  local with_image=1 with_test_deps=0 with_gvisor=0 arg
  for arg in "$@"; do
    case "$arg" in
      --no-image) with_image=0 ;;
      --gvisor) with_gvisor=1 ;;
      --test) with_test_deps=1 with_gvisor=1 ;;
      -h | --help) usage; return 0 ;;
      *) usage >&2; die "unknown argument: $arg" ;;
    esac
  done
  local t_start; t_start="$(now_ms)"
  cd "$ROOT"
  # Turn Ctrl-C and kill into a normal exit, so EXIT traps clean up temp dirs.
  trap 'exit 130' INT
  trap 'exit 143' TERM
  # Two setups at once (a developer and CI, or two shells) would race on apt's
  # lock, start two dockerds or build the image twice: run one after the other.
  # The lock is fd 9; a long-lived child (dockerd) must close it.
  exec 9>"$LOG_DIR/pocket-setup.lock"
  flock -w 900 9 || die "another setup.sh holds $LOG_DIR/pocket-setup.lock"

  step "apt packages" ensure_apt_packages
  step "Docker engine" ensure_docker_engine
  if ((with_gvisor)); then
    step "gVisor runtime" bash "$ROOT/scripts/setup-gvisor.sh"
  fi
  step "Python venv" ensure_venv
  if ((with_image)); then
    ensure_base_images
  else
    log "base images: skipped (--no-image)"
  fi
  if ((with_test_deps)); then
    step "test dependencies" bash "$ROOT/scripts/setup-test-deps.sh"
  fi
  log "ready ($(fmt_ms $(($(now_ms) - t_start))))"
}

main "$@"
