"""A fork server for cells: one process that has imported numpy and memstudy's cell once, and forks a fresh child
per cell, so that a cell does not pay the interpreter's start and its imports (about 0.6 s of a 1-2 s cell).

The child is still a fresh process of its own: its own heap from the fork on, its own VmHWM (Linux sets a forked
process's high-water mark to its resident pages at the fork), its own RSS baseline, its own session (process
group), address-space limit (RLIMIT_AS) and PR_SET_PDEATHSIG, and stdin/stdout/stderr pipes to the launcher as
an exec'd cell has; it runs the cell's own `main()` (memstudy.measure.cell). What it shares with the server is
what was resident before the fork: the interpreter and the imported modules, counted in its RSS as an exec'd
cell counts its own copy of them. Its probes' figures (step peaks above a baseline) are those of an exec'd cell;
its absolute figures (`hwm_bytes`, `vm_peak_bytes`) are of a process that imported what the server imported.

The server is started with the cells' environment (the allocator's MALLOC_MMAP_THRESHOLD_ is read at a process's
start, OpenBLAS's thread count at numpy's import), so a server serves one environment: the launcher keeps one
server per environment (`server_for`), e.g. one per BLAS thread count. The server gc.freeze()s its imports: a
cell's baseline collections then skip them (and the pages holding them are not copied on write by the collector).

Protocol: the launcher connects to the server's Unix socket and sends a JSON header (the address-space limit)
with three file descriptors (the cell's stdin, stdout and stderr); the server forks, answers `{"pid": N}`, and
when the child exits `{"returncode": R}` (Popen's convention: -signal when killed), then closes the connection.
The server exits when its stdin (a pipe from the launcher) closes: when the launcher exits or dies, and its
cells die with it (PR_SET_PDEATHSIG).

`MEMSTUDY_LAUNCHER=exec` in the launcher's environment selects the old way, a fresh interpreter per cell
(`python -m memstudy.measure.cell`); so does a platform without fork, pidfd_open or SCM_RIGHTS.
"""
from __future__ import annotations

import atexit
import gc
import io
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

LAUNCHER_ENV = "MEMSTUDY_LAUNCHER"  # "exec": a fresh interpreter per cell; anything else: the fork server
SERVER_MODULE = "memstudy.run.forkserver"
START_TIMEOUT_SECONDS = 60.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def available() -> bool:
    """Whether this platform can run the fork server (Linux: fork, pidfd_open, file descriptors over Unix sockets)."""
    return hasattr(os, "fork") and hasattr(os, "pidfd_open") and hasattr(socket, "send_fds") \
        and hasattr(socket, "AF_UNIX")


def wanted(env: dict[str, str] | None = None) -> bool:
    """Whether cells go through the fork server: unless MEMSTUDY_LAUNCHER=exec, where the platform allows."""
    env = os.environ if env is None else env
    return env.get(LAUNCHER_ENV, "").strip().lower() != "exec" and available()


def libc_prctl() -> Any:
    """libc's prctl, looked up before any fork: a forked child (of a threaded launcher) only calls it."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: the sweep still kills its cells on an interrupt
        return None


# --- the launcher's side ------------------------------------------------------------------------------------

class ForkServerError(OSError):
    """The server could not be started or reached."""


class ForkedCell:
    """A cell forked by the server, with the part of `subprocess.Popen`'s interface the launcher uses: `pid`,
    `returncode`, `communicate(input, timeout)`, `kill()`."""

    def __init__(self, conn: socket.socket, pid: int, stdin: int, stdout: int, stderr: int):
        self.pid, self.returncode = pid, None
        self._conn, self._stdin = conn, stdin
        self._out: dict[int, list[bytes]] = {stdout: [], stderr: []}
        self._stdout, self._stderr = stdout, stderr
        self._status = b""
        self._open = {stdout, stderr, conn.fileno()}

    def communicate(self, input: str | None = None, timeout: float | None = None) -> tuple[str, str]:
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._stdin >= 0:
            try:
                if input:
                    os.write(self._stdin, input.encode("utf-8"))  # a config: far below a pipe's 64 KiB
            except BrokenPipeError:  # the cell died before it read: its exit status says why
                pass
            os.close(self._stdin)
            self._stdin = -1
        with selectors.DefaultSelector() as sel:
            for fd in self._open:
                sel.register(fd, selectors.EVENT_READ)
            while self._open:
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    raise subprocess.TimeoutExpired("cell", timeout)
                for key, _ in sel.select(wait):
                    fd = key.fd
                    data = os.read(fd, 65536)
                    if fd == self._conn.fileno():
                        self._status += data
                    else:
                        self._out[fd].append(data)
                    if not data:
                        sel.unregister(fd)
                        self._open.discard(fd)
        self._close()
        self.returncode = _returncode(self._status)
        return (b"".join(self._out[self._stdout]).decode("utf-8", "replace"),
                b"".join(self._out[self._stderr]).decode("utf-8", "replace"))

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)

    def _close(self) -> None:
        for fd in (self._stdout, self._stderr):
            try:
                os.close(fd)
            except OSError:
                pass
        self._conn.close()


def _returncode(status: bytes) -> int:
    """The server's last message: the child's exit status; a lost server reads as the cell killed."""
    for line in reversed(status.splitlines()):
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if "returncode" in message:
            return int(message["returncode"])
    return -signal.SIGKILL


class ForkServer:
    """One server process (started with `env`), and a way to start cells through it."""

    def __init__(self, env: dict[str, str]):
        self._dir = tempfile.TemporaryDirectory(prefix="memstudy-forkserver-")
        self.path = os.path.join(self._dir.name, "socket")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.path)
        listener.listen(64)
        try:
            # the server's stdin is our pipe: it exits when we close it, or when we exit or die
            self.proc = subprocess.Popen([sys.executable, "-m", SERVER_MODULE, str(listener.fileno())],
                                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                         env=env, pass_fds=(listener.fileno(),), start_new_session=True)
        finally:
            listener.close()
        ready = self.proc.stderr.readline()  # the server's first line: "ready" once its imports are done
        if ready.strip() != b"ready":
            rest = self.proc.stderr.read() if self.proc.poll() is not None else b""
            self.close()
            last = (ready + rest).decode("utf-8", "replace").strip().splitlines()
            raise ForkServerError(f"the cell fork server did not start: {last[-1] if last else 'no output'}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def start(self, memory_limit_bytes: int | None) -> ForkedCell:
        """Fork one cell; its pipes are ours to feed and read."""
        pipes = [os.pipe() for _ in range(3)]  # stdin, stdout, stderr (both ends non-inheritable)
        ours = (pipes[0][1], pipes[1][0], pipes[2][0])
        theirs = (pipes[0][0], pipes[1][1], pipes[2][1])
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(self.path)
            header = json.dumps({"memory_limit_bytes": memory_limit_bytes}).encode("utf-8")
            socket.send_fds(conn, [header], list(theirs))
            reply = b""
            while not reply.endswith(b"\n"):
                data = conn.recv(4096)
                if not data:
                    raise ForkServerError("the cell fork server closed the connection before forking")
                reply += data
            first, _, rest = reply.partition(b"\n")
            pid = int(json.loads(first)["pid"])
        except BaseException:
            conn.close()
            for fd in ours:
                os.close(fd)
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        cell = ForkedCell(conn, pid, *ours)
        cell._status = rest  # a cell that exited at once: its status may have come with its pid
        return cell

    def close(self) -> None:
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
        if self.proc.stderr:
            self.proc.stderr.close()
        self._dir.cleanup()


_servers: dict[tuple[tuple[str, str], ...], ForkServer] = {}
_servers_lock = threading.Lock()


def server_for(env: dict[str, str]) -> ForkServer:
    """The server for cells with environment `env`, started on first use (and again if it died)."""
    key = tuple(sorted(env.items()))
    with _servers_lock:
        server = _servers.get(key)
        if server is None or not server.alive():
            if server is not None:
                server.close()
            server = _servers[key] = ForkServer(env)
        return server


@atexit.register
def close_servers() -> None:
    """Stop every server this process started."""
    with _servers_lock:
        for server in _servers.values():
            server.close()
        _servers.clear()


# --- the server's side --------------------------------------------------------------------------------------

def serve(listener: socket.socket) -> None:
    """Accept cells until stdin closes; see the module docstring."""
    from ..measure import cell  # noqa: F401  the imports every cell would make

    try:  # memory_profiler's first use imports these (probes._warm_up_mprof): once here, not once per cell
        import memory_profiler  # noqa: F401
        import multiprocessing.connection  # noqa: F401
        import multiprocessing.popen_fork  # noqa: F401
    except ImportError:
        pass
    prctl = libc_prctl()
    gc.collect()
    gc.freeze()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the launcher handles an interrupt: it kills the cells
    sys.stderr.write("ready\n")
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)  # nobody reads our stderr from here on: never block on a full pipe
    os.dup2(devnull, 2)
    os.close(devnull)
    children: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, connection)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "listener")
    sel.register(sys.stdin.fileno(), selectors.EVENT_READ, "stdin")
    server_pid = os.getpid()
    while True:
        for key, _ in sel.select():
            if key.data == "stdin":
                if not os.read(sys.stdin.fileno(), 4096):
                    return  # the launcher is gone or done: our cells die with us (PR_SET_PDEATHSIG)
            elif key.data == "listener":
                conn, _ = listener.accept()
                try:
                    message, fds, _, _ = socket.recv_fds(conn, 4096, 3)
                except OSError:
                    conn.close()
                    continue
                if len(fds) != 3:
                    for fd in fds:
                        os.close(fd)
                    conn.close()
                    continue
                header = json.loads(message or b"{}")
                pid = os.fork()
                if pid == 0:
                    _child(fds, header.get("memory_limit_bytes"), prctl, server_pid)  # never returns
                for fd in fds:
                    os.close(fd)
                pidfd = os.pidfd_open(pid)
                children[pidfd] = (pid, conn)
                sel.register(pidfd, selectors.EVENT_READ, "child")
                try:
                    conn.sendall(json.dumps({"pid": pid}).encode("utf-8") + b"\n")
                except OSError:  # the launcher went away (an interrupt): the cell's group is killed by it
                    pass
            else:
                pidfd = key.fd
                pid, conn = children.pop(pidfd)
                sel.unregister(pidfd)
                os.close(pidfd)
                _, status = os.waitpid(pid, 0)
                try:
                    conn.sendall(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}).encode("utf-8") + b"\n")
                except OSError:  # the launcher stopped waiting (an interrupt)
                    pass
                conn.close()


def _child(fds: list[int], limit_bytes: int | None, prctl: Any, server_pid: int) -> None:
    """The forked cell: its own session, death with the server, its limit, its pipes; then the cell's main()."""
    code = 1
    try:
        os.setsid()
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != server_pid:  # the server died before the line above: so do we
            os._exit(1)
        if limit_bytes:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
        for target, fd in enumerate(fds):
            os.dup2(fd, target)  # dup2 leaves 0-2 inheritable, as an exec'd cell's are
        os.closerange(3, _max_fd())  # the listener, the other cells' connections, the selector, the pidfds
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", line_buffering=False)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", line_buffering=True)
        from ..measure import cell

        code = cell.main()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException as exc:  # noqa: BLE001  reported like an exec'd cell's failure: its last stderr line
        try:
            os.write(2, f"{type(exc).__name__}: {exc}\n".encode("utf-8", "replace"))
        except OSError:
            pass
    finally:
        os._exit(code)


def _max_fd() -> int:
    try:
        return min(os.sysconf("SC_OPEN_MAX"), 1 << 20)
    except (ValueError, OSError):
        return 4096


def main() -> int:
    listener = socket.socket(fileno=int(sys.argv[1]))
    try:
        serve(listener)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
