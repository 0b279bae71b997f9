#!/usr/bin/env bash
# Makes sure a RabbitMQ broker answers on 127.0.0.1:5672 with the stream plugin's
# features available; installs Debian's package and starts it when absent.
set -euo pipefail

reachable() {
    python3 - <<'PY'
import socket, sys
try:
    socket.create_connection(("127.0.0.1", 5672), 2).close()
except OSError:
    sys.exit(1)
PY
}

if ! reachable; then
    if ! command -v rabbitmq-server >/dev/null 2>&1; then
        echo "ensure-rabbitmq: installing rabbitmq-server from Debian" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
    fi
    echo "ensure-rabbitmq: starting rabbitmq-server" >&2
    rabbitmq-server -detached || true
    for _ in $(seq 1 90); do
        reachable && break
        sleep 1
    done
fi
# The broker may accept TCP before it finished booting; wait until it answers.
rabbitmqctl await_startup >/dev/null 2>&1 || rabbitmqctl wait --timeout 60 >/dev/null 2>&1 || true
reachable || { echo "ensure-rabbitmq: RabbitMQ did not come up on 127.0.0.1:5672" >&2; exit 1; }
echo "ensure-rabbitmq: RabbitMQ is up" >&2
