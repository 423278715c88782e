"""The Python tool's jail against hostile code: one test per attack class, each asserting that nothing escaped.

Every attack runs through `run_python` as a rollout's program would, and each test checks the host afterwards (a file
absent, a secret not in the output, the test's own process alive, a server with no connection, no process left),
not only that an error came back. docs/sandbox.md lists what these tests show.
"""

import ast
import base64
import contextlib
import os
import platform
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from ropd.config import ConfigError, ToolsConfig
from ropd.tools import sandbox
from ropd.tools.sandbox import SANDBOX_UID, CallCgroup
from ropd.tools.toolbox import SandboxLimits, ToolError, build_toolbox, run_python

LIMITS = SandboxLimits(timeout=3.0, memory_mb=256, max_output_bytes=4000)
TRY = """
def attempt(label, action):
    try:
        print(label, "GOT", repr(action())[:300])
    except BaseException as exc:
        print(label, "REFUSED", type(exc).__name__, exc)
"""


def attempt(code: str, limits: SandboxLimits = LIMITS) -> str:
    """What the model would see: the program's output, or the tool's error."""
    try:
        return run_python(TRY + code, limits)
    except ToolError as exc:
        return str(exc)


def processes_with(token: str) -> list[int]:
    """Host pids whose command line holds `token`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if token.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


@pytest.fixture
def token() -> str:
    return f"ropd-canary-{uuid.uuid4().hex}"


@pytest.fixture
def secret(tmp_path, token) -> Path:
    """A root-only file planted on the host."""
    path = tmp_path / "root-only.txt"
    path.write_text(token)
    path.chmod(0o600)
    return path


@pytest.fixture
def victim():
    """A process the test started, which no program may signal."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process
    process.kill()
    process.wait()


@pytest.fixture
def server():
    """A loopback server the test runs: its port and the connections it accepted."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], accepted
    stop.set()
    thread.join()
    listener.close()
    for connection in accepted:
        connection.close()


# --- files ------------------------------------------------------------------------------------------------


def test_writes_outside_the_jail_reach_nothing_on_the_host(tmp_path):
    targets = [tmp_path / "escaped.txt", Path(sys.prefix) / "escaped.txt", Path("/usr/escaped.txt"), Path("/etc/escaped.txt")]
    code = "import os\n" + "".join(f"attempt('write', lambda: open({str(t)!r}, 'w').write('x'))\n" for t in targets)
    code += f"attempt('link', lambda: (os.symlink({str(tmp_path)!r}, 'link'), open('link/escaped.txt', 'w').write('x')))\n"
    code += f"attempt('mkfifo', lambda: os.mkfifo({str(tmp_path / 'fifo')!r}))\n"
    code += f"attempt('mknod', lambda: os.mknod({str(tmp_path / 'node')!r}))\n"
    code += "attempt('here', lambda: open('kept.txt', 'w').write('inside'))\n"
    output = attempt(code)
    assert not any(t.exists() for t in targets) and sorted(p.name for p in tmp_path.iterdir()) == []
    assert "here GOT 6" in output  # the working folder is writable


def test_a_root_only_file_planted_by_the_test_cannot_be_read(secret, token):
    inside_the_view = Path(sys.prefix) / f"root-only-{uuid.uuid4().hex}.txt"  # visible in the jail, owned by root, mode 0600
    inside_the_view.write_text(token)
    inside_the_view.chmod(0o600)
    try:
        output = attempt(
            "import os, sqlite3\n"
            f"for path in ({str(secret)!r}, {str(inside_the_view)!r}):\n"
            "    attempt('open', lambda: open(path).read())\n"
            "    attempt('proc-root', lambda: open('/proc/self/root' + path).read())\n"
            "    attempt('sqlite', lambda: sqlite3.connect('file:' + path + '?mode=ro', uri=True).execute('select 1').fetchall())\n"
            f"attempt('list', lambda: os.listdir({str(secret.parent)!r}))\n"
        )
    finally:
        inside_the_view.unlink()
    assert token not in output, output
    assert "Permission denied" in output  # the view's root-only file is there, and closed to the jail's user


def test_dir_fd_tricks_resolve_inside_the_jail_only(secret, token):
    relative = str(secret).lstrip("/")
    output = attempt(
        "import os\n"
        "root = os.open('/', os.O_RDONLY | os.O_DIRECTORY)\n"
        f"attempt('dir_fd', lambda: os.read(os.open({relative!r}, os.O_RDONLY, dir_fd=root), 200))\n"
        "up = os.open('.', os.O_RDONLY | os.O_DIRECTORY)\n"
        "for _ in range(12):\n"
        "    up = os.open('..', os.O_RDONLY | os.O_DIRECTORY, dir_fd=up)\n"
        f"attempt('dotdot', lambda: os.read(os.open({relative!r}, os.O_RDONLY, dir_fd=up), 200))\n"
        "attempt('listing', lambda: sorted(os.listdir(up)))\n"
        "attempt('cwd-link', lambda: os.readlink('/proc/1/cwd'))\n"
        f"attempt('parent-env', lambda: open('/proc/{os.getpid()}/environ', 'rb').read())\n"
    )
    assert token not in output and "dir_fd REFUSED FileNotFoundError" in output and "dotdot REFUSED FileNotFoundError" in output


def test_sqlite_creates_no_file_on_the_host(tmp_path):
    database = tmp_path / "escaped.sqlite"
    output = attempt(f"import sqlite3\nattempt('sqlite', lambda: sqlite3.connect({str(database)!r}).execute('create table t(x)'))\n")
    assert "sqlite REFUSED" in output and not database.exists()


# --- secrets ----------------------------------------------------------------------------------------------


def test_the_parents_environment_and_api_keys_stay_out_of_reach(monkeypatch, token):
    monkeypatch.setenv("OPENAI_API_KEY", token)
    output = attempt(
        "import os\n"
        "print(dict(os.environ))\n"
        f"attempt('test-process', lambda: open('/proc/{os.getpid()}/environ', 'rb').read())\n"
        f"attempt('its-parent', lambda: open('/proc/{os.getppid()}/environ', 'rb').read())\n"
        "for pid in [p for p in os.listdir('/proc') if p.isdigit()]:\n"
        "    attempt('pid ' + pid, lambda: open(f'/proc/{pid}/environ', 'rb').read())\n"
    )
    assert token not in output and "pid 1 " in output  # the jail's /proc holds the jail's own processes only


# --- processes and signals --------------------------------------------------------------------------------


def test_a_shell_started_through_fork_exec_is_jailed_too(tmp_path, victim):
    target = tmp_path / "from-the-shell.txt"
    shell = f"id -u; touch {target}; kill -9 {victim.pid}; echo done"
    output = attempt(
        "import _posixsubprocess, os, subprocess\n"
        "attempt('fork_exec', lambda: _posixsubprocess.fork_exec)\n"  # what subprocess calls below
        f"print(subprocess.run(['/bin/sh', '-c', {shell!r}], capture_output=True, text=True))\n"
        "pid = os.fork()\n"
        f"os.execv('/bin/sh', ['sh', '-c', {shell!r}]) if pid == 0 else print(os.waitpid(pid, 0))\n"
    )
    assert f"stdout='{SANDBOX_UID}\\n" in output and "done" in output  # the shell ran, as the jail's user
    assert not target.exists() and victim.poll() is None


def test_signals_cannot_reach_a_process_the_test_started(victim):
    output = attempt(
        "import os, signal\n"
        f"attempt('kill', lambda: os.kill({victim.pid}, signal.SIGKILL))\n"
        f"attempt('killpg', lambda: os.killpg({victim.pid}, signal.SIGKILL))\n"
        f"attempt('pidfd', lambda: signal.pidfd_send_signal(os.pidfd_open({victim.pid}), signal.SIGKILL))\n"
        f"attempt('trainer', lambda: os.kill({os.getpid()}, signal.SIGKILL))\n"
        "attempt('everyone', lambda: os.kill(-1, signal.SIGKILL))\n"  # all this user may signal: none but itself
    )
    time.sleep(0.2)
    assert victim.poll() is None and "pidfd REFUSED ProcessLookupError" in output


@pytest.mark.parametrize("cgroup", [True, False], ids=["cgroup-if-any", "pid-namespace-only"])
def test_no_process_outlives_a_call_that_timed_out(token, monkeypatch, cgroup):
    if not cgroup:
        monkeypatch.setattr(CallCgroup, "create", classmethod(lambda cls, *args: None))
    output = attempt(
        "import os, subprocess, sys\n"
        f"sleeper = [sys.executable, '-c', 'import time; time.sleep(60)', {token!r}]\n"
        "subprocess.Popen(sleeper, start_new_session=True)\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        os.execv(sys.executable, sleeper)\n"
        "    os._exit(0)\n"
        "while True:\n"
        "    pass\n"
    )
    assert "longer than the 3 s time limit" in output
    assert processes_with(token) == []


def test_no_process_outlives_a_call_that_ended(token):
    output = attempt(
        "import subprocess, sys\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', {token!r}], start_new_session=True)\n"
        "print('left a daemon')\n"
    )
    assert "left a daemon" in output and processes_with(token) == []


def test_the_jails_processes_run_as_an_unprivileged_host_user(token):
    seen: list[list[str]] = []

    def look() -> None:
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            for pid in processes_with(token):
                with contextlib.suppress(OSError):
                    seen.append([line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line[:4] in ("Uid:", "CapE")])
            time.sleep(0.01)

    thread = threading.Thread(target=look)
    thread.start()
    output = attempt(
        f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', 'import time; time.sleep(1)', {token!r}])\n"
        "status = dict(line.split(':', 1) for line in open('/proc/self/status').read().splitlines())\n"
        "print({k: status[k].strip() for k in ('Uid', 'CapEff', 'CapBnd', 'NoNewPrivs', 'Seccomp')})\n"
    )
    thread.join()
    assert seen and all(line.split()[1:] == [str(SANDBOX_UID)] * 4 for line in seen[0] if line.startswith("Uid:"))
    assert "'CapEff': '0000000000000000'" in output and "'NoNewPrivs': '1'" in output and "'Seccomp': '2'" in output


# --- the network and namespaces ---------------------------------------------------------------------------


def test_a_loopback_server_the_test_runs_gets_no_connection(server):
    port, accepted = server
    output = attempt(
        "import socket\n"
        f"attempt('ipv4', lambda: socket.create_connection(('127.0.0.1', {port}), timeout=1))\n"
        f"attempt('ipv6', lambda: socket.create_connection(('::1', {port}), timeout=1))\n"
        f"attempt('name', lambda: socket.create_connection(('localhost', {port}), timeout=1))\n"
    )
    time.sleep(0.3)
    assert accepted == [] and "ipv4 REFUSED" in output and "ipv6 REFUSED" in output


SYSCALLS = {
    "x86_64": {"bpf": 321, "keyctl": 250, "add_key": 248, "clone": 56, "clone3": 435},
    "aarch64": {"bpf": 280, "keyctl": 219, "add_key": 217, "clone": 220, "clone3": 435},
}


def test_setns_unshare_mount_ptrace_bpf_and_keyrings_are_refused_and_the_network_stays_empty(server):
    port, accepted = server
    numbers = SYSCALLS[platform.machine()]
    output = attempt(
        "import ctypes, errno, os, socket\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "def call(name, function, *args):\n"
        "    result = function(*args)\n"
        "    print(name, result, errno.errorcode.get(ctypes.get_errno(), '') if result == -1 else 'ALLOWED')\n"
        "call('setns', libc.setns, os.open('/proc/1/ns/net', os.O_RDONLY), 0)\n"
        "call('unshare-user', libc.unshare, 0x10000000)\n"
        "call('unshare-net', libc.unshare, 0x40000000)\n"
        "call('mount', libc.mount, b'none', b'/tmp', b'tmpfs', 0, None)\n"
        "call('ptrace', libc.ptrace, 0, 0, None, None)\n"
        f"call('bpf', libc.syscall, {numbers['bpf']}, 0, None, 0)\n"
        f"call('keyctl', libc.syscall, {numbers['keyctl']}, 0, 0)\n"
        f"call('add_key', libc.syscall, {numbers['add_key']}, b'user', b'k', b'v', 1, -4)\n"
        f"call('clone3', libc.syscall, {numbers['clone3']}, None, 0)\n"
        f"call('clone-newuser', libc.syscall, {numbers['clone']}, 0x10000000 | 17, None, None, None, None)\n"
        f"call('clone-newnet', libc.syscall, {numbers['clone']}, 0x40000000 | 17, None, None, None, None)\n"
        "pid = os.fork()\n"
        "os._exit(0) if pid == 0 else print('fork works', os.waitpid(pid, 0)[1])\n"
        f"attempt('connect', lambda: socket.create_connection(('127.0.0.1', {port}), timeout=1))\n"
    )
    for name in ("setns", "unshare-user", "unshare-net", "mount", "ptrace", "bpf", "keyctl", "add_key", "clone-newuser", "clone-newnet"):
        assert f"{name} -1 EPERM" in output
    assert "clone3 -1 ENOSYS" in output and "fork works 0" in output
    time.sleep(0.3)
    assert accepted == [] and "connect REFUSED" in output


# --- native code and the old audit hook -------------------------------------------------------------------

NATIVE = r"""
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>
__attribute__((constructor)) static void attack(void) {
    printf("native open %d kill %d uid %d\n", open(TARGET, O_WRONLY | O_CREAT, 0644), kill(VICTIM, SIGKILL), (int)getuid());
    fflush(stdout);
}
"""


def test_native_code_loaded_from_the_working_folder_stays_in_the_jail(tmp_path, victim):
    # `make install` builds llama-server with the same compiler (scripts/install-llama-cpp.sh): a failure, not a skip
    assert shutil.which("cc"), "needs a C compiler to build the shared object (Debian: apt-get install gcc)"
    target = tmp_path / "from-native-code.txt"
    source = tmp_path / "evil.c"
    source.write_text(NATIVE)
    library = tmp_path / "evil.so"
    defines = [f'-DTARGET="{target}"', f"-DVICTIM={victim.pid}"]
    subprocess.run(["cc", "-shared", "-fPIC", "-s", "-o", str(library), *defines, str(source)], check=True)
    encoded = base64.b64encode(library.read_bytes()).decode()
    output = attempt(
        f"import base64, importlib, sys\nopen('evil.so', 'wb').write(base64.b64decode({encoded!r}))\n"
        "sys.path.insert(0, '.')\nattempt('import', lambda: importlib.import_module('evil'))\n",
        SandboxLimits(timeout=3.0, memory_mb=256, max_output_bytes=64000),
    )
    time.sleep(0.2)
    assert f"native open -1 kill -1 uid {SANDBOX_UID}" in output  # the native code ran, in the jail
    assert not target.exists() and victim.poll() is None


def test_switching_off_an_audit_hook_gains_nothing(tmp_path, secret, token):
    target = tmp_path / "escaped.txt"
    output = attempt(
        "import builtins, sys\n"
        "builtins.any = lambda *args: False\n"
        "sys.modules['__main__'].__dict__.update(refuse=lambda *args: None)\n"
        f"attempt('write', lambda: open({str(target)!r}, 'w').write('x'))\n"
        f"attempt('read', lambda: open({str(secret)!r}).read())\n"
    )
    assert not target.exists() and token not in output and "write REFUSED" in output


# --- limits for the whole call ----------------------------------------------------------------------------


def _anonymous_memory(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
            total += sum(int(x.split()[1]) * 1024 for x in lines if x.startswith("RssAnon:"))  # none for a zombie
    return total


def _cgroups_work() -> bool:
    group = CallCgroup.create(64 << 20, 8)
    if group is not None:
        group.close()
    return group is not None


@pytest.mark.skipif(not _cgroups_work(), reason="no writable cgroup here: memory is capped per process only")
def test_several_children_together_stay_under_the_memory_limit(token):
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _anonymous_memory(processes_with(token)))
            time.sleep(0.01)

    thread = threading.Thread(target=sample)
    thread.start()
    child = "import time; data = b'x' * (150 << 20); print('held', flush=True); time.sleep(1.5)"
    output = attempt(
        "import subprocess, sys\n"
        f"children = [subprocess.Popen([sys.executable, '-c', {child!r}, {token!r}]) for _ in range(4)]\n"
        "print([c.wait() for c in children])\n",
        SandboxLimits(timeout=20.0, memory_mb=256, max_output_bytes=4000),
    )
    done.set()
    thread.join()
    assert "-9" in output or "ran out of memory (limit 256 MiB)" in output  # children were killed, or the program
    assert 0 < peak[0] <= 256 << 20  # 4 x 150 MiB were asked for; the call never held more than its limit


def test_several_children_together_stay_under_the_disk_limit():
    limits = SandboxLimits(timeout=10.0, memory_mb=256, max_output_bytes=4000, disk_mb=4)
    child = (
        "import sys\nwritten = 0\ntry:\n"
        "    for n in range(100000):\n"
        "        with open(f'/tmp/{sys.argv[1]}-{n}', 'wb') as handle:\n"
        "            handle.write(b'x' * 3000)\n"
        "        written += 3000\n"
        "except OSError as exc:\n"
        "    print(written, exc.errno)\n"
    )
    output = attempt(
        "import subprocess, sys\n"
        f"children = [subprocess.Popen([sys.executable, '-c', {child!r}, str(i)], stdout=subprocess.PIPE) for i in range(4)]\n"
        "results = [c.communicate()[0].split() for c in children]\n"
        "print('total', sum(int(r[0]) for r in results), 'errors', sorted(int(r[1]) for r in results))\n",
        limits,
    )
    assert "total " in output, output
    total = int(output.split("total ")[1].split()[0])
    assert 0 < total <= 4 << 20 and "errors [28, 28, 28, 28]" in output  # ENOSPC for each child, 4 MiB in all


def test_a_fork_bomb_is_capped_and_leaves_nothing_behind(token):
    output = attempt(
        "import subprocess, sys\nstarted = 0\ntry:\n"
        "    for _ in range(200):\n"
        f"        subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', {token!r}])\n"
        "        started += 1\n"
        "except OSError as exc:\n"
        "    print('started', started, exc)\n"
    )
    started = int(output.split("started ")[1].split()[0])
    assert 0 < started < LIMITS.processes and "Resource temporarily unavailable" in output
    assert processes_with(token) == []


# --- no silent downgrade ----------------------------------------------------------------------------------


def test_without_the_jail_the_tool_refuses_and_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(sandbox, "TOOL_PATH", str(tmp_path))
    sandbox.check_jail.cache_clear()
    try:
        with pytest.raises(ToolError, match=r"needs `bwrap`.*apt-get install bubblewrap.*unsafe-local"):
            run_python("print(1)", LIMITS)
        with pytest.raises(ConfigError, match=r"tools.python_sandbox.*apt-get install bubblewrap"):
            build_toolbox(ToolsConfig(names=["python"]))
        trusted = SandboxLimits(timeout=3.0, memory_mb=256, max_output_bytes=4000, sandbox="unsafe-local")
        assert run_python("print(6 * 7)", trusted).strip() == "42"
        assert build_toolbox(ToolsConfig(names=["python"], python_sandbox="unsafe-local")) is not None
    finally:
        sandbox.check_jail.cache_clear()


def test_without_the_seccomp_binding_the_tool_refuses_and_names_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "seccomp", None)
    monkeypatch.setitem(sys.modules, "pyseccomp", None)
    sandbox.seccomp_filter.cache_clear()
    sandbox.check_jail.cache_clear()
    try:
        with pytest.raises(ToolError, match=r"libseccomp's Python binding: pip install pyseccomp"):
            run_python("print(1)", LIMITS)
    finally:
        sandbox.seccomp_filter.cache_clear()
        sandbox.check_jail.cache_clear()


def test_the_jail_sees_no_home_no_run_folder_and_no_host_processes():
    repo = Path(__file__).resolve().parents[1]
    output = attempt(
        "import os, socket\n"
        f"attempt('repo', lambda: os.listdir({str(repo)!r}))\n"
        "attempt('root', lambda: sorted(os.listdir('/')))\n"
        "attempt('home', lambda: os.listdir('/home'))\n"
        "attempt('pids', lambda: sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\n"
        "attempt('host', lambda: socket.gethostname())\n"
        "attempt('cwd', lambda: os.getcwd())\n"
        "attempt('fds', lambda: sorted(int(fd) for fd in os.listdir('/proc/self/fd')))\n"
    )
    # the checkout is absent, or (a venv inside it, as `make install` makes) shows the bound venv and nothing else
    repo_seen = output.split("repo ")[1].splitlines()[0]
    bound = {Path(p).relative_to(repo).parts[0] for p in sandbox.file_view().binds if Path(p).is_relative_to(repo)}
    assert repo_seen.startswith("REFUSED FileNotFoundError") or set(ast.literal_eval(repo_seen.removeprefix("GOT "))) <= bound
    assert "home REFUSED FileNotFoundError" in output
    assert "fds GOT [0, 1, 2, 3]" in output  # stdin, stdout, stderr, the listing's own: none of the jail's set-up
    assert "pids GOT [1, 2]" in output and "host GOT 'sandbox'" in output and f"cwd GOT {sandbox.WORKDIR!r}" in output
    listed = ast.literal_eval(output.split("root GOT ")[1].splitlines()[0])
    assert set(listed) <= {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "sbin", "tmp", "usr", *_top_folders()}


def _top_folders() -> set[str]:
    return {Path(p).parts[1] for p in sandbox.file_view().binds}
