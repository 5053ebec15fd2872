"""What an engine has done so far (:class:`EngineStats`), and its progress bar: rate, ETA,
failures, tokens and cost, on a terminal only."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class EngineStats:
    total: int = 0
    reused: int = 0
    sent: int = 0
    ok: int = 0
    failed: int = 0
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)


class ProgressBar:
    """A rich progress bar (rate, ETA, failures, tokens, cost) shown on a terminal only."""

    def __init__(self, description: str, total: int | None, done: int,
                 enabled: bool | None) -> None:
        from rich.console import Console

        self._p: Any = None
        if enabled is False:
            return
        console = Console(stderr=True)
        if enabled is None and not console.is_terminal:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._p = Progress(
            TextColumn("{task.description}", style="bold", markup=False),  # user text
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}/s"),
            TimeRemainingColumn(),
            TextColumn("fail {task.fields[failed]} | tok {task.fields[tokens]} | "
                       "${task.fields[cost]:.4f}"),
            console=console,
            transient=False,
            refresh_per_second=4,
        )
        self._task = self._p.add_task(
            description, total=total, completed=done, failed=0, tokens=0, cost=0.0, rate="-"
        )
        self._t0 = self._last = time.perf_counter()
        self._n = 0  # responses seen
        self._shown = 0  # responses already passed to the bar
        self._stats: EngineStats | None = None

    # The bar redraws 4 times a second, so it is told at most 10 times a second: an update
    # per response costs more than the engine's own bookkeeping at thousands per second.
    _INTERVAL = 0.1

    def advance(self, stats: EngineStats) -> None:
        if self._p is None:
            return
        self._n += 1
        self._stats = stats
        now = time.perf_counter()
        if now - self._last >= self._INTERVAL:
            self._update(now)

    def _update(self, now: float) -> None:
        stats = self._stats
        if stats is None or self._n == self._shown:
            return
        self._last = now
        elapsed = now - self._t0
        self._p.update(
            self._task, advance=self._n - self._shown, failed=stats.failed,
            tokens=stats.prompt_tokens + stats.completion_tokens, cost=stats.cost_usd,
            rate=f"{self._n / elapsed:.1f}" if elapsed > 0 else "-",
        )
        self._shown = self._n

    def __enter__(self) -> ProgressBar:
        if self._p is not None:
            self._p.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._p is not None:
            self._update(time.perf_counter())
            self._p.stop()
