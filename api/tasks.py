"""The API's background tasks, supervised: one TaskGroup, each task restarted with
backoff when it dies, its state visible in /health.

A background task (the alarm LISTEN loop, the token watcher) must outlive
any error of its own: a crash restarts it after a jittered, doubling delay
instead of leaving SSE clients on heartbeats forever.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger(__name__)

# Restart backoff: doubling from 0.5 s up to 15 s, jittered; reset after a
# task has run this long without dying.
RESTART_MIN_S = 0.5
RESTART_MAX_S = 15.0
HEALTHY_AFTER_S = 60.0

TaskFactory = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class TaskState:
    state: Literal["starting", "running", "restarting", "stopped"] = "starting"
    restarts: int = 0
    last_error: str | None = None


class Supervisor:
    def __init__(self, *, logger: logging.Logger | None = None) -> None:
        self._tasks: dict[str, TaskFactory] = {}
        self.states: dict[str, TaskState] = {}
        self._log = logger or log
        self.restart_min_s = RESTART_MIN_S

    def add(self, name: str, factory: TaskFactory) -> None:
        self._tasks[name] = factory
        self.states[name] = TaskState()

    async def run(self) -> None:
        """Run every task until cancelled."""
        try:
            async with asyncio.TaskGroup() as group:
                for name, factory in self._tasks.items():
                    group.create_task(self._supervise(name, factory), name=f"api-{name}")
        finally:
            for state in self.states.values():
                state.state = "stopped"

    async def _supervise(self, name: str, factory: TaskFactory) -> None:
        state = self.states[name]
        delay = self.restart_min_s
        loop = asyncio.get_running_loop()
        while True:
            state.state = "running"
            started = loop.time()
            try:
                await factory()
                error = "returned"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any death is restarted; the log says why
                error = f"{type(exc).__name__}: {exc}"
                self._log.error("background task %s died; restarting", name, exc_info=exc)
            if loop.time() - started > HEALTHY_AFTER_S:
                delay = self.restart_min_s
            state.state = "restarting"
            state.restarts += 1
            state.last_error = error
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, RESTART_MAX_S)
