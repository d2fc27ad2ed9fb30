"""Node processes a launcher starts: started with their logs, checked, killed, restarted, stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


class Processes:
    """Child processes started by a launcher; all are stopped on exit, whatever happens."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.commands: dict[str, tuple[list[str], dict[str, str]]] = {}

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> None:
        self.commands[name] = (cmd, env)
        out = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        self.procs[name] = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL
        )
        out.close()

    def check_alive(self, names: list[str] | None = None) -> None:
        for name in names or list(self.procs):
            p = self.procs.get(name)
            if p is not None and p.poll() is not None:
                text = (self.log_dir / f"{name}.log").read_text(errors="replace")
                last = [line for line in text.splitlines() if line.strip()][-1:] or ["no output"]
                raise ValueError(f"node {name} exited with status {p.returncode}: {last[0]}")

    def kill(self, name: str) -> None:
        """SIGKILL one node (a crash, for failure tests)."""
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait()

    def rejoin(self, name: str) -> None:
        """Start a node again (after a crash): it joins the running deployment at once."""
        cmd, env = self.commands[name]
        self.start(name, [a for a in cmd if a != "--wait-for-start"], env)

    def stop_all(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        for p in self.procs.values():
            if p.poll() is None:
                try:
                    p.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.terminate()
        for p in self.procs.values():
            try:
                p.wait(3)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a live process has used (from /proc), or ``None`` if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """One thread per node process: with 8+ processes on 2 cores, more threads only contend."""
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    env.update(extra or {})
    return env
