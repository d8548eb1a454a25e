"""The Faust app: one consumer group over the source topics, configured from IOC_* settings."""

import faust

from ioc.fetch_pacing import pace_empty_fetches
from ioc.settings import get_settings

settings = get_settings()
pace_empty_fetches(settings.empty_fetch_pause_ms / 1000)  # 0 but with the emulator
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
    # Static membership: a worker restarted after a crash takes its partitions back at once.
    consumer_group_instance_id=settings.worker_instance_id,
    broker_session_timeout=10,
    web_enabled=False,
    datadir=str(FAUST_DIR / "{conf.name}"),  # faust's own files, not the working directory
    producer_acks=-1,
)
