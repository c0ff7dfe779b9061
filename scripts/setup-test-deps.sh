#!/usr/bin/env bash
# What the tests need beyond the Python packages. Idempotent; called by `setup.sh --test`.
set -euo pipefail
