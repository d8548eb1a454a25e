"""Run the Faust worker: every agent of streams/, imported explicitly."""

import faust

from streams import (
    evaluate_alerts,
    status,
    store_dead_letters,
    store_documents,
    store_dossiers,
    store_field_reports,
)
from streams.app import app, settings

AGENTS = (store_dossiers.store_dossiers, store_documents.store_documents,
          store_field_reports.store_field_reports, status.write_heartbeat,
          evaluate_alerts.evaluate_alerts, store_dead_letters.store_dead_letters,
          status.record_start)


def run() -> None:
    """Blocks until SIGTERM / Ctrl-C, then stops cleanly (offsets of stored events committed)."""
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), redirect_stdouts=False,
                          override_logging=False)
    worker.execute_from_commandline()
