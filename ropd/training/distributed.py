"""Work the training processes of one run do together, where one process's failure must stop all of them.

A collective (an all-gather) blocks until every process joins it, so a process that raises between two of them leaves
the others waiting until the collective times out (30 minutes and more). Here every process always joins each
exchange, carrying either its value or the error it met (`Failure`); when any process carries one, every process
raises `ProcessFailureError` with the earliest error, naming the process and the phase it failed in.

    failure = None
    try:
        value = work()
    except Exception as exc:
        value, failure = None, Failure.of(exc, "scoring", processes.index)
    values = exchange(processes, value, failure, exc)   # raises on every process when any failed
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol


class Processes(Protocol):
    """The training processes one piece of work spans: this process's index (overall and on its machine), their count,
    and an all-gather."""

    index: int
    count: int
    local_index: int  # the index on this machine: 0 for its first process

    def gather(self, value: Any) -> list[Any]:
        """Every process's `value` (picklable), in process order; every process must call it, in the same order."""
        ...


@dataclass(frozen=True)
class Failure:
    """An exception one process met, as every process can read it: where, in which phase, what, and when."""

    process: int
    phase: str
    error: str
    at: float  # seconds since the epoch: the earliest failure is the one reported

    @classmethod
    def of(cls, exc: BaseException, phase: str, process: int) -> Failure:
        return cls(process=process, phase=phase, error=f"{type(exc).__name__}: {exc}", at=time.time())


class ProcessFailureError(RuntimeError):
    """Raised on every process when one of them failed; `failure` is the earliest failure of the exchange."""

    def __init__(self, failure: Failure, count: int):
        self.failure = failure
        super().__init__(f"process {failure.process} of {count} failed while {failure.phase}: {failure.error}")


def exchange(processes: Processes, value: Any, failure: Failure | None = None, exc: BaseException | None = None) -> list[Any]:
    """Every process's `value`, in process order; every process must call it, also after a failure (then value is unused).

    When any process passed a failure, every process raises ProcessFailureError with the earliest one (chained to `exc`,
    the local exception, on the process that met it). On a single process the local exception is raised as it is.
    """
    if processes.count == 1 and exc is not None:
        raise exc
    parts = processes.gather((value, failure))
    failures = [f for _, f in parts if f is not None]
    if failures:
        first = min(failures, key=lambda f: (f.at, f.process))
        raise ProcessFailureError(first, len(parts)) from (exc if first.process == processes.index else None)
    return [v for v, _ in parts]


class OneProcess:
    """A run on a single process: its gather returns the value it is given."""

    index, count, local_index = 0, 1, 0

    def gather(self, value: Any) -> list[Any]:
        return [value]


class AccelerateProcesses:
    """The processes of the current accelerate launch (just this one without it), gathered through torch.distributed.

    `local_index` is this process's index on its machine (0: the machine's first process). Made after the trainer's
    arguments (TrainingArguments sets accelerate's state up; made before, the state may not see the launch)."""

    def __init__(self) -> None:
        from accelerate import PartialState

        self._state = PartialState()
        self.index: int = self._state.process_index
        self.count: int = self._state.num_processes
        self.local_index: int = self._state.local_process_index

    def gather(self, value: Any) -> list[Any]:
        if self.count == 1:
            return [value]
        from accelerate.utils import gather_object

        device = self._state.device
        if device.type == "cuda":  # TRL runs async rewards on a thread of their own, whose current GPU is not set
            import torch

            with torch.cuda.device(device):
                return gather_object([value])
        return gather_object([value])
