"""noida-db, a Kafka-protocol emulator from PyPI: the broker of a laptop without Java.

Its defects, and what the code does about each, are in the README ("The emulator").
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ioc.embedded.broker.base import Broker
from ioc.embedded.servers import missing

# It answers an empty fetch at once: the worker waits this long instead (streams/fetch_pacing.py).
EMPTY_FETCH_PAUSE_MS = 100


@dataclass(kw_only=True)
class Emulator(Broker):
    kind: ClassVar[str] = "emulator"
    name: str = "emulator"

    def signal(self, sig: int) -> None:
        """To the whole process group, should the server ever run children of its own."""
        assert self.proc is not None
        os.killpg(self.proc.pid, sig)

    def client_settings(self) -> dict[str, Any]:
        return {"empty_fetch_pause_ms": EMPTY_FETCH_PAUSE_MS}

    def command(self) -> list[str]:
        try:
            import noida_db
        except ImportError as exc:
            raise missing("noida-db") from exc
        # The server binary itself: the `noida-db` script would not forward our signals.
        exe = Path(noida_db.__file__).parent / "noida-db"
        return [str(exe), "start", "--only", "kafka", "--kafka-port", str(self.port),
                "--data-dir", str(self.data_dir)]
