"""Data types every stage speaks: prompt rows, rubrics, verdicts, usage, group scores.

The JSON shapes of `Rubric` and `JudgeOutput` are firm contracts (the `ropd rubric` and
`ropd judge` commands print and read them), so change them only with care.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Role = Literal["system", "user", "assistant", "tool"]


class ChatMessage(BaseModel):
    """One chat message in TRL's conversational format."""

    model_config = ConfigDict(extra="forbid")
    role: Role
    content: str


class PromptRow(BaseModel):
    """A training or evaluation prompt: chat messages, a stable id, an optional reference answer."""

    model_config = ConfigDict(extra="allow")
    id: str = Field(min_length=1)
    prompt: list[ChatMessage] = Field(min_length=1)
    answer: str | None = None

    @field_validator("prompt")
    @classmethod
    def _has_user_text(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if not any(m.role == "user" and m.content.strip() for m in messages):
            raise ValueError("the prompt has no non-empty user message")
        return messages

    @property
    def question(self) -> str:
        """The text of the last user message: what rubrics and judges are shown."""
        return next(m.content for m in reversed(self.prompt) if m.role == "user")


class Criterion(BaseModel):
    """One binary rubric criterion worth `points` when met.

    `target` (optional, `judge.verifiable_criteria`) is a value a correct answer contains, which code may check
    instead of the judge (see ropd.reward.targets). A number arrives as its text; anything that is neither a string
    nor a number (a list, an object, a boolean, NaN) is dropped here, so the criterion stays with the judge.
    Records written before the field existed parse with no target.
    """

    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1)
    category: str = ""
    text: str = Field(min_length=1)
    points: int
    target: str | None = None

    @field_validator("target", mode="before")
    @classmethod
    def _scalar_target(cls, value: Any) -> str | None:
        if isinstance(value, bool) or value is None:
            return None
        if isinstance(value, int):
            return str(value)
        if isinstance(value, float):
            return repr(value) if math.isfinite(value) else None
        return value if isinstance(value, str) else None


class Rubric(BaseModel):
    """A prompt-specific rubric: weighted yes/no criteria, in judging order."""

    model_config = ConfigDict(extra="ignore")
    criteria: list[Criterion] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> Rubric:
        ids = [c.id for c in self.criteria]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate criterion ids: {', '.join(duplicates)}")
        return self

    @property
    def total_points(self) -> int:
        return sum(c.points for c in self.criteria)

    def check_bounds(self, min_criteria: int, max_criteria: int, min_points: int, max_points: int) -> None:
        """Raise ValueError when the rubric breaks the configured size or point range."""
        n = len(self.criteria)
        if not min_criteria <= n <= max_criteria:
            raise ValueError(f"the rubric has {n} criteria; between {min_criteria} and {max_criteria} are required")
        bad = [c.id for c in self.criteria if not min_points <= c.points <= max_points]
        if bad:
            raise ValueError(f"criteria {', '.join(bad)} have points outside {min_points}..{max_points}")


class Verdict(BaseModel):
    """The judge's booleans for one answer (1-based `answer` label as shown to the judge).

    Extra fields the schema asks for before `met` (evidence, extracted final answers) are kept,
    but only `answer` and `met` are required: servers that ignore the schema send just those.
    """

    model_config = ConfigDict(extra="allow")
    answer: int = Field(ge=1)
    met: list[bool]


class JudgeOutput(BaseModel):
    """What the judge model returns for one call. Any total score it adds is ignored."""

    model_config = ConfigDict(extra="ignore")
    verdicts: list[Verdict]


class Usage(BaseModel):
    """API usage accumulated for one role (teacher, rubricator, judge)."""

    requests: int = 0
    retries: int = 0
    failures: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # of prompt_tokens, those the server read from its prompt cache (usage.prompt_tokens_details)
    cost_usd: float = 0.0
    seconds: float = 0.0
    unpriced_requests: float = 0  # requests to a model missing from the price table: cost_usd leaves them out (unknown)
    checks: int = 0  # endpoint checks before the run (ropd.training.preflight): model lists and 1-token completions

    @property
    def cost_known(self) -> bool:
        """Whether cost_usd is the whole cost: no request went to a model without a price."""
        return self.unpriced_requests == 0

    def add(self, other: Usage) -> None:
        for name in type(self).model_fields:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class GroupScore(BaseModel):
    """The outcome of scoring one prompt group: rewards in rollout order, or an error."""

    prompt_id: str
    rewards: list[float] | None = None
    verdicts: list[list[bool]] | None = None
    teacher_scores: list[float] = Field(default_factory=list)
    rubric: Rubric | None = None
    decided_by: list[str] = Field(default_factory=list)  # per criterion of `rubric`: judge, evidence, target or consensus
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.rewards is None
