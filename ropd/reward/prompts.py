"""Prompt templates: one Jinja2 file per prompt, rendered into chat messages.

A template defines a `user` block and, optionally, a `system` block; each block becomes one chat
message (an empty system block sends no system message). Top-level `{% set %}` and macros are
visible inside both blocks. Variables are strict: a template that names a variable its caller does
not provide is refused when loaded, and one left out at render time is an error naming it.

Answers are embedded between boundary lines that carry a per-call code derived from a hash of the
whole prompt's content, so no answer can contain its own closing line (it would have to contain a
hash of itself) and text inside an answer cannot pass for the next answer or for instructions.
Embedded answers are also neutralised (`embed_text`): invisible characters (zero-width, bidi
controls, tag characters) are removed and runs of three or more angle brackets, look-alikes
included, are cut to two, so no line of an answer can even resemble a boundary line. Rubric
criteria, written by a model too, get the same treatment and are kept to one line (`embed_line`).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import jinja2.nodes

from ropd.config import PACKAGE_DIR, ConfigError

PROMPTS_DIR = PACKAGE_DIR / "templates"  # shipped in the wheel; `prompts/` in a checkout links here
TEMPLATE_SUFFIX = ".jinja"

RUBRIC_VARIABLES = frozenset(
    {
        "question",
        "references",
        "students",
        "boundary",
        "extra_instructions",
        "min_criteria",
        "max_criteria",
        "min_points",
        "max_points",
        "verifiable_criteria",
        "target_max_chars",
    }
)
VERIFIER_VARIABLES = frozenset(
    {"question", "criteria", "answers", "boundary", "num_answers", "num_criteria", "expected_evidence", "answer_evidence"}
)


class TemplateError(ConfigError):
    """A template that cannot be found, parsed or rendered; names the file and the variable."""


# Line breaks of every kind become "\n", so what a model sees as a new line is one to us too.
LINE_BREAKS = re.compile(r"\r\n|[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
# Characters that render as nothing beyond the format/control/unassigned categories: variation selectors, fillers.
INVISIBLE_EXTRA = re.compile(r"[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u3164\ufe00-\ufe0f\uffa0\U000e0100-\U000e01ef]")
INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Cn"})
ASCII_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
# Angle brackets and their look-alikes (fullwidth, small, single and double guillemets, math and CJK brackets).
OPENERS = "<\uff1c\ufe64\u2039\u00ab\u3008\u300a\u2329\u27e8\u27ea\u276e\u2770\u1438\u02c2\u29fc\u227a\u22d6"
CLOSERS = ">\uff1e\ufe65\u203a\u00bb\u3009\u300b\u232a\u27e9\u27eb\u276f\u2771\u1433\u02c3\u29fd\u227b\u22d7"
OPENER_RUN = re.compile(f"[{OPENERS}]{{3,}}")
CLOSER_RUN = re.compile(f"[{CLOSERS}]{{3,}}")


def embed_text(text: str) -> str:
    """A text made safe to place between boundary lines: line breaks normalised, invisible characters removed,
    and runs of 3+ angle brackets (look-alikes included) cut to two, so it holds nothing that looks like a boundary."""
    text = LINE_BREAKS.sub("\n", text)
    if text.isascii():
        text = ASCII_CONTROLS.sub("", text)
    else:
        text = INVISIBLE_EXTRA.sub("", text)
        text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) not in INVISIBLE_CATEGORIES)
    return CLOSER_RUN.sub(">>", OPENER_RUN.sub("<<", text))


def embed_line(text: str, max_chars: int | None = None) -> str:
    """A short model-written text (a rubric criterion) made safe to list in a prompt: `embed_text`, then every run of
    whitespace, line breaks included, made one space (so it cannot start a line of its own), cut to `max_chars`."""
    line = " ".join(embed_text(text).split())
    return line if max_chars is None or len(line) <= max_chars else line[: max_chars - 3].rstrip() + "..."


# Delimits tool calls and outputs inside a tool trajectory (ropd.tools.toolbox): a private-use character that `embed_text`
# removes from every model text, so only ropd's own trajectory rendering can place it.
TOOL_MARK = "\ue000"


class TrajectoryText(str):
    """A tool trajectory as ropd rendered it (ropd.tools.toolbox.trajectory_text): the only text whose tool marks are kept."""


def embed_answer(text: str) -> str:
    """`embed_text` for an answer: a TrajectoryText keeps ropd's tool marks (each piece between them is neutralised);
    any other text loses every mark it holds, so no answer can forge one."""
    if not isinstance(text, TrajectoryText):
        return embed_text(text)
    return TOOL_MARK.join(embed_text(part) for part in text.split(TOOL_MARK))


@dataclass(frozen=True)
class LabelledText:
    """An answer as a template shows it: a label ("1", "A") and its text, neutralised by `embed_answer`."""

    label: str
    text: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", embed_answer(self.text))


@dataclass(frozen=True)
class PromptTemplate:
    """A loaded template; `hash` (of the file text) goes into cache keys."""

    name: str
    path: Path
    text: str
    hash: str
    variables: frozenset[str]
    compiled: jinja2.Template = field(repr=False, compare=False)

    def render(self, **variables: Any) -> list[dict[str, str]]:
        """Chat messages from the `system` and `user` blocks, with every declared variable required."""
        missing = sorted(self.variables - variables.keys())
        if missing:
            raise TemplateError(f"{self.path}: variable(s) {', '.join(repr(m) for m in missing)} not provided to the template")
        template = self.compiled
        context = template.new_context(variables)
        try:
            for _ in template.root_render_func(context):  # runs top-level sets and macros into the context
                pass
            parts = {name: "".join(template.blocks[name](context)).strip() for name in ("system", "user") if name in template.blocks}
        except jinja2.UndefinedError as exc:
            raise TemplateError(f"{self.path}: {exc}") from None
        messages = [{"role": "system", "content": parts["system"]}] if parts.get("system") else []
        return [*messages, {"role": "user", "content": parts["user"]}]


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False)


def template_path(name_or_path: str) -> Path:
    """A template file from a name in ropd/templates/ ("verifier") or a path to a .jinja file."""
    candidate = Path(name_or_path).expanduser()
    if candidate.is_file():
        return candidate
    named = PROMPTS_DIR / f"{name_or_path}{TEMPLATE_SUFFIX}"
    if named.is_file():
        return named
    available = ", ".join(sorted(p.stem for p in PROMPTS_DIR.glob(f"*{TEMPLATE_SUFFIX}")))
    raise TemplateError(f"template '{name_or_path}' not found: neither a file nor a name in {PROMPTS_DIR} (available: {available})")


def load_template(name_or_path: str, variables: Iterable[str]) -> PromptTemplate:
    """Load and check a template against the variables its caller provides."""
    path = template_path(name_or_path)
    return _load(path.resolve(), path.stat().st_mtime_ns, frozenset(variables))


@cache
def _load(path: Path, _mtime_ns: int, variables: frozenset[str]) -> PromptTemplate:
    text = path.read_text()
    try:
        parsed = _environment().parse(text)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{path}, line {exc.lineno}: {exc.message}") from None
    unknown = sorted(jinja2.meta.find_undeclared_variables(parsed) - _top_level_names(parsed) - variables)
    if unknown:
        raise TemplateError(
            f"{path}: unknown variable(s) {', '.join(repr(u) for u in unknown)}; "
            f"a template of this kind gets {', '.join(sorted(variables))}"
        )
    compiled = _environment().from_string(text)
    if "user" not in compiled.blocks:
        raise TemplateError(f"{path}: the template has no {{% block user %}} (the user message)")
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return PromptTemplate(name=path.stem, path=path, text=text, hash=digest, variables=variables, compiled=compiled)


def _top_level_names(parsed: jinja2.nodes.Template) -> set[str]:
    """Names a template defines outside its blocks ({% set %}, macros): blocks see them, so they are not unknown."""
    names = {node.name for node in parsed.body if isinstance(node, jinja2.nodes.Macro)}
    for node in parsed.body:
        if isinstance(node, jinja2.nodes.Assign | jinja2.nodes.AssignBlock):
            targets = [node.target, *node.target.find_all(jinja2.nodes.Name)]
            names.update(t.name for t in targets if isinstance(t, jinja2.nodes.Name))
    return names


def render_fragment(template: str, **variables: Any) -> str:
    """A template in ropd/templates/ rendered as one text (tool descriptions, tool markers), every variable required."""
    path = template_path(template)
    try:
        return _fragment(path.resolve(), path.stat().st_mtime_ns).render(**variables).strip()
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"{path}: {exc}") from None


@cache
def _fragment(path: Path, _mtime_ns: int) -> jinja2.Template:
    try:
        return _environment().from_string(path.read_text())
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{path}, line {exc.lineno}: {exc.message}") from None


def boundary_code(*texts: str, salt: str = "") -> str:
    """A 16-hex code that occurs in none of `texts`: a hash of all of them (deterministic, so cacheable)."""
    counter = 0
    while True:
        digest = hashlib.sha256()
        for part in (salt, str(counter), *texts):
            digest.update(hashlib.sha256(part.encode()).digest())
        code = digest.hexdigest()[:16]
        if not any(code in t for t in texts):
            return code
        counter += 1
