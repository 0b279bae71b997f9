#!/usr/bin/env bash
# Installs Debian's Chromium for the browser tests; never a downloaded browser build.
set -euo pipefail
if [ ! -x /usr/bin/chromium ]; then
    echo "ensure-chromium: installing Debian's chromium" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
