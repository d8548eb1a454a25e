"""The healthcheck of the worker, API and simulator containers, and their watchdog.

Docker marks a container unhealthy but never restarts it, so a wedged worker would stay
wedged. After `--exit-after` failed checks in a row (Docker's `retries`), past the start
period, this script stops the container's main process itself: SIGTERM to PID 1 (compose's
`init: true` makes that docker-init, which passes it to `ioc` for a clean stop), and SIGKILL to
PID 1's children if a later check still fails. The container then exits and its
`restart: unless-stopped` policy starts it again.

Run inside the container: python /etc/ioc/healthcheck.py worker|api|simulator [--exit-after N]
"""

import argparse
import os
import signal
import socket
import sys
import urllib.request
from pathlib import Path

from ioc.core.settings import Settings, get_settings


def worker_ok(settings: Settings) -> bool:
    """This replica's heartbeat in worker_status is fresh (as /readyz judges it)."""
    from ioc.api.health import heartbeat_limit
    from ioc.core.db import connect

    with connect(settings, connect_timeout=3) as conn:
        row = conn.execute("SELECT extract(epoch FROM now() - heartbeat_at) FROM worker_status"
                           " WHERE instance_id = %s", (settings.worker_instance_id,)).fetchone()
    return row is not None and row[0] < heartbeat_limit(settings)


def api_ok(settings: Settings) -> bool:
    """The API answers /healthz on its port."""
    url = f"http://127.0.0.1:{settings.api_port}/healthz"
    with urllib.request.urlopen(url, timeout=4) as answer:
        return bool(answer.status == 200)


def simulator_ok(settings: Settings) -> bool:
    """The broker the simulator publishes to accepts a connection."""
    host, port = settings.kafka_bootstrap.split(",")[0].rsplit(":", 1)
    socket.create_connection((host, int(port)), timeout=4).close()
    return True


CHECKS = {"worker": worker_ok, "api": api_ok, "simulator": simulator_ok}


def healthy(kind: str) -> bool:
    try:
        return CHECKS[kind](get_settings())
    except Exception as exc:  # any failure to check is a failed check
        print(f"{kind} unhealthy: {type(exc).__name__}", file=sys.stderr)  # no secrets in it
        return False


def started(pid: int) -> tuple[int, float]:
    """The process's start time (clock ticks since boot, its identity) and its age in seconds."""
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return ticks, uptime - ticks / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue  # the process ended meanwhile
    return found


def watchdog(ok: bool, pid: int, exit_after: int, start_period: float, state: Path) -> None:
    """Count failures in a row for this run of the main process; stop it past the limit."""
    ticks, age = started(pid)
    try:
        seen, failures = map(int, state.read_text().split())
    except (OSError, ValueError):
        seen, failures = ticks, 0
    failures = 0 if ok or seen != ticks or age < start_period else failures + 1
    state.write_text(f"{ticks} {failures}\n")
    if failures == exit_after:
        print(f"{failures} failed checks in a row: stopping the container", file=sys.stderr)
        os.kill(pid, signal.SIGTERM)
    elif failures > exit_after:
        for child in children(pid):
            os.kill(child, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(CHECKS))
    parser.add_argument("--exit-after", type=int, default=0,
                        help="failed checks in a row that stop the container (0: never)")
    parser.add_argument("--start-period", type=float, default=0,
                        help="seconds after the start during which failures do not count")
    parser.add_argument("--pid", type=int, default=1, help="the main process")
    parser.add_argument("--state", type=Path, default=Path("/tmp/ioc-healthcheck"))
    args = parser.parse_args()
    ok = healthy(args.kind)
    if args.exit_after:
        watchdog(ok, args.pid, args.exit_after, args.start_period, args.state)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
