"""Start of every Python tool call (ropd.tools.sandbox): run as `python -I -c <this file's text> LIMITS_JSON`.

It reads the model's program from stdin, sets the process's resource limits (address space, CPU seconds, file
size, processes, open files, no core dumps) and runs the program in a fresh `__main__` namespace, reporting an
error with the program's own lines only. It is no boundary: the jail around it is (ropd/tools/sandbox.py). Not part of
ropd's import graph.
"""

import json
import resource
import sys
import traceback

PROGRAM = "<tool>"


def set_limits(limits: dict) -> None:
    """Resource limits of this process and anything it starts."""
    memory = limits["memory_mb"] * 1024 * 1024
    cpu = int(limits["cpu_seconds"])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_bytes"], limits["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))


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
    try:
        code = compile(source, PROGRAM, "exec")
    except SyntaxError as exc:
        report(exc, source)
        sys.exit(1)
    set_limits(limits)
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(code, namespace)
    except SystemExit:
        raise
    except BaseException as exc:  # the program's own error, reported without the boot script's frames
        report(exc, source)
        sys.exit(1)


if __name__ == "__main__":
    main()
