"""Connectors by short name: the built-in ones here, third-party ones by entry point.

A package adds a connector with, in its pyproject.toml:

    [project.entry-points."ioc.connectors"]
    mysource = "my_package.mysource:MySourceConnector"
"""

from importlib import import_module
from importlib.metadata import entry_points

from connectors.base import Connector

ENTRY_POINT_GROUP = "ioc.connectors"
BUILTIN: dict[str, str] = {
    "dvcqg": "connectors.dvcqg:DvcqgConnector",
    "edxml": "connectors.edxml:EdxmlInboxConnector",
}


class UnknownConnector(LookupError):
    pass


def available() -> dict[str, str]:
    """Short name -> import string ("module:Class"); a built-in wins over an entry point."""
    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return {**found, **BUILTIN}


def load(name: str) -> type[Connector]:
    """The connector class registered as `name`."""
    known = available()
    if name not in known:
        raise UnknownConnector(f"no connector named {name!r}; known: {', '.join(sorted(known))}"
                               f" (built-in, or entry points of the group {ENTRY_POINT_GROUP!r})")
    module_name, _, attribute = known[name].partition(":")
    try:
        target = getattr(import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise UnknownConnector(f"connector {name!r} ({known[name]}) cannot be loaded: {exc}"
                               ) from exc
    if not (isinstance(target, type) and issubclass(target, Connector)):
        raise UnknownConnector(f"connector {name!r} ({known[name]}) is not a Connector subclass")
    return target
