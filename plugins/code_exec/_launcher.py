"""Sandbox launcher: runs inside the namespaces, confines itself, then runs the program.

Executed as ``python -I -B _launcher.py SPEC.json`` by ``sandbox.run_program``, usually
as the first process of fresh mount/network/PID namespaces made by ``unshare``. Standard
library only (it must not import tunesmith, torch or anything installed). Steps, in
order: read the spec and the program (before /tmp is covered), make every mount
read-only, put fresh size-limited tmpfs on /tmp, /var/tmp and /dev/shm, make the
interpreter's standard library reachable for the unprivileged uid, drop privileges
(a throw-away uid when started as root; all capabilities otherwise), set the resource
limits, disable sockets, run the program, and report completion on a private pipe with
a token the program never sees. The first process stays behind
as the namespace's init and reports the program's exit. Exit 97 = the sandbox itself
could not be set up.
"""

import _socket
import ctypes
import json
import os
import resource
import signal
import socket
import stat
import sys
import sysconfig
import tempfile

SETUP_FAILED = 97

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND = 32, 1024, 2048, 4096
MS_MOVE, MS_REC, MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 8192, 16384, 1 << 18, 1 << 21, 1 << 24
_OPT_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
              "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME, "strictatime": MS_STRICTATIME}
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP = 1, 38, 24

_libc = ctypes.CDLL(None, use_errno=True)


def _fail(message: str) -> None:
    sys.stderr.write(f"sandbox setup failed: {message}\n")
    sys.stderr.flush()
    os._exit(SETUP_FAILED)


def _mount(source, target, fstype, flags, data=None) -> None:
    enc = (lambda s: None if s is None else s.encode())
    if _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def _mount_points() -> list:
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            # fields[4] = mount point (octal escapes for spaces), fields[5] = per-mount options
            point = fields[4].encode().decode("unicode_escape")
            points.append((point, fields[5].split(",")))
    return points


def _readonly_everything() -> None:
    """Remount every mount of this (private) mount namespace read-only."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    for point, opts in _mount_points():
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for opt in opts:
            flags |= _OPT_FLAGS.get(opt, 0)   # keep nosuid/nodev/...: dropping them is refused
        try:
            _mount(None, point, None, flags)
        except OSError:
            pass   # e.g. a mount covered by another one; everything reachable is handled


def _first_closed_ancestor(path: str, uid: int):
    """The top-most directory above ``path`` that ``uid`` (no groups) cannot traverse."""
    parts = path.strip("/").split("/")
    for i in range(1, len(parts) + 1):
        d = "/" + "/".join(parts[:i])
        st = os.stat(d)
        mode = st.st_mode
        owner_ok = st.st_uid == uid and mode & stat.S_IXUSR
        if not (mode & stat.S_IXOTH or owner_ok):
            return d
    return None


def _cover(hide: list, keep: list, uid, stage: str) -> None:
    """Cover directories with an empty tmpfs, binding only ``keep`` (the standard library)
    back into them: the caller's home is hidden, and with ``uid`` (started as root) so is
    every directory that uid cannot traverse on the way to ``keep`` (e.g. /root)."""
    covers = {os.path.realpath(h) for h in hide if h and os.path.isdir(h) and os.path.realpath(h) != "/"}
    if uid is not None:
        covers |= {c for c in (_first_closed_ancestor(k, uid) for k in keep) if c}
    done: list = []
    n = 0
    for cover in sorted(covers, key=len):
        if any(cover == d or cover.startswith(d + "/") for d in done):
            continue   # already under an outer cover
        staged = []
        for k in keep:
            if k == cover or k.startswith(cover + "/"):
                s = os.path.join(stage, str(n))
                n += 1
                os.mkdir(s)
                _mount(k, s, None, MS_BIND | MS_REC)
                staged.append((s, k))
        _mount("tmpfs", cover, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
        for s, k in staged:
            os.makedirs(k, exist_ok=True)
            _mount(s, k, None, MS_MOVE)
        _mount(None, cover, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
        done.append(cover)


def _drop_capabilities() -> None:
    """Inside a user namespace we are its root: give every capability up for good."""
    for cap in range(64):
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() != 22:  # EINVAL: no such cap
            _fail(f"cannot drop capability {cap}: {os.strerror(ctypes.get_errno())}")

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    header, data = Header(0x20080522, 0), (Data * 2)()   # _LINUX_CAPABILITY_VERSION_3, all zero
    if _libc.capset(ctypes.byref(header), data) != 0:
        _fail(f"capset: {os.strerror(ctypes.get_errno())}")


def _set_limits(spec: dict) -> None:
    mb = 1024 * 1024
    limits = [(resource.RLIMIT_CORE, 0),
              (resource.RLIMIT_FSIZE, spec["fsize_mb"] * mb),
              (resource.RLIMIT_NOFILE, spec["nofile"]),
              (resource.RLIMIT_NPROC, spec["nproc"])]
    for which, value in limits:
        resource.setrlimit(which, (value, value))
    cpu = spec["cpu_s"]
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))   # SIGXCPU first, SIGKILL a second later
    # last: the address-space cap also binds this interpreter, so nothing big may follow it
    resource.setrlimit(resource.RLIMIT_AS, (spec["memory_mb"] * mb,) * 2)


def _disable_sockets() -> None:
    """Best effort on top of the empty network namespace: no socket objects from Python."""
    def refuse(*args, **kwargs):
        raise PermissionError("network access is disabled in the tunesmith sandbox")

    class NoSocket:
        def __init__(self, *args, **kwargs):
            refuse()

    for mod in (socket, _socket):
        for name in ("socket", "socketpair", "fromfd", "create_connection", "create_server",
                     "getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
            if hasattr(mod, name):
                setattr(mod, name, NoSocket if name == "socket" else refuse)
    socket.SocketType = NoSocket


def _fork_keeper(result_fd: int) -> None:
    """Stay behind as the namespace's first process (which the kernel shields from its own
    signals, and whose end kills the namespace) and run the program in a child, where
    signals, exit codes and process groups behave as usual."""
    pid = os.fork()
    if pid == 0:
        return
    os.close(result_fd)   # only the child may report completion
    while True:
        try:
            reaped, status = os.wait()
        except ChildProcessError:
            os._exit(SETUP_FAILED)
        if reaped == pid:
            break   # orphans it adopted die with the namespace when this process ends
    if os.WIFSIGNALED(status):
        os._exit(128 + os.WTERMSIG(status))
    os._exit(os.waitstatus_to_exitcode(status))


def main() -> None:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    token = sys.stdin.readline().strip()
    with open(spec["program"], encoding="utf-8") as f:
        source = f.read()
    result_fd = spec["result_fd"]
    os.set_inheritable(result_fd, False)
    uid = spec["uid"]

    workdir = spec["workdir"]
    if spec["mount_ns"]:
        try:
            _readonly_everything()
            for point, size in (("/tmp", spec["tmpfs_mb"]), ("/var/tmp", 8), ("/dev/shm", 8)):
                if os.path.isdir(point):
                    _mount("tmpfs", point, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size}m,mode=1777")
            workdir = "/tmp/work"
            os.mkdir(workdir, 0o700)
            if uid is not None:
                os.chown(workdir, uid, uid)
            # a virtualenv's platstdlib is its own lib/ (site-packages, which -I never reads): when
            # the venv sits under /tmp it is gone with the fresh tmpfs, and nothing needs it back
            libs = {os.path.realpath(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib")}
            libs = {lib for lib in libs if os.path.isdir(lib)}
            stage = "/tmp/.stage"
            os.mkdir(stage, 0o700)
            _cover(spec["hide"], sorted(libs), uid, stage)
            for d in os.listdir(stage):
                os.rmdir(os.path.join(stage, d))
            os.rmdir(stage)
        except OSError as exc:
            _fail(str(exc))

    env = {"HOME": workdir, "TMPDIR": workdir, "TMP": workdir, "TEMP": workdir,
           "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
           "PYTHONDONTWRITEBYTECODE": "1"}
    os.environ.clear()
    os.environ.update(env)
    os.chdir(workdir)
    os.umask(0o077)
    _fork_keeper(result_fd)
    try:
        if uid is not None:               # started as root: become a uid nobody else uses
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        elif spec["user_ns"]:
            _drop_capabilities()
        _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        # changing credentials cleared unshare's --kill-child: ask again to die with it
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        _set_limits(spec)
    except OSError as exc:
        _fail(f"dropping privileges / setting limits: {exc}")
    if spec["block_sockets"]:
        _disable_sockets()
    tempfile.tempdir = workdir

    del spec
    code = compile(source, "program.py", "exec")
    namespace = {"__name__": "__main__", "__file__": os.path.join(workdir, "program.py"),
                 "__builtins__": __builtins__}
    exec(code, namespace)
    # reached only when the whole program, tests included, ran without raising or exiting
    sys.stdout.flush()
    sys.stderr.flush()
    os.write(result_fd, token.encode())
    os._exit(0)   # done: threads or atexit handlers it left behind do not get a say


if __name__ == "__main__":
    main()
