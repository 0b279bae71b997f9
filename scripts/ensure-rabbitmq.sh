#!/usr/bin/env bash
# Makes sure a RabbitMQ broker answers on 127.0.0.1:5672 with the stream plugin's
# features available and its stream protocol (the rabbitmq_stream plugin) on; installs
# Debian's package and starts it when absent.
set -euo pipefail

reachable() {
    python3 - "${1:-5672}" <<'PY'
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), 2).close()
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

# tidings reads the stream over the stream protocol (port 5552) when the plugin is on.
if ! reachable 5552; then
    echo "ensure-rabbitmq: enabling the rabbitmq_stream plugin" >&2
    rabbitmq-plugins enable rabbitmq_stream >/dev/null
    for _ in $(seq 1 30); do
        reachable 5552 && break
        sleep 1
    done
    reachable 5552 || { echo "ensure-rabbitmq: the stream protocol did not come up on 127.0.0.1:5552" >&2; exit 1; }
fi
echo "ensure-rabbitmq: RabbitMQ is up" >&2
