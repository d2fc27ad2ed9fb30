"""The leak guard watches only what a test started: its own ports and child processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from process_guard import _children, _listening_ports

LISTENER = (
    "import socket, time; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); time.sleep(60)"
)


def test_a_port_opened_by_this_process_is_seen():
    me = os.getpid()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert port in _listening_ports({me})
    assert port not in _listening_ports({me})


def _fd_targets(pid: int) -> set[str]:
    """What the open descriptors of ``pid`` point to; one closed while we look is skipped (a
    starting Python opens and closes files)."""
    targets = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            targets.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            pass
    return targets


def test_a_port_of_a_process_outside_the_test_is_ignored():
    # Double fork: the listener's parent (sh) exits at once, so the listener is not our descendant,
    # like a broker that other work on the machine runs.
    out = subprocess.run(
        ["sh", "-c", f'{sys.executable} -c "{LISTENER}" >/dev/null 2>&1 </dev/null & echo $!'],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        timeout=30,
    )
    pid = int(out.stdout.split()[0])
    try:
        deadline = time.monotonic() + 20
        port = None
        while port is None and time.monotonic() < deadline:
            for line in open("/proc/net/tcp").read().splitlines()[1:]:
                parts = line.split()
                inode = parts[9]
                if parts[3] == "0A" and f"socket:[{inode}]" in _fd_targets(pid):
                    port = int(parts[1].rsplit(":", 1)[1], 16)
            time.sleep(0.05)
        assert port is not None, "the outside listener did not start"
        me = os.getpid()
        assert pid not in _children(me)
        assert port not in _listening_ports({me, *_children(me)})
    finally:
        os.kill(pid, signal.SIGKILL)
