"""Child processes of a benchmark run: started pinned to a CPU, waited for, measured, and always stopped."""

from __future__ import annotations

import contextlib
import http.client
import os
import resource
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")

INSTALL_HINT = "install them with: apt-get install -y nginx-light wrk   (taskset is in util-linux)"


def missing_tools(tools: tuple[str, ...] = ("nginx", "wrk", "taskset")) -> list[str]:
    """The required programs that are not on PATH."""
    return [tool for tool in tools if shutil.which(tool) is None]


def pinned(cpu: int, argv: list[str]) -> list[str]:
    """Run `argv` on one CPU only."""
    return ["taskset", "-c", str(cpu), *argv]


@dataclass
class Child:
    """A started process and where its output goes."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Processes:
    """Owns every long-running child of a run; `stop_all()` ends them (process groups), whatever happened."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.children: list[Child] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        log = self.logdir / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env=env)
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    def stop(self, child: Child, grace: float = 5.0) -> None:
        """End one child (its process group) and forget it."""
        _signal_group(child.proc, signal.SIGTERM)
        try:
            child.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(child.proc, signal.SIGKILL)
            child.proc.wait(timeout=5)
        if child in self.children:
            self.children.remove(child)

    def stop_all(self, grace: float = 5.0) -> None:
        for child in self.children:
            _signal_group(child.proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in self.children:
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(child.proc, signal.SIGKILL)
                child.proc.wait(timeout=5)
        self.children.clear()

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    # each child leads its own session (start_new_session), so its pgid is its pid: this reaches nginx's
    # worker and anything Bastion forks, and nothing else
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port(child: Child, port: int, timeout: float = 15.0) -> None:
    """Wait until `port` accepts connections; fail early (with the log) if the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{child.tail()}")
        if port_open(port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{child.name} did not listen on 127.0.0.1:{port} within {timeout:g}s:\n{child.tail()}")


def http_status(port: int, method: str = "GET", path: str = "/", body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    """One request on a fresh connection: (status, body). Raises OSError when nothing answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_ready(child: Child, admin_port: int, listen_port: int, timeout: float = 30.0) -> str:
    """Wait for Bastion: `GET /readyz` on the admin port answering 200.

    Until the admin endpoint exists, a listener that accepts connections for 2 s while the admin port refuses
    them counts as ready. Returns how readiness was decided.
    """
    deadline = time.monotonic() + timeout
    listener_since: float | None = None
    last = "no answer"
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{child.tail()}")
        try:
            status, _ = http_status(admin_port, path="/readyz", timeout=1.0)
            if status == 200:
                return "GET /readyz -> 200"
            last = f"/readyz -> {status}"
            listener_since = None
        except OSError:
            if port_open(listen_port):
                listener_since = listener_since or time.monotonic()
                if time.monotonic() - listener_since >= 2.0:
                    return "listener port open (admin /readyz not answering)"
        time.sleep(0.1)
    raise RuntimeError(f"{child.name} not ready within {timeout:g}s ({last}):\n{child.tail()}")


def tree_pids(root: int) -> list[int]:
    """`root` and all its descendants, from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(parents.get(pid, ()))
    return out


def cpu_seconds(root: int) -> float:
    """utime + stime of a process and its live descendants (/proc/<pid>/stat fields 14 and 15)."""
    ticks = 0
    for pid in tree_pids(root):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / CLK_TCK


def children_cpu_seconds() -> float:
    """CPU time of this process's reaped children (wrk runs), for the load-side figure."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def core_ticks(cpu: int) -> tuple[int, int]:
    """(busy, total) clock ticks of one CPU from /proc/stat; busy includes irq and softirq time.

    On loopback much of the network stack runs in softirq context, which the kernel may charge to the CPU
    rather than to the process (IRQ time accounting), so a core's busy time is the fuller cost figure.
    """
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            values = [int(v) for v in line.split()[1:]]
            idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
            total = sum(values[:8])  # guest time is already inside user
            return total - idle, total
    raise RuntimeError(f"cpu{cpu} not found in /proc/stat")
