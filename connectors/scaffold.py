"""`ioc connectors new NAME`: a connector file and its test, from `connectors/templates/`.

The connector polls a JSON API (`GET /records?cursor=&limit=`) and maps records of the chosen
kind; its test serves sample records from a real local HTTP server. Both run as generated,
so a newcomer starts from something green and changes it step by step.
"""

import json
import keyword
import re
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from connectors import registry
from ioc.core.events import Kind

NAME = re.compile(r"^[a-z][a-z0-9_]{0,23}$")
IMPORTS = {
    Kind.DOSSIER: "DossierEvent, DossierPayload, DossierStatus, Kind",
    Kind.DOCUMENT: "Direction, DocumentEvent, DocumentPayload, DocumentStatus, Kind",
    Kind.FIELD_REPORT: "FieldReportEvent, FieldReportPayload, Kind, ReportStatus",
}


class ScaffoldError(ValueError):
    pass


@dataclass(frozen=True)
class Scaffolded:
    connector: Path
    test: Path
    class_name: str


def class_prefix(name: str) -> str:
    """`hue_portal` -> `HuePortal` (the class is `HuePortalConnector`)."""
    return "".join(part.capitalize() for part in name.split("_") if part)


def check_name(name: str) -> None:
    if not NAME.match(name) or keyword.iskeyword(name):
        raise ScaffoldError(f"name {name!r}: lower-case letters, digits and _, starting with a"
                            " letter (a Python identifier, at most 24 characters)")
    if name in registry.available():
        raise ScaffoldError(f"name {name!r}: a connector of that name is already registered")
    if resources.files("connectors").joinpath(f"{name}.py").is_file() \
            or resources.files("connectors").joinpath(name).is_dir():
        raise ScaffoldError(f"name {name!r}: the connectors package already has a module {name}")


def literal(value: object) -> str:
    """A flat JSON value as Python source, in the project's style (double quotes)."""
    if value is None or isinstance(value, bool):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)


def render(name: str, kind: Kind) -> tuple[str, str]:
    """The connector module and its test module, as text."""
    templates = resources.files("connectors").joinpath("templates")
    samples = json.loads(templates.joinpath(f"records_{kind}.json").read_text("utf-8"))
    values = {
        "name": name, "cls": class_prefix(name), "upper": name.upper(), "kind": str(kind),
        "member": kind.name, "title": class_prefix(name), "imports": IMPORTS[kind],
        "namespace": str(uuid.uuid4()),
        "personal_fields": "{" + ", ".join(map(literal, sorted(samples["personal_fields"]))) + "}",
        "map": templates.joinpath(f"map_{kind}.py.tmpl").read_text("utf-8"),
        "records": "\n".join(
            "    {\n" + "".join(f"        {literal(k)}: {literal(v)},\n" for k, v in r.items())
            + "    }," for r in samples["records"]),
    }
    connector = Template(templates.joinpath("connector.py.tmpl").read_text("utf-8"))
    test = Template(templates.joinpath("test_connector.py.tmpl").read_text("utf-8"))
    return connector.substitute(values), test.substitute(values)


def scaffold(name: str, kind: Kind, root: Path) -> Scaffolded:
    """Write `<root>/connectors/<name>.py` and its test, `<root>/tests/connectors/`."""
    check_name(name)
    connector_path = root / "connectors" / f"{name}.py"
    test_path = root / "tests" / "connectors" / f"test_connector_{name}.py"
    for path in (connector_path, test_path):
        if path.exists():
            raise ScaffoldError(f"{path} exists: not overwritten")
    connector_text, test_text = render(name, kind)
    for path, text in ((connector_path, connector_text), (test_path, test_text)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return Scaffolded(connector_path, test_path, f"{class_prefix(name)}Connector")
