"""Run the Faust worker: every agent of streams/, imported explicitly."""

import gc

import faust

from ioc.core import units
from streams import evaluate_alerts, status, store_dead_letters, storing  # noqa: F401 (agents)
from streams.app import app, settings

# Young objects collected every this many allocations (Python's default: 700). Each batch
# makes hundreds of thousands of short-lived objects; collecting them less often saves CPU.
YOUNG_COLLECTION_EVERY = 50_000


def run() -> None:
    """Blocks until SIGTERM / Ctrl-C, then stops cleanly (offsets of stored events committed)."""
    units.communes()  # the official map, loaded before the freeze below
    # What lives as long as the process (modules, schemas, the map) leaves the collector's
    # sight: a full collection would otherwise walk it over and over, half of validation's CPU.
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, *gc.get_threshold()[1:])
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), redirect_stdouts=False,
                          override_logging=False)
    worker.execute_from_commandline()
