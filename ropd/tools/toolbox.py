"""Tools a rollout may call: a sandboxed Python interpreter and user functions, and how a tool trajectory is shown.

`build_toolbox(config.tools)` turns `tools.names` ("python", "package.module:function") into a `Toolbox`: the
functions TRL's GRPOTrainer calls inside a student's rollout (`tools=`), their OpenAI tool schemas (for an API or
served teacher), and a fingerprint that goes into the teacher cache key.

The Python tool (`run_python`) treats each program as hostile and runs it inside a jail (`ropd/tools/sandbox.py`;
threat model in docs/sandbox.md): bubblewrap with an unprivileged user, new namespaces (no network), a read-only view
of the interpreter only, a fresh tmpfs as working folder, a seccomp filter, and limits for the whole call (time,
memory, processes, disk, output). If the jail cannot start, the tool refuses unless `tools.python_sandbox` is
`unsafe-local`. Every failure is raised as a `ToolError` whose message the model gets back as the tool's error (TRL
counts it in `tools/failure_frequency`); no failure stops the run.

A trajectory (assistant turns, tool calls, tool outputs) reaches the rubricator and the judge as one answer text
(`trajectory_text`) in which each tool call and output is delimited by private marks that no model text can hold;
the prompt code turns them into marker lines carrying the prompt's boundary code (`show_tool_marks`), so a model
cannot forge a tool output. User tools run in the training process and are trusted code.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ropd.config import ConfigError, ToolsConfig
from ropd.reward.answers import answer_text
from ropd.reward.prompts import TOOL_MARK, LabelledText, TrajectoryText, embed_text, render_fragment
from ropd.tools.sandbox import Finished, SandboxUnavailable, Settings, check_jail, run_program

PYTHON_TOOL = "python"
MARK = TOOL_MARK
MARK_PATTERN = re.compile(f"{MARK}(call|end_call|output|end_output):([A-Za-z0-9_.-]*){MARK}")
SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")
STDERR_TAIL_LINES = 12


class ToolError(RuntimeError):
    """A tool call that failed; the message goes back to the model as the tool's error."""


# --- the sandboxed Python interpreter ---------------------------------------------------------------------


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one Python tool call, and where it runs (`jail`, or `unsafe-local` for trusted use only)."""

    timeout: float = 10.0
    memory_mb: int = 512
    max_output_bytes: int = 4000
    sandbox: str = "jail"
    processes: int = 16
    disk_mb: int = 64

    @classmethod
    def from_config(cls, config: ToolsConfig) -> SandboxLimits:
        return cls(
            timeout=config.python_timeout,
            memory_mb=config.python_memory_mb,
            max_output_bytes=config.python_max_output_bytes,
            sandbox=config.python_sandbox,
        )

    def settings(self) -> Settings:
        return Settings(
            memory_mb=self.memory_mb,
            cpu_seconds=max(1, int(self.timeout) + 1),
            file_bytes=self.max_output_bytes,
            processes=self.processes,
            disk_mb=self.disk_mb,
            timeout=self.timeout,
        )


def require_jail(limits: SandboxLimits) -> None:
    """Raise ToolError naming what is missing when the jail cannot start (nothing to check for unsafe-local)."""
    if limits.sandbox == "jail":
        try:
            check_jail()
        except SandboxUnavailable as exc:
            raise ToolError(f"{exc} (or set tools.python_sandbox: unsafe-local for trusted use only)") from None


def _tail(text: str, lines: int = STDERR_TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_python(code: str, limits: SandboxLimits = SandboxLimits()) -> str:
    """Run a Python program in the sandbox and return what it printed; raise ToolError on any failure."""
    if not isinstance(code, str) or not code.strip():
        raise ToolError("no code given: pass the program as the `code` argument")
    require_jail(limits)
    try:
        finished = run_program(code, limits.settings(), jailed=limits.sandbox == "jail")
    except SandboxUnavailable as exc:
        raise ToolError(str(exc)) from None
    return _outcome(finished, limits)


def _outcome(done: Finished, limits: SandboxLimits) -> str:
    """The tool's reply: the program's output, or a ToolError that says what went wrong."""
    output = done.stdout
    if done.timed_out:
        raise ToolError(f"the program ran longer than the {limits.timeout:g} s time limit and was stopped{_partial(output)}")
    if done.overflow:
        raise ToolError(
            f"the program's output passed the {limits.max_output_bytes}-byte limit and was cut off; print less{_partial(output)}"
        )
    tail = _tail(done.stderr)
    if done.returncode != 0 and (done.out_of_memory or "MemoryError" in tail):
        raise ToolError(f"the program ran out of memory (limit {limits.memory_mb} MiB):\n{tail}".rstrip(":\n"))
    if done.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        raise ToolError(f"the program used up its CPU time (limit {limits.timeout:g} s) and was stopped{_partial(output)}")
    if done.returncode != 0:
        status = f"the program failed (exit status {done.returncode})"
        raise ToolError(f"{status}:\n{tail}" if tail else status)
    if not output.strip():
        return "(no output: print() what you want to see)"
    return output


def _partial(output: str) -> str:
    return f"; its output so far:\n{output[-500:]}" if output.strip() else ""


def python_tool(limits: SandboxLimits) -> Callable[[str], str]:
    """The Python interpreter as a tool function (name `python`, one argument `code`); its description, which the model
    reads, comes from the template `tool_python.jinja` and states the limits."""

    def python(code: str) -> str:
        return run_python(code, limits)

    python.__doc__ = render_fragment(
        "tool_python", timeout=f"{limits.timeout:g}", memory_mb=limits.memory_mb, max_output_bytes=limits.max_output_bytes
    )
    return python


# --- user tools -------------------------------------------------------------------------------------------


def load_user_tool(spec: str, field: str = "tools.names") -> Callable[..., Any]:
    """The function named by 'package.module:function', checked to give a tool schema (type hints and an Args docstring)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"field '{field}': '{spec}' is neither 'python' nor 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure of user code is a config error naming the tool
        raise ConfigError(
            f"field '{field}': tool '{spec}': module '{module_name}' cannot be imported ({type(exc).__name__}: {exc})"
        ) from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ConfigError(f"field '{field}': tool '{spec}': module '{module_name}' has no function '{attribute}'")
    try:
        tool_schema(function)
    except Exception as exc:
        raise ConfigError(
            f"field '{field}': tool '{spec}' has no usable tool schema ({exc}); give every argument a type hint and "
            f"describe it in a Google-style docstring (an 'Args:' section)"
        ) from None
    return function


def tool_schema(function: Callable[..., Any]) -> dict[str, Any]:
    """The OpenAI tool schema of a function, as transformers renders it into chat templates."""
    from transformers.utils import get_json_schema

    return get_json_schema(function)


# --- the toolbox ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCallResult:
    """One executed tool call: what the model gets back, and whether the call failed."""

    name: str
    content: str
    failed: bool


@dataclass(frozen=True)
class Toolbox:
    """The tools of a run: functions for TRL, schemas for an OpenAI-compatible teacher, a fingerprint for cache keys."""

    functions: tuple[Callable[..., Any], ...]
    specs: tuple[str, ...]
    limits: SandboxLimits
    max_iterations: int

    def by_name(self) -> dict[str, Callable[..., Any]]:
        return {f.__name__: f for f in self.functions}

    def schemas(self) -> list[dict[str, Any]]:
        return [tool_schema(f) for f in self.functions]

    def fingerprint(self) -> dict[str, Any]:
        """What decides the teacher's tool trajectories: the tools' schemas, the sandbox limits and the iteration limit."""
        schemas = json.dumps(self.schemas(), sort_keys=True)
        return {
            "tools": list(self.specs),
            "schemas": hashlib.sha256(schemas.encode()).hexdigest()[:16],
            "limits": [self.limits.timeout, self.limits.memory_mb, self.limits.max_output_bytes],
            "max_iterations": self.max_iterations,
        }

    def call(self, name: str, arguments: Any) -> ToolCallResult:
        """Run one call (arguments as a dict or a JSON string); every failure becomes an error result, never an exception."""
        function = self.by_name().get(name)
        try:
            if function is None:
                raise ToolError(f"no tool named '{name}'; the tools are: {', '.join(self.by_name())}")
            kwargs = json.loads(arguments) if isinstance(arguments, str) else dict(arguments or {})
            if not isinstance(kwargs, dict):
                raise ToolError("the arguments must be a JSON object")
            return ToolCallResult(name, str(function(**kwargs)), False)
        except Exception as exc:  # a tool's failure is the model's to read, whatever its kind
            return ToolCallResult(name, json.dumps({"error": str(exc)}), True)


def build_toolbox(config: ToolsConfig) -> Toolbox | None:
    """The run's toolbox from `tools.names` (None when no tool is configured)."""
    if not config.names:
        return None
    limits = SandboxLimits.from_config(config)
    if PYTHON_TOOL in config.names and limits.sandbox == "jail":
        try:
            check_jail()
        except SandboxUnavailable as exc:
            raise ConfigError(f"field 'tools.python_sandbox': {exc}; or set it to unsafe-local (trusted code only)") from None
    functions = [python_tool(limits) if spec == PYTHON_TOOL else load_user_tool(spec) for spec in config.names]
    names = [f.__name__ for f in functions]
    if len(set(names)) != len(names):
        raise ConfigError(f"field 'tools.names': two tools share a name ({', '.join(names)})")
    return Toolbox(tuple(functions), tuple(config.names), limits, config.max_iterations)


# --- trajectories as the rubricator and judge see them ----------------------------------------------------


def _safe_name(name: Any) -> str:
    return SAFE_NAME.sub("", str(name or "tool"))[:64] or "tool"


def _call_text(call: dict[str, Any]) -> tuple[str, str]:
    """(tool name, what was sent): a Python program as its code, any other call as its JSON arguments."""
    function = call.get("function") or {}
    name = function.get("name") or call.get("name") or "tool"
    arguments = function.get("arguments", call.get("arguments"))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return name, arguments
    if isinstance(arguments, dict) and set(arguments) == {"code"} and isinstance(arguments["code"], str):
        return name, arguments["code"]
    return name, json.dumps(arguments, ensure_ascii=False)


def _content(content: Any) -> str:
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict) and isinstance(part.get("text"), str))
    return "" if content is None else str(content)


def has_tool_use(messages: Any) -> bool:
    """Whether a completion (a list of chat messages) holds a tool call or a tool output."""
    return isinstance(messages, list) and any(isinstance(m, dict) and (m.get("role") == "tool" or m.get("tool_calls")) for m in messages)


def trajectory_text(messages: Sequence[dict[str, Any]]) -> TrajectoryText:
    """A trajectory as one text: assistant text as written, each tool call and tool output between private marks.

    Every piece written by a model or a tool is neutralised (`embed_text`), which also removes any mark it held.
    """
    parts: list[str] = []
    for message in messages:
        if message.get("role") == "tool":
            name = _safe_name(message.get("name"))
            parts.append(_marked("output", name, embed_text(_content(message.get("content")))))
            continue
        text = embed_text(_content(message.get("content"))).strip()
        if text:
            parts.append(text)
        for call in message.get("tool_calls") or []:
            name, sent = _call_text(call)
            parts.append(_marked("call", _safe_name(name), embed_text(sent)))
    return TrajectoryText("\n".join(parts))


def _marked(kind: str, name: str, text: str) -> str:
    return f"{MARK}{kind}:{name}{MARK}\n{text.strip()}\n{MARK}end_{kind}:{MARK}"


def show_tool_marks(text: str, boundary: str) -> str:
    """Replace the private marks by marker lines that carry the prompt's boundary code (template `tool_marker.jinja`)."""
    return MARK_PATTERN.sub(lambda m: render_fragment("tool_marker", kind=m.group(1), name=m.group(2), boundary=boundary), text)


def readable_trajectory(text: str) -> str:
    """A trajectory for logs and reports (groups.jsonl, `ropd inspect`): its marks as marker lines without a code."""
    return MARK_PATTERN.sub(
        lambda m: render_fragment("tool_marker", kind=m.group(1), name=m.group(2), boundary="").replace(" ]", "]"), text
    )


def tool_rollout_text(completion: Any, plain: Callable[[Any], str]) -> str:
    """The text a rubric reward scores: the marked trajectory when the completion used tools, else `plain(completion)`."""
    return trajectory_text(completion) if has_tool_use(completion) else plain(completion)


def labelled_answer(label: str, text: str) -> LabelledText:
    """An answer for a rubricator or judge template: its `answer_text`, still a TrajectoryText when it was one."""
    shown = answer_text(text)
    return LabelledText(label, TrajectoryText(shown) if isinstance(text, TrajectoryText) else shown)


def show_tool_use(items: list[LabelledText], boundary: str) -> tuple[list[LabelledText], bool]:
    """Answers with their tool marks shown as marker lines, and whether any answer used a tool."""
    used = any(MARK in item.text for item in items)
    if not used:
        return items, False
    return [LabelledText(item.label, TrajectoryText(show_tool_marks(item.text, boundary))) for item in items], True


def add_tool_note(messages: list[dict[str, str]], boundary: str) -> list[dict[str, str]]:
    """The rubricator's or judge's messages with the tool-use note (`tool_use_note.jinja`) ending the system message."""
    note = render_fragment("tool_use_note", boundary=boundary)
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": f"{messages[0]['content']}\n\n{note}"}, *messages[1:]]
    return [{"role": "system", "content": note}, *messages]


def chat_template_text(spec: str) -> str:
    """A chat template's text from `student.chat_template`: a path to a Jinja file, or the name of one TRL ships."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path.read_text()
    from trl import chat_template_utils

    text = getattr(chat_template_utils, f"{spec}_chat_template", None)
    if not isinstance(text, str):
        shipped = sorted(p.stem for p in Path(chat_template_utils.__file__).parent.joinpath("chat_templates").glob("*.jinja"))
        raise ConfigError(
            f"field 'student.chat_template': '{spec}' is neither a file nor a template TRL ships "
            f"(names: {', '.join(n for n in shipped if not n.endswith('_training'))})"
        )
    return text
