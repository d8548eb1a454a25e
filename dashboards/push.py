"""Upload the dashboards to a running Grafana through its HTTP API (grafana-client).

For sites whose Grafana cannot mount dashboards/provisioning/: the same folder, datasource and
dashboards as the provisioning files, read from those files so the two never drift apart.
Idempotent: the folder is created once, the datasource created or updated by its uid, every
dashboard of dashboards/json/ saved with `overwrite` (same uid: a new version, not a copy).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import niquests
import yaml
from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException

from dashboards import JSON_DIR, PROVISIONING_DIR
from ioc.core.settings import Settings

DATASOURCES = PROVISIONING_DIR / "datasources" / "ioc.yaml"
PROVIDERS = PROVISIONING_DIR / "dashboards" / "ioc.yaml"
MESSAGE = "ioc dashboards push"


class PushError(RuntimeError):
    """Grafana refused or could not be reached; the message is one line saying what to do."""


@dataclass
class Pushed:
    folder_created: bool = False
    datasource: str = ""  # created | updated | kept (provisioned, read-only in Grafana)
    dashboards: list[str] = field(default_factory=list)


def folder() -> tuple[str, str]:
    """(uid, title) of the provisioned dashboards' folder."""
    (provider,) = yaml.safe_load(PROVIDERS.read_text(encoding="utf-8"))["providers"]
    return provider["folderUid"], provider["folder"]


def datasource(settings: Settings) -> dict[str, Any]:
    """The provisioned datasource as an API body, with this site's host and reader password."""
    (source,) = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))["datasources"]
    body = {k: v for k, v in copy.deepcopy(source).items() if k not in ("editable",)}
    body.pop("secureJsonData", None)
    if settings.grafana_database_host:
        body["url"] = settings.grafana_database_host
    if settings.grafana_reader_password:
        body["secureJsonData"] = {"password": settings.grafana_reader_password}
    return body


def dashboards(directory: Path = JSON_DIR) -> dict[str, dict[str, Any]]:
    """File name -> dashboard model, as committed (what provisioning would mount)."""
    return {path.name: json.loads(path.read_text(encoding="utf-8"))
            for path in sorted(directory.glob("*.json"))}


def connect(settings: Settings, timeout: float = 10) -> GrafanaApi:
    if settings.grafana_token:
        credential: str | tuple[str, str] = settings.grafana_token
    elif settings.grafana_user and settings.grafana_password:
        credential = (settings.grafana_user, settings.grafana_password)
    else:
        raise PushError("no Grafana credentials: set --token (IOC_GRAFANA_TOKEN) or --user and "
                        "--password (IOC_GRAFANA_USER, IOC_GRAFANA_PASSWORD)")
    return GrafanaApi.from_url(settings.grafana_url.rstrip("/"), credential=credential,
                               timeout=timeout)


def _missing(call: Any, *args: Any) -> dict[str, Any] | None:
    """The object, or None where Grafana answers 404."""
    try:
        return call(*args)
    except GrafanaClientError as error:
        if error.status_code == 404:
            return None
        raise


def _push(api: GrafanaApi, settings: Settings, directory: Path) -> Pushed:
    result = Pushed()
    folder_uid, title = folder()
    if _missing(api.folder.get_folder, folder_uid) is None:
        api.folder.create_folder(title, uid=folder_uid)
        result.folder_created = True

    body = datasource(settings)
    existing = _missing(api.datasource.get_datasource_by_uid, body["uid"])
    if existing is None:
        if "secureJsonData" not in body:
            raise PushError("the datasource does not exist yet: set IOC_GRAFANA_READER_PASSWORD "
                            "(grafana_reader's password) to create it")
        api.datasource.create_datasource(body)
        result.datasource = "created"
    elif existing.get("readOnly"):
        result.datasource = "kept"  # provisioned from a file: Grafana refuses API changes
    else:
        api.datasource.update_datasource_by_uid(body["uid"], {**body, "id": existing["id"]})
        result.datasource = "updated"

    for name, model in dashboards(directory).items():
        model.pop("id", None)  # matched by uid
        api.dashboard.update_dashboard({"dashboard": model, "folderUid": folder_uid,
                                        "overwrite": True, "message": MESSAGE})
        result.dashboards.append(name)
    return result


def push(settings: Settings, directory: Path = JSON_DIR) -> Pushed:
    """Ensure the folder and datasource, upload every dashboard; PushError on any failure."""
    api = connect(settings)
    url = settings.grafana_url
    try:
        return _push(api, settings, directory)
    except niquests.exceptions.ConnectionError as error:
        raise PushError(f"cannot reach Grafana at {url}: {_reason(error)}") from error
    except GrafanaException as error:
        status = error.status_code
        if status == 401:
            raise PushError(f"Grafana at {url} refused the credentials (401 Unauthorized): "
                            "check IOC_GRAFANA_TOKEN or IOC_GRAFANA_USER/PASSWORD") from error
        if status == 403:
            raise PushError(f"Grafana at {url} denied the change (403 Forbidden): the token or "
                            "user needs the Admin role") from error
        if status == 404:
            raise PushError(f"Grafana at {url} answered 404 Not Found: is it Grafana's base "
                            "URL (IOC_GRAFANA_URL)?") from error
        detail = " ".join(str(error).split())
        raise PushError(f"Grafana at {url} failed: {detail}") from error


def _reason(error: Exception) -> str:
    text = " ".join(str(error).split())
    return "connection refused" if "refused" in text.lower() else text
