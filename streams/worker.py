"""Run the Faust worker: every agent of streams/, imported explicitly."""

import faust

from streams import evaluate_alerts, status, store_dead_letters, storing  # noqa: F401 (agents)
from streams.app import app, settings


def run() -> None:
    """Blocks until SIGTERM / Ctrl-C, then stops cleanly (offsets of stored events committed)."""
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), redirect_stdouts=False,
                          override_logging=False)
    worker.execute_from_commandline()
