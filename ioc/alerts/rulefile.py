"""Reading rule files: YAML with the line of every node kept, so that every error names file,
line and field. Generic in the model it validates (rules.py passes Rule), which keeps it free of
the rule model and rules.py free of YAML.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class RuleError:
    file: Path
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"


class RuleFileError(Exception):
    def __init__(self, errors: list[RuleError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


Path_ = tuple[str | int, ...]


def _positions(node: yaml.Node, path: Path_, out: dict[Path_, tuple[int, int]]) -> None:
    """Line of every node, and of every mapping key (the line a missing field is reported on
    is its mapping's first line)."""
    out[path] = (node.start_mark.line + 1, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else str(key.value)
            _positions(value, (*path, name), out)
            out[(*path, name)] = (key.start_mark.line + 1, value.start_mark.line + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _positions(item, (*path, i), out)


def _line(positions: dict[Path_, tuple[int, int]], path: Path_) -> int:
    while path not in positions and path:
        path = path[:-1]
    return positions.get(path, (1, 1))[1]


def _field(path: Path_) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(file)"


def read_models(file: Path, model: type[M]) -> list[M]:
    """The models of one file (one mapping, a list of them, or `rules:` with a list);
    RuleFileError lists every problem with file, line and field."""
    try:
        text = file.read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise RuleFileError([RuleError(file, line, "(syntax)", str(exc.problem))]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleFileError([RuleError(file, 1, "(file)", str(exc))]) from None
    if node is None:
        return []
    data = yaml.SafeLoader("").construct_document(node)
    positions: dict[Path_, tuple[int, int]] = {}
    _positions(node, (), positions)
    prefix: Path_ = ()
    if isinstance(data, dict) and set(data) == {"rules"}:
        data, prefix = data["rules"], ("rules",)
    items: list[tuple[Path_, object]]
    if isinstance(data, list):
        items = [((*prefix, i), item) for i, item in enumerate(data)]
    else:
        items = [(prefix, data)]
    rules: list[M] = []
    errors: list[RuleError] = []
    for path, item in items:
        if not isinstance(item, dict):
            errors.append(RuleError(file, _line(positions, path), _field(path) or "(rule)",
                                    "a rule must be a mapping of fields"))
            continue
        try:
            rules.append(model.model_validate(item))
        except ValidationError as exc:
            for error in exc.errors():
                loc = _aliased(model, tuple(error["loc"]))
                where = (*path, *loc)
                if error["type"] == "missing":  # no node of its own: its rule's first line
                    line = _line(positions, path) if path else _first_line(node)
                else:
                    line = _line(positions, where)
                message = error["msg"].removeprefix("Value error, ")
                errors.append(RuleError(file, line, _field(where), message))
    if errors:
        raise RuleFileError(errors)
    return rules


def _aliased(model: type[BaseModel], loc: Path_) -> Path_:
    """An error's location with the field's name as written in YAML (`for`, not `for_`)."""
    field = model.model_fields.get(loc[0]) if loc and isinstance(loc[0], str) else None
    return (field.alias, *loc[1:]) if field is not None and field.alias else loc


def _first_line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def rule_files(where: Path) -> list[Path]:
    if where.is_file():
        return [where]
    return sorted([*where.glob("*.yaml"), *where.glob("*.yml")])


def name_line(file: Path, name: str) -> int:
    """The line that names `name` (a duplicate's), 1 when none does."""
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if re.match(rf"^\s*-?\s*name\s*:\s*['\"]?{re.escape(name)}['\"]?\s*(#.*)?$", line):
            return number
    return 1
