#!/usr/bin/env bash
# Installs the pinned Node packages of the SDK conformance tests (npm ci from the lock file).
set -euo pipefail
cd "$(dirname "$0")/../conformance"
if ! command -v node >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --silent --no-audit --no-fund
fi
