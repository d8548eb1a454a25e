"""The Faust app: one consumer group over the source topics, configured from IOC_* settings."""

import faust

from ioc.core.settings import get_settings
from streams.delivery import deliver_directly
from streams.fetch_pacing import pace_empty_fetches

settings = get_settings()
pace_empty_fetches(settings.empty_fetch_pause_ms / 1000)  # 0 but with the emulator
deliver_directly()
FAUST_DIR = settings.state_dir / "faust"
FAUST_DIR.mkdir(parents=True, exist_ok=True)

app = faust.App(
    settings.app_id,
    broker=f"kafka://{settings.kafka_bootstrap}",
    autodiscover=False,  # every agent is imported explicitly in streams/worker.py
    store="memory://",  # no faust tables: current state lives in PostgreSQL
    topic_partitions=settings.partitions,
    topic_replication_factor=1,
    consumer_auto_offset_reset="earliest",
    # Static membership (IOC_WORKER_INSTANCE_ID): a worker back within the session timeout
    # takes its partitions back without a rebalance. Empty: dynamic membership.
    consumer_group_instance_id=settings.worker_instance_id or None,
    # Group timing on a real broker (tests/streams/test_scale_out.py measures the takeover):
    # - session 10 s (faust: 60): a crashed worker's partitions move to the others after
    #   10 s without its heartbeat, not a minute; above the broker's 6 s minimum and long
    #   enough for a GC pause or a busy core not to look like a crash;
    broker_session_timeout=10,
    # - heartbeat every 3 s: three chances within a session before the member is dropped;
    broker_heartbeat_interval=3,
    # - rebalance 60 s: how long the group waits for each member to rejoin; a member first
    #   finishes the batch it is writing and commits its offsets (a slow database included);
    broker_rebalance_timeout=60,
    # - max poll interval 1000 s (faust's): faust fetches in its own task, so a long batch
    #   write never stops the polls; the session timeout is what detects a crash.
    broker_max_poll_interval=1000,
    web_enabled=False,
    datadir=str(FAUST_DIR / "{conf.name}"),  # faust's own files, not the working directory
    producer_acks=-1,
)
