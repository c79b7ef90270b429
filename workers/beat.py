"""The beat's scheduler: the schedule in memory (no state file), quiet while the broker is down.

The schedule is in code (workers/app.py), so there is nothing worth a file: Celery's default
scheduler writes a shelve file per process, which `pagemill worker --beat` used to leave in
/tmp at every start. After a restart every periodic task simply runs once at start.

A send that fails because the broker is down is one line when it goes down and one when it is
back (pipeline/health.py), instead of Celery's error with two tracebacks at every tick.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery.beat import Scheduler

from pipeline import health
from pipeline.health import HEALTH

log = logging.getLogger(__name__)


class MemoryScheduler(Scheduler):
    def setup_schedule(self) -> None:
        super().setup_schedule()
        # Nothing remembers when the tasks last ran: each runs once now, then on its interval
        # (a beat restarted more often than hourly still runs the hourly retention).
        long_ago = self.app.now() - timedelta(days=365)
        for entry in self.schedule.values():
            entry.last_run_at = long_ago

    def apply_entry(self, entry: Any, producer: Any = None) -> None:
        log.info("Scheduler: Sending due task %s (%s)", entry.name, entry.task)
        try:
            self.apply_async(entry, producer=producer, advance=False)
        except Exception as exc:  # noqa: BLE001 - the next tick sends it again
            if not HEALTH.down(health.BROKER, f"{type(exc).__name__}: {exc}"):
                log.debug("beat: %s not sent: %s", entry.name, exc)
            return
        HEALTH.up(health.BROKER)


SCHEDULER = f"{__name__}:{MemoryScheduler.__name__}"
