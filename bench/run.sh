#!/usr/bin/env bash
# Runs the proxy benchmark: mesh proxy vs HAProxy vs direct, on 127.0.0.1.
# Installs what it needs (HAProxy from Debian, fortio at a pinned version).
#   bench/run.sh            full run (about 5 minutes)
#   bench/run.sh --smoke    a few seconds per scenario, as CI runs it
# Other flags: see `go run ./bench/meshbench --help`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$(go env GOPATH)/bin:$PATH"
FORTIO_VERSION=v1.66.5 # newer releases need a module the module proxy refuses
if ! command -v haproxy >/dev/null; then
  apt-get update -qq && apt-get install -y -qq haproxy >/dev/null
fi
if [ "$(fortio version 2>/dev/null || true)" != "${FORTIO_VERSION#v}" ]; then
  GOFLAGS= go install "fortio.org/fortio@${FORTIO_VERSION}"
fi
exec go run ./bench/meshbench "$@"
