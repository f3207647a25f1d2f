"""Run untrusted Python source in a separate, confined, time- and memory-limited process.

Never executes anything in the calling process. Each call: a fresh temporary directory
(removed afterwards), ``sys.executable -I -B`` started through ``unshare`` into new
mount, network and PID namespaces (plus a user namespace when not root) where that
works, otherwise as a plain child process; its own session, killed as a whole on
timeout. The confinement itself is done by ``_launcher.py`` inside; docs/sandbox.md
states exactly what is and is not contained.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAUNCHER = Path(__file__).with_name("_launcher.py")
STATUSES = ("passed", "failed", "timeout", "memory", "killed", "error")
_SETUP_FAILED = 97
_DETAIL_CHARS = 300
# uids handed to sandboxed programs when running as root: one per run, so that the
# RLIMIT_NPROC count (kept per uid by the kernel) covers only that run's processes
_UID_BASE, _UID_SPAN = 1_800_000_000, 100_000_000


@dataclasses.dataclass
class ExecResult:
    passed: bool
    status: str          # one of STATUSES
    detail: str          # last line of stderr (truncated), or why it was stopped
    seconds: float       # wall time of the child process

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Isolation:
    """What this machine allows, probed once per process (see describe_isolation)."""
    unshare: tuple          # the unshare command prefix, () when namespaces are unavailable
    user_ns: bool           # a user namespace is part of it (not root)
    drop_uid: bool          # running as root: the program runs under a throw-away uid
    reason: str             # why namespaces are not used, when they are not


def _probe(cmd: list) -> str:
    try:
        proc = subprocess.run(cmd + ["true"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return "" if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["failed"])[-1]


@functools.lru_cache(maxsize=1)
def _reachable_by_others(path: str) -> bool:
    """Whether a uid with no groups can traverse every directory down to ``path``."""
    parts = os.path.realpath(path).strip("/").split("/")
    for i in range(1, len(parts) + 1):
        try:
            if not os.stat("/" + "/".join(parts[:i])).st_mode & 0o001:
                return False
        except OSError:
            return False
    return True


def _plain(reason: str) -> Isolation:
    # as root without namespaces, a throw-away uid still makes RLIMIT_NPROC bind (root is
    # exempt from it) and keeps root's files out of reach, if that uid can reach the stdlib
    import sysconfig

    libs = [sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib")] + [tempfile.gettempdir()]
    drop = os.geteuid() == 0 and all(_reachable_by_others(p) for p in libs)
    return Isolation((), False, drop, reason)


def isolation() -> Isolation:
    if os.environ.get("TUNESMITH_SANDBOX_NO_NAMESPACES") == "1":
        return _plain("TUNESMITH_SANDBOX_NO_NAMESPACES=1")
    exe = shutil.which("unshare")
    if exe is None or sys.platform != "linux":
        return _plain("no unshare command (util-linux) on this machine")
    base = [exe, "--mount", "--net", "--pid", "--fork", "--kill-child", "--mount-proc"]
    if os.geteuid() == 0:
        err = _probe(base)
        if not err:
            return Isolation(tuple(base), False, True, "")
    user = [exe, "--user", "--map-root-user"] + base[1:]
    err2 = _probe(user)
    if not err2:
        return Isolation(tuple(user), True, False, "")
    return _plain(f"unshare failed: {err2}")


def describe_isolation() -> str:
    iso = isolation()
    if not iso.unshare:
        who = ", a throw-away uid" if iso.drop_uid else ""
        return f"plain child process{who}, socket guard only ({iso.reason})"
    who = "a throw-away uid (started as root)" if iso.drop_uid else "a user namespace, no capabilities"
    return f"namespaces mount+net+pid, read-only filesystem, private tmpfs /tmp, {who}"


def _user_thread_count(uid: int) -> int:
    n = 0
    try:
        pids = os.listdir("/proc")
    except OSError:
        return 0   # no /proc (not Linux): the limit is then just nproc
    for pid in pids:
        if pid.isdigit():
            try:
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    n += len(os.listdir(f"/proc/{pid}/task"))
            except OSError:
                pass
    return n


def _sweep_uid(uid: int) -> None:
    """Without a PID namespace: SIGKILL every process of the run's throw-away uid, in
    rounds, as a fork bomb may still be replacing them (at most nproc at a time)."""
    for _ in range(100):
        found = False
        try:
            pids = os.listdir("/proc")
        except OSError:
            return
        for pid in pids:
            if pid.isdigit():
                try:
                    if os.stat(f"/proc/{pid}").st_uid == uid:
                        os.kill(int(pid), signal.SIGKILL)
                        found = True
                except OSError:
                    pass
        if not found:
            return
        time.sleep(0.01)


def _kill_group(proc: subprocess.Popen) -> None:
    # the first process of the PID namespace is unshare's child: killing it makes the
    # kernel kill everything in the namespace, setsid() escapees included
    try:
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
            for child in f.read().split():
                os.kill(int(child), signal.SIGKILL)
    except (OSError, ValueError):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
    except ProcessLookupError:
        pass


def _tail(path: Path, limit: int = 8192) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= _DETAIL_CHARS else line[:_DETAIL_CHARS - 3] + "..."


def run_program(source: str, *, timeout_s: float = 10.0, memory_mb: int = 1024,
                cpu_s: float | None = None, nproc: int = 32, fsize_mb: int = 16,
                tmpfs_mb: int = 64) -> ExecResult:
    """Run ``source`` as a Python program in the sandbox; never raises for what it does.

    ``timeout_s`` is wall time for the whole child, ``cpu_s`` (default: ``timeout_s``) its
    CPU seconds, ``memory_mb`` its address space, ``nproc`` the processes/threads it may
    have, ``fsize_mb`` the largest file it may write, ``tmpfs_mb`` its writable space.
    """
    if not isinstance(source, str):
        raise TypeError(f"source must be a str, not {type(source).__name__}")
    iso = isolation()
    cpu = max(1, math.ceil(cpu_s if cpu_s is not None else timeout_s))
    root = Path(tempfile.mkdtemp(prefix="tunesmith-sandbox-"))
    read_fd = write_fd = None
    try:
        workdir = root / "work"
        workdir.mkdir()
        (root / "program.py").write_text(source, encoding="utf-8")
        uid = None
        if iso.drop_uid:
            uid = _UID_BASE + secrets.randbelow(_UID_SPAN)
            if not iso.unshare:   # the uid works right here: let it through, not look around
                os.chmod(root, 0o711)
                os.chown(workdir, uid, uid)
        limit = nproc
        if not iso.unshare and uid is None:
            # without a user or PID namespace the kernel counts all of this user's tasks
            limit = nproc + _user_thread_count(os.geteuid())
        read_fd, write_fd = os.pipe()
        spec = {"program": str(root / "program.py"), "workdir": str(workdir), "uid": uid,
                "mount_ns": bool(iso.unshare), "user_ns": iso.user_ns, "result_fd": write_fd,
                "memory_mb": int(memory_mb), "cpu_s": cpu, "nproc": int(limit),
                "fsize_mb": int(fsize_mb), "nofile": 64, "tmpfs_mb": int(tmpfs_mb),
                "block_sockets": True, "hide": [os.path.expanduser("~")]}
        (root / "spec.json").write_text(json.dumps(spec))
        token = secrets.token_hex(16)
        cmd = list(iso.unshare) + [sys.executable, "-I", "-B", str(LAUNCHER), str(root / "spec.json")]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        with open(root / "stdout", "wb") as out, open(root / "stderr", "wb") as err:
            start = time.monotonic()
            try:
                proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, stderr=err,
                                        cwd=str(workdir), env=env, pass_fds=(write_fd,),
                                        start_new_session=True, close_fds=True)
            except OSError as exc:
                return ExecResult(False, "error", f"cannot start the sandbox: {exc}", 0.0)
            os.close(write_fd)
            write_fd = None
            timed_out = False
            try:
                proc.stdin.write((token + "\n").encode())
                proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(proc)   # also whatever it left behind in its session
                proc.wait()
                if uid is not None and not iso.unshare:
                    _sweep_uid(uid)   # and what left the session
            seconds = time.monotonic() - start
        got = b""
        if select.select([read_fd], [], [], 0)[0]:
            got = os.read(read_fd, 256)
        stderr = _tail(root / "stderr")
        return _verdict(proc.returncode, timed_out, got == token.encode(), stderr, seconds,
                        timeout_s, cpu)
    finally:
        for fd in (read_fd, write_fd):
            if fd is not None:
                os.close(fd)
        shutil.rmtree(root, ignore_errors=True)


def _verdict(rc: int, timed_out: bool, completed: bool, stderr: str, seconds: float,
             timeout_s: float, cpu: int) -> ExecResult:
    last = _last_line(stderr)
    if timed_out:
        return ExecResult(False, "timeout", f"stopped after {timeout_s:g} s wall time", seconds)
    if rc == 0 and completed:
        return ExecResult(True, "passed", last, seconds)
    if rc == _SETUP_FAILED and "sandbox setup failed" in last:
        return ExecResult(False, "error", last, seconds)
    if "MemoryError" in stderr[-2000:] or "Cannot allocate memory" in stderr[-2000:]:
        return ExecResult(False, "memory", last or "MemoryError", seconds)
    sig = -rc if rc < 0 else (rc - 128 if rc > 128 else 0)
    if sig in (signal.SIGXCPU, signal.SIGKILL) and seconds >= cpu * 0.9:
        return ExecResult(False, "timeout", f"CPU limit of {cpu} s reached", seconds)
    if sig:
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        return ExecResult(False, "killed", f"killed by {name}" + (f": {last}" if last else ""), seconds)
    if rc == 0 or not last:
        return ExecResult(False, "failed", f"exited (status {rc}) before the end of the program", seconds)
    if last.startswith("AssertionError"):
        return ExecResult(False, "failed", last, seconds)
    return ExecResult(False, "error", last or f"exit status {rc}", seconds)
