"""A throw-away local mosquitto broker: free loopback port, persistence, optional TLS + ACLs.

``LocalBroker`` is what ``ddnn deploy --local`` and the tests run. With ``secure=True`` it
generates a CA and a server certificate (``openssl``), one user and password per node
(``mosquitto_passwd``) and topic ACLs so that each node publishes only its own topics and reads
only what it needs (a device never sees the local predictions or the other devices' data). The
broker then uses each login as its client id (``use_username_as_clientid``), so a login can never
take over another node's session. Packets over ``MAX_PACKET_BYTES`` are refused by the broker.
"""

from __future__ import annotations

import logging
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ddnn.runtime.mqtt import BrokerSettings
from ddnn.runtime.protocol import Topics

log = logging.getLogger(__name__)

INSTALL_HINT = "install it with: sudo apt-get install mosquitto (Debian/Ubuntu)"
MAX_PACKET_BYTES = 4 * 1024 * 1024 + 1024  # the largest JSON message nodes accept, plus headers


def find_mosquitto() -> str:
    """Path of the ``mosquitto`` binary, or a ``ValueError`` that says how to install it."""
    for candidate in (
        shutil.which("mosquitto"),
        "/usr/sbin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    raise ValueError(f"the MQTT broker 'mosquitto' is not installed; {INSTALL_HINT}")


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def node_acl(namespace: str, node: str, groups: list[tuple[int, ...]]) -> list[str]:
    """ACL lines for one node's user: what it may publish (write) and subscribe to (read)."""
    t = Topics(namespace)
    lines = [f"user {node}", f"topic readwrite {t.status(node)}", f"topic read {t.control}"]
    if node != "client":  # every node may take part in a rollout, which only the operator starts
        lines += [
            f"topic write {t.stats(node)}",
            f"topic read {t.rollout}",
            f"topic read {t.rollout_bundle(node)}",
            f"topic write {t.rollout_reply(node)}",
        ]
    kind, _, index = node.partition("_")
    if kind == "device":
        lines += [
            f"topic write {t.device_scores(index)}",
            f"topic write {t.device_features(index)}",
            f"topic read {t.request}",
            f"topic read {t.progress}",
        ]
    elif node == "aggregator":
        lines += [
            f"topic read {t.device_scores('+')}",
            f"topic read {t.edge_scores('+')}",
            f"topic read {t.edge_receipts('+')}",
            f"topic read {t.status('#')}",
            f"topic readwrite {t.results}",
            f"topic readwrite {t.progress}",  # it resumes from its own retained progress
            f"topic write {t.request}",
            f"topic write {t.up}",
            f"topic write {t.forward}",
        ]
    elif kind == "edge":
        lines += [f"topic read {t.device_features(k)}" for k in groups[int(index)]]
        lines += [
            f"topic read {t.up}",
            f"topic read {t.forward}",
            f"topic write {t.edge_scores(index)}",
            f"topic write {t.edge_features(index)}",
            f"topic write {t.edge_receipts(index)}",
        ]
    elif node == "cloud":
        lines += [
            f"topic read {t.up}",
            f"topic read {t.forward}",
            f"topic read {t.device_features('+')}",
            f"topic read {t.edge_features('+')}",
            f"topic write {t.results}",
        ]
    elif node == "client":
        lines += [
            f"topic read {t.results}",
            f"topic read {t.status('#')}",
            f"topic read {t.stats('+')}",  # the gateway's metrics and dashboard
            f"topic read {t.request}",  # to count the control bytes devices receive
            f"topic read {t.progress}",
            f"topic write {t.control}",
            f"topic write {t.rollout}",  # the operator login: only it may roll a model out
            f"topic write {t.rollout_bundle('+')}",
            f"topic read {t.rollout_reply('+')}",
        ]
    elif node == "observer":  # gateways and watchers: they read, and publish nothing
        lines = [
            f"user {node}",
            f"topic read {t.results}",
            f"topic read {t.status('#')}",
            f"topic read {t.stats('+')}",
        ]
    else:
        raise ValueError(f"no ACL for node {node!r}")
    return lines


@dataclass
class Security:
    """Generated TLS material and per-node passwords of a secure local broker."""

    ca_file: Path
    passwords: dict[str, str] = field(default_factory=dict)


def _openssl(*args: str, cwd: Path) -> None:
    if shutil.which("openssl") is None:
        raise ValueError(
            "--secure needs the 'openssl' command; install it with: apt-get install openssl"
        )
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(folder: Path) -> None:
    """A throw-away CA and a server certificate for 127.0.0.1 / localhost (valid 2 days)."""
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=ddnn throw-away CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        cwd=folder,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        cwd=folder,
    )
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
        cwd=folder,
    )


class LocalBroker:
    """A mosquitto process on 127.0.0.1 owned by this object (a context manager)."""

    def __init__(
        self,
        namespace: str = "local",
        nodes: list[str] | None = None,
        groups: list[tuple[int, ...]] | None = None,
        secure: bool = False,
        port: int | None = None,
        folder: str | Path | None = None,
    ) -> None:
        self.binary = find_mosquitto()
        self.namespace = namespace
        self.secure = secure
        self.port = port or free_port()
        self._own_folder = folder is None
        self.folder = Path(folder or tempfile.mkdtemp(prefix="ddnn-broker-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None
        self.security: Security | None = None
        if secure:
            self.security = self._secure_setup(nodes or [], groups or [])
        self._write_config()

    def _secure_setup(self, nodes: list[str], groups: list[tuple[int, ...]]) -> Security:
        make_certificates(self.folder)
        security = Security(self.folder / "ca.crt")
        pwfile = self.folder / "passwords"
        acl: list[str] = []
        for node in [*nodes, "client", "observer"]:
            password = secrets.token_urlsafe(16)
            security.passwords[node] = password
            cmd = ["mosquitto_passwd", "-b", str(pwfile), node, password]
            if not pwfile.exists():
                cmd.insert(1, "-c")
            subprocess.run(cmd, check=True, capture_output=True)
            acl += [*node_acl(self.namespace, node, groups), ""]
        (self.folder / "acl").write_text("\n".join(acl))
        return security

    def _write_config(self) -> None:
        lines = [
            f"listener {self.port} 127.0.0.1",
            "persistence true",
            f"persistence_location {self.folder}/",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "max_queued_messages 100000",
            f"max_packet_size {MAX_PACKET_BYTES}",
            "set_tcp_nodelay true",  # mosquitto, too, leaves Nagle on by default (~40 ms at QoS 1)
            # Run as ourselves: as root mosquitto would switch to user 'mosquitto', which cannot
            # read this private temporary folder. (No effect when not started as root.)
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
        ]
        if self.secure:
            lines += [
                "allow_anonymous false",
                "use_username_as_clientid true",  # a login cannot take another node's session
                f"password_file {self.folder / 'passwords'}",
                f"acl_file {self.folder / 'acl'}",
                f"cafile {self.folder / 'ca.crt'}",
                f"certfile {self.folder / 'server.crt'}",
                f"keyfile {self.folder / 'server.key'}",
            ]
        else:
            lines.append("allow_anonymous true")
        (self.folder / "mosquitto.conf").write_text("\n".join(lines) + "\n")

    def settings(self, node: str | None = None) -> BrokerSettings:
        """How ``node`` connects (its own login when secure)."""
        if not self.secure:
            return BrokerSettings("127.0.0.1", self.port)
        assert self.security is not None
        user = node or "client"
        return BrokerSettings(
            "127.0.0.1",
            self.port,
            tls=True,
            ca_file=str(self.security.ca_file),
            username=user,
            password=self.security.passwords.get(user),
        )

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.secure else 'mqtt'}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> LocalBroker:
        """Start mosquitto and wait until it accepts connections."""
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.folder / "mosquitto.conf")],
            stdout=subprocess.DEVNULL,
            stderr=open(self.folder / "broker.log", "ab"),  # noqa: SIM115 - owned by the child
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log_text = (self.folder / "broker.log").read_text(errors="replace")[-2000:]
                raise ValueError(
                    f"mosquitto exited at start (status {self.process.returncode}): {log_text}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise ValueError(f"mosquitto did not listen on port {self.port} within {timeout:g} s")

    def stop(self) -> None:
        """Stop the broker (SIGTERM: it saves its persistent sessions first)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        """Stop and start again on the same port, keeping the persistent sessions."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
