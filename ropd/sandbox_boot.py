"""Start of every sandboxed Python tool call (ropd.tools): run as `python -I sandbox_boot.py LIMITS_JSON`.

It reads the model's program from stdin, sets the process's resource limits (address space, CPU seconds,
file size, processes, open files, no core dumps), installs an audit hook and then runs the program in a fresh
`__main__` namespace. The hook refuses, with a PermissionError naming the sandbox:
network use (every `socket.*` event), new processes and signals (fork, exec, spawn, system, kill), foreign code
(`ctypes.*`), files opened for writing or changed (remove, rename, chmod, ...) outside the working directory, and
files read outside the working directory and the interpreter's own library folders. The audit hook is one layer:
the caller also runs this process in an empty network namespace where it can, in a temporary working directory,
under a wall-clock timeout and with a minimal environment. Not part of ropd's import graph.
"""

import ctypes  # noqa: F401  loaded (dlopen) before the audit hook, which then refuses every ctypes call
import json
import os
import resource
import sys
import traceback

PROGRAM = "<tool>"

READ_ROOTS_EXTRA = ("/dev/null", "/dev/urandom", "/dev/zero", "/etc/localtime", "/usr/share/zoneinfo")
BLOCKED_PREFIXES = ("socket.", "ctypes.", "subprocess.", "os.exec", "os.posix_spawn", "os.spawn", "pty.", "winreg.")
BLOCKED_EVENTS = frozenset({"os.fork", "os.forkpty", "os.system", "os.kill", "os.killpg", "signal.pthread_kill", "os.startfile"})
PATH_EVENTS = {  # audit event -> positions of the path arguments it changes
    "os.remove": (0,),
    "os.rmdir": (0,),
    "os.mkdir": (0,),
    "os.rename": (0, 1),
    "os.link": (0, 1),
    "os.symlink": (1,),
    "os.chmod": (0,),
    "os.chown": (0,),
    "os.chflags": (0,),
    "os.truncate": (0,),
    "os.utime": (0,),
    "os.setxattr": (0,),
    "os.removexattr": (0,),
    "shutil.rmtree": (0,),
    "shutil.copyfile": (1,),
    "shutil.copytree": (1,),
    "shutil.move": (1,),
}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


def set_limits(limits: dict) -> None:
    """Resource limits of this process and anything it could start."""
    memory = limits["memory_mb"] * 1024 * 1024
    cpu = int(limits["cpu_seconds"])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_bytes"], limits["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))


def inside(path, roots) -> bool:
    """Whether `path` (relative to the working directory, symlinks resolved) lies in one of `roots`."""
    if isinstance(path, int):  # an already open file descriptor
        return True
    real = os.path.realpath(os.fsdecode(path))
    return any(real == root or real.startswith(root.rstrip("/") + "/") for root in roots)


def is_write(mode, flags) -> bool:
    if isinstance(mode, str) and any(c in mode for c in "wax+"):
        return True
    return isinstance(flags, int) and bool(flags & WRITE_FLAGS)


def refuse(what: str) -> None:
    raise PermissionError(f"sandbox: {what} is not allowed in this tool")


def make_hook(workdir: str, read_roots: tuple[str, ...]):
    def hook(event: str, args: tuple) -> None:
        if event.startswith(BLOCKED_PREFIXES) or event in BLOCKED_EVENTS:
            kind = "network access" if event.startswith("socket.") else f"'{event}'"
            refuse(kind)
        if event == "open":
            path, mode, flags = (*args, None, None, None)[:3]
            if path is None:
                return
            if is_write(mode, flags):
                if not inside(path, (workdir,)):
                    refuse(f"writing '{os.fsdecode(path)}' (outside the working directory)")
            elif not inside(path, read_roots):
                refuse(f"reading '{os.fsdecode(path)}' (outside the working directory)")
        elif event in PATH_EVENTS:
            for index in PATH_EVENTS[event]:
                if index < len(args) and args[index] is not None and not inside(args[index], (workdir,)):
                    refuse(f"'{event}' on '{os.fsdecode(args[index])}' (outside the working directory)")

    return hook


def report(error: BaseException, source: str) -> None:
    """The program's error as the model should read it: its own lines only, then the exception."""
    lines = source.splitlines()
    frames = [tb for tb in traceback.walk_tb(error.__traceback__) if tb[0].f_code.co_filename == PROGRAM]
    out = ["Traceback (most recent call last):"]
    for _, lineno in frames:
        shown = lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ""
        out.append(f"  line {lineno}: {shown}" if shown else f"  line {lineno}")
    out.extend(traceback.format_exception_only(type(error), error))
    sys.stderr.write("\n".join(line.rstrip("\n") for line in out) + "\n")


def main() -> None:
    limits = json.loads(sys.argv[1])
    source = sys.stdin.read()
    sys.stdin.close()
    sys.path[:] = [p for p in sys.path if p and os.path.realpath(p) != os.path.dirname(os.path.realpath(__file__))]
    workdir = os.path.realpath(os.getcwd())
    libraries = {os.path.realpath(p) for p in sys.path if p} | {os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)}
    read_roots = (workdir, *sorted(libraries), *READ_ROOTS_EXTRA)
    try:
        code = compile(source, PROGRAM, "exec")
    except SyntaxError as exc:
        report(exc, source)
        sys.exit(1)
    set_limits(limits)
    sys.addaudithook(make_hook(workdir, read_roots))
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(code, namespace)
    except SystemExit:
        raise
    except BaseException as exc:  # the program's own error, reported without the sandbox's frames
        report(exc, source)
        sys.exit(1)


if __name__ == "__main__":
    main()
