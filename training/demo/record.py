"""What a demo run records as it goes: each step's time and the command that repeats it, and facts for the report."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import DemoConfig


@dataclass
class StepRecord:
    """One step of a run: how long it took and how to run it on its own."""

    name: str
    seconds: float
    how: str  # the equivalent command or Python call


@dataclass
class Run:
    """The state a run accumulates: step records and facts for the report."""

    config: DemoConfig
    steps: list[StepRecord] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    before_step: Callable[[], Any] | None = None  # e.g. the thread policy's re-measurement

    def step(self, name: str, work: Callable[..., Any], *args: Any, how: str = "", **kwargs: Any) -> Any:
        """Run `work(*args, **kwargs)` under a banner, timing it; recorded with `how` (default: the same call as a
        command, for calls without keyword arguments)."""
        number = len(self.steps) + 1
        if self.before_step is not None:
            self.before_step()
        print(f"\n==> [{number}] {name} ({torch.get_num_threads()} threads)", flush=True)
        start = time.perf_counter()
        result = work(*args, **kwargs)
        seconds = time.perf_counter() - start
        self.steps.append(StepRecord(name, round(seconds, 1), how or python_call(work, *args)))
        print(f"    done in {seconds:.1f} s", flush=True)
        return result


def python_call(function: Callable[..., Any], *args: Any) -> str:
    """The shell command that makes the same call: what a user runs to repeat one step."""
    def literal(value: Any) -> str:
        return f"Path({str(value)!r})" if isinstance(value, Path) else repr(value)

    call = f"{function.__name__}({', '.join(map(literal, args))})"
    return (f'python -c "from pathlib import Path; from {function.__module__} import {function.__name__}; '
            f'{call}"')
