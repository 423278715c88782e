"""The jail of the Python tool: each call runs hostile code inside bubblewrap, never in the trainer's reach.

Threat model (docs/sandbox.md says the same at length, with what each attack test shows). The program a rollout
sends to the `python` tool is written by the model being trained and is treated as hostile. The jail protects the
host's files (nothing of the host is visible but the interpreter's folders, read-only), secrets (no host /proc, no
environment but a minimal one), other processes (a new PID namespace, another user), the network (an empty network
namespace) and the trainer itself (limits for the whole call; the timeout ends every process of the call).

Each call runs, through Debian's `bwrap`:
- as uid 65534 with no capabilities and `no_new_privs`; where the trainer runs as root, `setpriv` drops to that host
  uid first, inside an outer bwrap that only builds the file view (so an interpreter under a folder the unprivileged
  user cannot enter, such as /root, is still reachable), and the jail's user maps to host uid 65534, never to root;
- in new user, mount, PID, IPC, UTS, network (and where possible cgroup) namespaces, with further user namespaces
  disabled;
- seeing only /usr (and its /bin, /lib links), the dynamic linker's cache and the interpreter's prefixes, read-only,
  a fresh /proc of its own PID namespace, a minimal read-only /dev, and a fresh size-limited tmpfs as /tmp, which is
  the working directory and HOME;
- under a seccomp filter (built with libseccomp) that refuses namespace, mount, ptrace, bpf, keyring, kernel-module,
  io_uring and similar system calls with EPERM, and clone3 with ENOSYS (so the C library falls back to clone, whose
  namespace flags the filter can see);
- with limits for the whole call: as root, where the cgroup v1 memory and pids hierarchies are writable, a cgroup
  per call caps the memory of all its processes together and their number; otherwise (and in addition) the PID
  namespace, the tmpfs size and per-process rlimits (address space, CPU seconds, file size, processes in the jail's
  user namespace, open files). The wall-clock timeout kills the call's first process; its PID namespace then ends
  every process of the call, and the call's cgroup is emptied and removed.

Not protected: kernel bugs (the jail is a namespace jail, not a VM), CPU and memory bandwidth shared with the
trainer during the call, reading what the interpreter's folders hold, and, without a cgroup, memory summed over
processes (each has the address-space limit; at most `processes` of them). If the jail cannot start, the tool
refuses to run unless `tools.python_sandbox: unsafe-local`, which runs the program as an ordinary child process of
the trainer, with no boundary at all, for trusted use.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SANDBOX_UID = 65534  # nobody
TMP = "/tmp"  # a fresh size-limited tmpfs for each call
# the call's working folder and HOME: an empty folder of its own inside that tmpfs, so a path the file view binds
# under /tmp (a virtual environment in a checkout there) never shows up in it
WORKDIR = "/tmp/.work"
INSTALL_HINT = "install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`; `make install` does it when run as root)"
DENIED_CALLS = (  # noqa: SIM905  refused with EPERM
    "unshare setns mount umount2 pivot_root chroot move_mount open_tree fsopen fsconfig fsmount fspick "
    "mount_setattr ptrace process_vm_readv process_vm_writev pidfd_getfd kcmp bpf perf_event_open userfaultfd "
    "keyctl add_key request_key init_module finit_module delete_module kexec_load kexec_file_load reboot swapon "
    "swapoff syslog acct quotactl iopl ioperm name_to_handle_at open_by_handle_at lookup_dcookie io_uring_setup "
    "io_uring_enter io_uring_register personality vhangup settimeofday clock_settime adjtimex clock_adjtime"
).split()
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET
CLONE_NAMESPACE_FLAGS = (0x20000, 0x2000000, 0x4000000, 0x8000000, 0x10000000, 0x20000000, 0x40000000)
JOIN_CGROUPS = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); done; exec "$@"'
JAIL_PROCESSES = 4  # besides the program's: bwrap's monitor and init, twice as root
JAIL_ERRORS = ("bwrap:", "setpriv:", "sh:")  # how the jail's own failures start on stderr
TOOL_PATH = "/usr/bin:/bin:/usr/sbin:/sbin:/usr/local/bin"  # where bwrap and setpriv are looked for
BOOT = Path(__file__).resolve().parent / "sandbox_boot.py"


class SandboxUnavailable(RuntimeError):
    """The jail cannot start here; the message names what is missing and how to install it."""


# --- the seccomp filter -----------------------------------------------------------------------------------


def _seccomp_module():
    """libseccomp's Python binding: the distribution's `seccomp`, else `pyseccomp` (the same API over ctypes)."""
    with contextlib.suppress(ImportError):
        import seccomp  # type: ignore[import-not-found]

        return seccomp
    try:
        import pyseccomp  # type: ignore[import-not-found]
    except ImportError:
        raise SandboxUnavailable("the Python tool's jail needs libseccomp's Python binding: pip install pyseccomp") from None
    except (RuntimeError, OSError) as exc:  # the binding loads, the system library does not
        raise SandboxUnavailable(f"the Python tool's jail needs libseccomp ({exc}): apt-get install libseccomp2") from None
    return pyseccomp


@functools.cache
def seccomp_filter() -> bytes:
    """The jail's seccomp program as BPF bytes for bwrap's --seccomp."""
    sc = _seccomp_module()
    try:
        rules = sc.SyscallFilter(sc.ALLOW)
        for name in DENIED_CALLS:
            with contextlib.suppress(RuntimeError, ValueError):  # a call this architecture does not have
                rules.add_rule(sc.ERRNO(errno.EPERM), name)
        rules.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
        for flag in CLONE_NAMESPACE_FLAGS:
            rules.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
        return _export(rules)
    except OSError as exc:
        raise SandboxUnavailable(f"libseccomp cannot build the jail's filter ({exc}); apt-get install libseccomp2") from None


def _export(rules) -> bytes:
    with tempfile.TemporaryFile() as sink:
        rules.export_bpf(sink)
        sink.seek(0)
        return sink.read()


def _filter_fd() -> int:
    """A fresh file descriptor holding the filter, for one bwrap to read."""
    fd = os.memfd_create("ropd-seccomp", 0)
    os.write(fd, seccomp_filter())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


# --- what the jail sees -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class View:
    """The host paths bound read-only into the jail (at the same place), and the root-level links to recreate."""

    binds: tuple[str, ...]
    links: tuple[tuple[str, str], ...]

    def args(self) -> list[str]:
        """bwrap's arguments: the folders above each bound path (0755: bwrap would make them private), links, binds."""
        parents = sorted({str(p) for path in self.binds for p in Path(path).parents if str(p) != "/"})
        args = [a for folder in parents for a in ("--perms", "0755", "--dir", folder)]
        for target, path in self.links:
            args += ["--symlink", target, path]
        for path in self.binds:
            args += ["--ro-bind", path, path]
        return args


def _outermost(paths: set[str]) -> tuple[str, ...]:
    """The paths with any path lying inside another dropped, in order."""
    ordered = sorted(paths)
    return tuple(p for p in ordered if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in ordered))


@functools.cache
def file_view() -> View:
    """/usr and its root-level links, the linker cache and the interpreter's prefixes: nothing else of the host."""
    links, binds = [], {"/usr"}
    for path in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(path):
            links.append((os.readlink(path), path))
        elif os.path.isdir(path):
            binds.add(path)
    binds |= {p for p in ("/etc/ld.so.cache", "/etc/localtime") if os.path.exists(p)}
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    prefixes.add(os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))))
    binds |= {os.path.abspath(p) for p in prefixes if os.path.abspath(p) != "/"}
    return View(_outermost(binds), tuple(links))


# --- the cgroup of one call -------------------------------------------------------------------------------


def _cgroup_v1_parents() -> dict[str, Path]:
    """This process's cgroup folders in the v1 memory and pids hierarchies, where both exist and are writable."""
    parents = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in ("memory", "pids"):
            if controller in controllers.split(","):
                folder = Path("/sys/fs/cgroup", controller) / path.lstrip("/")
                if (folder / "cgroup.procs").exists() and os.access(folder, os.W_OK):
                    parents[controller] = folder
    return parents if len(parents) == 2 else {}


@dataclass(frozen=True)
class CallCgroup:
    """A cgroup (v1 memory and pids) that holds every process of one call: its total memory and number capped."""

    memory: Path
    pids: Path

    @classmethod
    def create(cls, memory_bytes: int, processes: int) -> CallCgroup | None:
        """A new cgroup for one call, or None where none can be made (not root, no writable v1 hierarchy)."""
        parents = _cgroup_v1_parents() if os.geteuid() == 0 else {}
        if not parents:
            return None
        name = f"ropd-tool-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        group = cls(parents["memory"] / name, parents["pids"] / name)
        try:
            group.memory.mkdir()
            group.pids.mkdir()
            (group.memory / "memory.limit_in_bytes").write_text(str(memory_bytes))
            swap = group.memory / "memory.memsw.limit_in_bytes"
            if swap.exists():
                swap.write_text(str(memory_bytes))
            (group.pids / "pids.max").write_text(str(processes))
        except OSError:
            group.close()
            return None
        return group

    def procs_files(self) -> list[str]:
        return [str(self.memory / "cgroup.procs"), str(self.pids / "cgroup.procs")]

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of the call for passing the memory limit."""
        with contextlib.suppress(OSError, ValueError):
            for line in (self.memory / "memory.oom_control").read_text().splitlines():
                if line.startswith("oom_kill "):
                    return int(line.split()[1]) > 0
        return False

    def close(self, seconds: float = 2.0) -> None:
        """Kill whatever is left in the cgroup and remove it (given up after `seconds`: an empty cgroup stays)."""
        deadline = time.monotonic() + seconds
        for folder in (self.memory, self.pids):
            while folder.exists():
                for pid in _pids_in(folder):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(OSError):  # busy while its last processes exit
                    folder.rmdir()
                if folder.exists():
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.005)


def _pids_in(folder: Path) -> list[int]:
    try:
        return [int(p) for p in (folder / "cgroup.procs").read_text().split()]
    except FileNotFoundError:
        return []


# --- starting and ending one call -------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Limits of one call as the jail and the boot script apply them."""

    memory_mb: int
    cpu_seconds: int
    file_bytes: int
    processes: int
    disk_mb: int
    timeout: float

    def boot_json(self) -> str:
        keys = ("memory_mb", "cpu_seconds", "file_bytes", "processes")
        return json.dumps({k: getattr(self, k) for k in keys})


@dataclass(frozen=True)
class Finished:
    """How a call ended: exit status, whether it timed out or was killed for memory, and what it printed."""

    returncode: int
    timed_out: bool
    out_of_memory: bool
    stdout: str
    overflow: bool
    stderr: str


def child_environment(home: str) -> dict[str, str]:
    """A minimal environment: no keys, no PYTHON* settings, one thread for numeric libraries."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _tool(name: str) -> str:
    path = shutil.which(name, path=TOOL_PATH)
    if path is None:
        hint = INSTALL_HINT if name == "bwrap" else "install util-linux (it ships setpriv)"
        raise SandboxUnavailable(f"the Python tool's jail needs `{name}`, which is not on this machine: {hint}")
    return path


def _jail_args(settings: Settings, boot: list[str], seccomp_fd: int, info_fd: int | None) -> list[str]:
    """bwrap's command line for the jail proper: namespaces, the file view, the tmpfs, the filter."""
    environment = [a for k, v in child_environment(WORKDIR).items() for a in ("--setenv", k, v)]
    info = ["--info-fd", str(info_fd)] if info_fd is not None else []
    return [
        _tool("bwrap"),
        *("--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"),
        *("--disable-userns", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", "sandbox"),
        *("--die-with-parent", "--new-session", *info),
        # the tmpfs first, then the view: a bound path under /tmp (a venv in a checkout there) lands on top of it
        *("--size", str(settings.disk_mb * 1024 * 1024), "--perms", "0700", "--tmpfs", TMP, *file_view().args()),
        *("--perms", "0700", "--dir", WORKDIR),
        *("--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev", "--remount-ro", "/"),
        *("--chdir", WORKDIR),
        *("--clearenv", *environment, "--seccomp", str(seccomp_fd), "--", *boot),
    ]


def _view_args(info_fd: int) -> list[str]:
    """As root: an outer bwrap that builds the file view, then `setpriv` drops to the unprivileged uid."""
    uid = str(SANDBOX_UID)
    return [
        *(_tool("bwrap"), "--unshare-pid", "--die-with-parent", "--info-fd", str(info_fd), "--perms", "1777", "--tmpfs", "/tmp"),
        *(*file_view().args(), "--bind", "/proc", "/proc", "--dev", "/dev"),
        *("--", _tool("setpriv"), f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"),
    ]


def jail_command(settings: Settings, boot: list[str], seccomp_fd: int, info_fd: int, cgroup: CallCgroup | None) -> list[str]:
    """The whole command of one jailed call."""
    if os.geteuid() == 0:
        command = [*_view_args(info_fd), *_jail_args(settings, boot, seccomp_fd, None)]
    else:
        command = _jail_args(settings, boot, seccomp_fd, info_fd)
    if cgroup is not None:
        files = cgroup.procs_files()
        command = ["/bin/sh", "-c", JOIN_CGROUPS, "sh", str(len(files)), *files, *command]
    return command


@dataclass(frozen=True)
class _Launch:
    """How one call's first process starts, and what ends it."""

    command: list[str]
    cwd: str
    env: dict[str, str]
    pass_fds: tuple[int, ...] = ()
    info_fd: int | None = None  # the read end of bwrap's --info-fd: the host pid of the call's first PID-1
    cgroup: CallCgroup | None = None


def boot_command(settings: Settings) -> list[str]:
    return [sys.executable, "-I", "-c", BOOT.read_text(), settings.boot_json()]


@contextlib.contextmanager
def _jailed(settings: Settings) -> Iterator[_Launch]:
    seccomp_fd = _filter_fd()
    info_read, info_write = os.pipe()
    os.set_blocking(info_read, False)
    cgroup = CallCgroup.create(settings.memory_mb * 1024 * 1024, settings.processes + JAIL_PROCESSES)
    try:
        command = jail_command(settings, boot_command(settings), seccomp_fd, info_write, cgroup)
        yield _Launch(command, "/", {"PATH": "/usr/bin:/bin"}, (seccomp_fd, info_write), info_read, cgroup)
    finally:
        for fd in (seccomp_fd, info_read, info_write):
            os.close(fd)
        if cgroup is not None:
            cgroup.close()


@contextlib.contextmanager
def _local(settings: Settings, folder: Path) -> Iterator[_Launch]:
    """tools.python_sandbox: unsafe-local: an ordinary child process in a temporary folder; no boundary."""
    home = folder / "work"
    home.mkdir()
    yield _Launch(boot_command(settings), str(home), child_environment(str(home)))


def run_program(program: str, settings: Settings, jailed: bool = True) -> Finished:
    """Run a program through the boot script, jailed or not, and say how it ended."""
    with tempfile.TemporaryDirectory(prefix="ropd-tool-") as folder:
        stdout_path, stderr_path = Path(folder) / "stdout", Path(folder) / "stderr"
        with _jailed(settings) if jailed else _local(settings, Path(folder)) as launch:
            with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
                process = subprocess.Popen(
                    launch.command,
                    stdin=subprocess.PIPE,
                    stdout=stdout,
                    stderr=stderr,
                    cwd=launch.cwd,
                    env=launch.env,
                    pass_fds=launch.pass_fds,
                    start_new_session=True,
                )
                timed_out = _wait(process, program, settings.timeout, launch)
            out_of_memory = launch.cgroup is not None and launch.cgroup.oom_killed()
        output, overflow = _read_capped(stdout_path, settings.file_bytes)
        errors, _ = _read_capped(stderr_path, settings.file_bytes)
    if jailed and process.returncode != 0 and errors.startswith(JAIL_ERRORS):
        raise SandboxUnavailable(f"the Python tool's jail failed to start: {errors.strip()[-800:]}")
    return Finished(_status(process.returncode, jailed), timed_out, out_of_memory, output, overflow, errors)


def _status(returncode: int, jailed: bool) -> int:
    """The program's exit status as Popen gives it (-N for signal N): bwrap passes a signal on as 128 + N."""
    return -(returncode - 128) if jailed and 128 < returncode < 160 else returncode


def _wait(process: subprocess.Popen, program: str, timeout: float, launch: _Launch) -> bool:
    """Feed the program and wait; at the timeout end every process of the call. True when it timed out."""
    try:
        process.communicate(program.encode("utf-8", errors="replace"), timeout=timeout)
        return False
    except subprocess.TimeoutExpired:
        init = _first_init(launch.info_fd, process.pid)
        for pid in (init, -process.pid):
            with contextlib.suppress(ProcessLookupError, TypeError):
                os.kill(pid, signal.SIGKILL)  # the init of the call's PID namespace takes every process with it
        process.wait()
        _await_end(init)
        return True


def _first_init(info_fd: int | None, parent: int) -> int | None:
    """The host pid of the call's outermost PID-namespace init, as bwrap reported it (checked to be its child)."""
    if info_fd is None:
        return None
    try:
        pid = int(json.loads(os.read(info_fd, 65536))["child-pid"])
        ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    return pid if ppid == parent else None


def _await_end(pid: int | None, seconds: float = 2.0) -> None:
    """Wait until a PID-namespace init is gone or a zombie: its namespace's processes have all ended then."""
    deadline = time.monotonic() + seconds
    while pid is not None and time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.005)


def _read_capped(path: Path, limit: int) -> tuple[str, bool]:
    """At most `limit` bytes of a file as text, and whether there was more (or the file reached the limit)."""
    with path.open("rb") as handle:
        data = handle.read(limit + 1)
    return data[:limit].decode("utf-8", errors="replace"), len(data) >= limit


@functools.cache
def check_jail() -> None:
    """Start the jail once with a trivial program; raise SandboxUnavailable saying what is missing (not cached then)."""
    settings = Settings(memory_mb=256, cpu_seconds=10, file_bytes=1000, processes=4, disk_mb=1, timeout=30.0)
    finished = run_program("print('ok')", settings)
    if finished.returncode != 0 or finished.stdout.strip() != "ok":
        raise SandboxUnavailable(
            f"the Python tool's jail did not run a trial program (exit status {finished.returncode}): {finished.stderr.strip()[-800:]}"
        )
