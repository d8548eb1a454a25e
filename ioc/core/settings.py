"""Settings: one object, read from `IOC_*` environment variables (or a `.env` file).

The same code runs on the embedded stack and on docker-compose services; only these change.
"""

import os
import socket
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from psycopg.conninfo import make_conninfo
from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

BrokerSetting = Literal["auto", "apache-kafka", "emulator"]


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ioc-monitor"


TOPIC_NAMES = ("dossiers", "documents", "field_reports", "evaluations", "dead_letters",
               "connector_status")


def packaged(*parts: str) -> Path:
    """A data file shipped inside the `ioc` package, so an installed wheel finds it from any
    working directory (in a checkout, the source tree's file)."""
    return Path(str(resources.files("ioc").joinpath(*parts)))


DEFAULT_ALERT_RULES = packaged("alerts", "defaults", "rules")
DEFAULT_ALERT_RECIPIENTS = packaged("alerts", "defaults", "recipients.yaml")


class SecretFiles(PydanticBaseSettingsSource):
    """`IOC_<NAME>_FILE=/run/secrets/x` sets the field `<name>` to that file's content (its
    trailing newline dropped): Docker secrets, so no secret shows in `docker inspect`. Setting
    both `IOC_<NAME>` and `IOC_<NAME>_FILE` is an error; a field named `<name>_file` is its own."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads every field at once

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        fields = self.settings_cls.model_fields
        for name in fields:
            variable = f"IOC_{name.upper()}"
            path = os.environ.get(f"{variable}_FILE")
            if not path or f"{name}_file" in fields:
                continue
            if os.environ.get(variable):
                raise ValueError(f"set {variable} or {variable}_FILE, not both")
            values[name] = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        return values


class Settings(BaseSettings):
    """Every option of the monitor.

    Each field is set by the environment variable `IOC_<FIELD NAME IN CAPITALS>`, for example
    `IOC_KAFKA_BOOTSTRAP=kafka:9092` or `IOC_DATABASE_URL=postgresql://...`, or by
    `IOC_<FIELD NAME>_FILE` naming a file that holds the value (see SecretFiles).
    """

    model_config = SettingsConfigDict(env_prefix="IOC_", env_file=".env", extra="ignore")

    # Connections. Empty: the embedded stack started by `ioc up` (its ports below).
    kafka_bootstrap: str = ""
    database_url: str = Field("", repr=False)  # may hold a password
    # The password of database_url's user, joined to it at start; given as
    # IOC_DATABASE_PASSWORD_FILE in production so the URL in the environment holds none.
    database_password: str = Field("", repr=False)
    database_schema: str = Field("public", pattern=r"^[a-z_][a-z0-9_]*$")

    # Topics and the consumer group.
    topic_prefix: str = "ioc."
    partitions: int = Field(4, ge=1)
    topic_retention_hours: int = Field(168, ge=1)
    app_id: str = "ioc-monitor"
    # Static group membership (group.instance.id): a worker restarted within the session
    # timeout takes its partitions back without a rebalance. Empty: dynamic membership.
    worker_instance_id: str = Field(default_factory=socket.gethostname)

    # An empty fetch answered sooner than this waits out the rest (streams/fetch_pacing.py): only
    # for the emulator, which answers them at once; `ioc up` sets it when it runs the emulator.
    empty_fetch_pause_ms: int = Field(0, ge=0)

    # Stream processing.
    batch_size: int = Field(2000, ge=1)
    batch_seconds: float = Field(0.2, gt=0)
    due_soon_hours: float = Field(24, gt=0)
    # The province this IOC serves (official two-digit code; 25 = Phú Thọ).
    province_code: str = Field("25", pattern=r"^\d{2}$")
    # Dates given without a time zone (CLI options, imports) are local time here.
    timezone: str = "Asia/Ho_Chi_Minh"
    heartbeat_seconds: float = Field(5, gt=0)

    # Storage policies (applied where TimescaleDB is installed).
    compress_after_days: int = Field(7, ge=1)
    retain_events_days: int = Field(730, ge=1)

    # Field reports (ioc/core/geography.py): the province's agency directory (CSV: code, name,
    # commune_code; sample in deploy/province/agencies.sample.csv) and its communes' boundaries
    # (GeoJSON polygons, the official code in the `commune_boundaries_code_property` of each
    # feature). Without them reports are placed by the app's code or the address only, and
    # filed under the agency code "IOC".
    agency_directory: Path | None = None
    commune_boundaries: Path | None = None
    commune_boundaries_code_property: str = "commune_code"

    # HTTP API.
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # Bodies over this answer 413; write keys get this many requests a minute (per process).
    api_max_body_bytes: int = Field(64 * 1024, ge=1024)
    api_rate_per_minute: float = Field(120, gt=0)
    # API key secrets are stored as HMAC-SHA-256 keyed with this pepper (or the content of
    # the file): the same on every API process and for `ioc keys`, never in the database.
    # Changing it invalidates every key. Empty: unpeppered (a warning at start).
    api_key_pepper: str = ""
    api_key_pepper_file: str = ""
    # Failed key checks allowed per client address and per key id, a minute (and as a
    # burst); more answer 429.
    api_failed_auth_per_minute: float = Field(30, gt=0)
    # Seconds a client may take to send a request body (slower: 408, connection closed).
    api_body_timeout_seconds: float = Field(10, gt=0)

    # Embedded stack (`ioc up`): its broker (auto: Apache Kafka when Java ≥ 17 can run it,
    # else the emulator), state, ports, and where Apache Kafka's jars are installed.
    broker: BrokerSetting = "auto"
    state_dir: Path = Path(".ioc")
    cache_dir: Path = Field(default_factory=default_cache_dir)
    embedded_kafka_port: int = 19092
    embedded_postgres_port: int = 15432

    # Alert rule files (*.yaml), a directory or one file; empty: the rules the package ships.
    alert_rules: Path = DEFAULT_ALERT_RULES
    alert_evaluate_seconds: float = Field(15, gt=0)
    # Role or name -> addresses: e-mail, telegram:, zalo:, webhook: (YAML, see
    # ioc/alerts/recipients.py); empty: the package's example file.
    alert_recipients: Path = DEFAULT_ALERT_RECIPIENTS
    # Alert e-mail; with smtp_host empty no e-mail is sent.
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = False
    smtp_from: str = "ioc@localhost"
    # Alert webhooks (recipients `webhook:<URL or name>`): the key of their HMAC-SHA256
    # signature (X-IOC-Signature); empty: no webhook is sent.
    alert_webhook_secret: str = ""
    # Telegram Bot API (recipients `telegram:<chat id>`); empty token: no Telegram message.
    telegram_bot_token: str = ""
    telegram_api_url: str = "https://api.telegram.org"
    # Zalo Official Account API (recipients `zalo:<user id>`); empty token: no Zalo message.
    zalo_access_token: str = ""
    zalo_api_url: str = "https://openapi.zalo.me/v3.0/oa/message/cs"
    # Renewing the OA access token (ioc/alerts/zalo.py): the app's id and secret key and the
    # first refresh token; all three set: the token is renewed and kept in the database.
    zalo_app_id: str = ""
    zalo_app_secret: str = ""
    zalo_refresh_token: str = ""
    zalo_oauth_url: str = "https://oauth.zaloapp.com/v4/oa/access_token"
    # Base URL of the dashboards, linked from alert messages.
    dashboard_url: str = ""

    # `ioc dashboards push`: a running Grafana's base URL and an administrator's credentials
    # (a service account token, or a user and password), and what its datasource connects with.
    grafana_url: str = "http://localhost:3000"
    grafana_token: str = ""
    grafana_user: str = ""
    grafana_password: str = ""
    grafana_reader_password: str = ""  # the password of grafana_reader (read-only role)
    grafana_database_host: str = ""  # host:port as Grafana reaches it; empty: the provisioned
    # Base URL of this API as recipients reach it (one-click acknowledge links in alerts).
    public_api_url: str = ""
    # Key signing those links (HMAC-SHA256); empty: messages carry no acknowledge link.
    alert_link_secret: str = ""

    log_level: str = "INFO"
    log_json: bool = False

    @field_validator("agency_directory", "commune_boundaries", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("alert_rules", "alert_recipients", mode="before")
    @classmethod
    def _packaged_when_empty(cls, value: Any, info: ValidationInfo) -> Any:
        """`IOC_ALERT_RULES=` (empty) means the packaged files, not the working directory."""
        if value is None or value == "":
            return cls.model_fields[info.field_name or ""].default
        return value

    @field_validator("cache_dir")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @model_validator(mode="after")
    def _embedded_defaults(self) -> "Settings":
        if not self.kafka_bootstrap:
            self.kafka_bootstrap = f"127.0.0.1:{self.embedded_kafka_port}"
        if not self.database_url:
            self.database_url = f"postgresql://postgres@127.0.0.1:{self.embedded_postgres_port}/ioc"
        if self.database_password:
            self.database_url = make_conninfo(self.database_url, password=self.database_password)
        return self

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, SecretFiles(settings_cls), dotenv_settings,
                file_secret_settings)

    @property
    def worker_name(self) -> str:
        """This worker's row in worker_status: its static member id, else host and process
        (two dynamic members on one host must not share a row)."""
        return self.worker_instance_id or f"{socket.gethostname()}-{os.getpid()}"

    def topic(self, name: str) -> str:
        """Full topic name: `topic('dossiers')` -> `ioc.dossiers`."""
        if name not in TOPIC_NAMES:
            raise ValueError(f"unknown topic {name!r}; known: {', '.join(TOPIC_NAMES)}")
        return f"{self.topic_prefix}{name}"

    def as_env(self) -> dict[str, str]:
        """The process environment with these settings as IOC_* variables, for a child process
        (an unset path becomes empty, which reads back as unset)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("IOC_")}
        for name, value in self.model_dump().items():
            env[f"IOC_{name.upper()}"] = "" if value is None else str(value)
        return env


@lru_cache
def get_settings() -> Settings:
    return Settings()
