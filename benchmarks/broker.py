"""A private RabbitMQ node for the Web-STOMP target.

Web-STOMP runs inside the broker, so the broker's open-file limit caps it, and the Debian
wrapper starts the shared node with 1024 files. The bench starts a node of its own
(``tidings-bench@localhost``: AMQP 5673, Web-STOMP 15675, data under a temporary folder)
with the hard limit, and stops it at the end.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

__all__ = ["BrokerUnavailable", "PrivateBroker", "beam_pids", "listening"]

_SBIN = Path("/usr/lib/rabbitmq/bin")


class BrokerUnavailable(Exception):
    """The private node cannot be started here; says why."""


def beam_pids(home: str | None = None, exclude_home: str | None = None) -> list[int]:
    """PIDs of RabbitMQ Erlang VMs, optionally only those whose ``-home`` is (not) ``home``."""
    pids = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] != "beam.smp":
            continue
        cmdline = " ".join(proc.info["cmdline"] or [])
        if home is not None and f"-home {home} " not in cmdline:
            continue
        if exclude_home is not None and f"-home {exclude_home} " in cmdline:
            continue
        pids.append(proc.pid)
    return pids


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
    except OSError:
        return False
    return True


class PrivateBroker:
    """Start and stop the bench's own RabbitMQ node with Web-STOMP."""

    node = "tidings-bench@localhost"
    amqp_port = 5673
    stomp_port = 15675

    def __init__(self) -> None:
        self.home = Path(tempfile.gettempdir()) / "tidings-bench-rabbitmq"
        self.amqp_url = f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            HOME=str(self.home),
            RABBITMQ_CONF_ENV_FILE=str(self.home / "rabbitmq-env.conf"),
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_CONFIG_FILE=str(self.home / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.home / "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=str(self.home / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.home / "log"),
            RABBITMQ_DIST_PORT=str(self.amqp_port + 20000),
            ERL_EPMD_ADDRESS="127.0.0.1",
            # Keep Erlang distribution on loopback, as the shared node does.
            ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    def pids(self) -> list[int]:
        """The node's Erlang VM."""
        return beam_pids(home=str(self.home))

    def start(self, timeout_s: float = 90.0) -> None:
        """Start the node (a fresh data folder each time) and wait for Web-STOMP and AMQP.

        Raises:
            BrokerUnavailable: RabbitMQ is not installed, or the node did not come up in time.
        """
        server = _SBIN / "rabbitmq-server"
        if not server.exists():
            raise BrokerUnavailable(f"{server} not found")
        if self.pids():
            self.stop()
        shutil.rmtree(self.home, ignore_errors=True)
        self.home.mkdir(parents=True)
        (self.home / "rabbitmq-env.conf").write_text("")
        (self.home / "enabled_plugins").write_text("[rabbitmq_web_stomp].\n")
        (self.home / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.amqp_port}\n"
            f"web_stomp.tcp.ip = 127.0.0.1\nweb_stomp.tcp.port = {self.stomp_port}\n"
            "stomp.listeners.tcp.1 = 127.0.0.1:61614\n"
        )

        def raise_nofile() -> None:
            _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

        subprocess.run(
            [str(server), "-detached"], env=self._env(), cwd=self.home,
            preexec_fn=raise_nofile, check=False, timeout=60,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if listening(self.stomp_port) and listening(self.amqp_port):
                return
            time.sleep(0.5)
        self.stop()
        raise BrokerUnavailable(f"private RabbitMQ node not up in {timeout_s:.0f} s; "
                                f"see {self.home / 'log'}")

    def stop(self) -> None:
        """Stop the node: politely through rabbitmqctl, then by force (bounded in time)."""
        pids = self.pids()
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(
                [str(_SBIN / "rabbitmqctl"), "-n", self.node, "stop"], env=self._env(),
                check=False, timeout=60, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        procs = []
        for pid in pids:
            try:
                procs.append(psutil.Process(pid))
            except psutil.Error:
                continue
        _, alive = psutil.wait_procs(procs, timeout=15)
        for proc in alive:
            proc.kill()
