"""Documents from edXML (QCVN 102:2016) messages dropped as files into an inbox directory.

The document interchange axis (or the agency's document-management system) writes one
message per `*.xml` file into `inbox`. Each poll reads the oldest files first (modification
time, then name), at most `batch_size` of them. What is read from a message, the copies of
ours (`own_organ_ids`) and the event ids (the file's SHA-256: reading it again gives the same
ids) are the mapping's, `connectors/mappings/edxml.py`, shared with the push receiver.

**Files after publishing.** The base class stores the cursor only after the broker
acknowledged a batch; the cursor is `{"pending": [[file name, "processed" | "failed",
reason], ...]}`, the files of the last acknowledged batch. The next `fetch` first moves
them to `processed/` or `failed/` (reason beside it in `<name>.error.txt`), then reads new
files; after a batch `fetch` reports `more`, so `run(once=True)` ends with the inbox emptied.
A crash before the cursor is stored re-reads the files (same event ids); after it, the next
run moves them. A file that cannot be read, parsed (a DTD, entities, malformed XML, over
`max_file_bytes`) or mapped goes to the dead-letter topic (its metadata, never its content)
and to `failed/`.
"""

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from pydantic import Field

from connectors.base import Batch, Connector, ConnectorOptions, PermanentError, refusal_reason
from connectors.mappings.edxml import document_event, message_records
from ioc.core.events import DocumentEvent, Kind


class EdxmlOptions(ConnectorOptions):
    """Environment: `IOC_EDXML_INBOX`, `IOC_EDXML_OWN_ORGAN_IDS` (JSON list)..."""

    inbox: Path = Field(description="Directory the edXML files (*.xml) arrive in.")
    own_organ_ids: list[str] = Field(min_length=1, description=(
        "OrganIds of the agencies this IOC monitors: To one of them is incoming, From one of"
        " them outgoing."))
    processed_dir: Path | None = Field(None, description="Default: <inbox>/processed.")
    failed_dir: Path | None = Field(None, description="Default: <inbox>/failed.")
    max_file_bytes: int = Field(20 * 1024 * 1024, ge=1, description="Larger files are refused.")


class EdxmlInboxConnector(Connector):
    name = "edxml"
    kind = Kind.DOCUMENT
    Options = EdxmlOptions
    # Never read into a record; listed so a dead letter could not carry them either.
    personal_fields = frozenset({"FullName", "Staff", "Subject"})
    options: EdxmlOptions

    @property
    def processed_dir(self) -> Path:
        return self.options.processed_dir or self.options.inbox / "processed"

    @property
    def failed_dir(self) -> Path:
        return self.options.failed_dir or self.options.inbox / "failed"

    async def open(self) -> None:
        if not self.options.inbox.is_dir():
            raise PermanentError(f"inbox {self.options.inbox} is not a directory")
        self.processed_dir.mkdir(parents=True, exist_ok=True)
        self.failed_dir.mkdir(parents=True, exist_ok=True)

    # --- reading -------------------------------------------------------------------------
    async def fetch(self, cursor: str | None) -> Batch:
        return await asyncio.to_thread(self.fetch_files, cursor)

    def fetch_files(self, cursor: str | None) -> Batch:
        """`fetch`, blocking: move the acknowledged files, then read the next ones."""
        pending = json.loads(cursor)["pending"] if cursor else []
        for name, destination, reason in pending:  # acknowledged: their files can move
            self._move(name, destination, reason)
        files = self.inbox_files()
        chosen = files[:self.options.batch_size]
        records: list[dict[str, Any]] = []
        moves: list[list[str | None]] = []
        for path in chosen:
            found = self.read_file(path)
            errors = []
            for record in found:
                try:
                    self.map(record)
                except ValueError as exc:
                    errors.append(refusal_reason(exc))
            records += found
            moves.append([path.name, "failed" if errors else "processed",
                          "; ".join(errors)[:2000] or None])
        if not chosen and not pending:
            return Batch([], cursor)
        return Batch(records, json.dumps({"pending": moves}, ensure_ascii=False),
                     more=bool(chosen))

    def inbox_files(self) -> list[Path]:
        """The regular `*.xml` files of the inbox, oldest first."""
        found = []
        with os.scandir(self.options.inbox) as entries:
            for entry in entries:
                if entry.name.lower().endswith(".xml") and entry.is_file(follow_symlinks=False):
                    found.append((entry.stat().st_mtime_ns, entry.name))
        return [self.options.inbox / name for _, name in sorted(found)]

    def _move(self, name: str, destination: str, reason: str | None) -> None:
        source = self.options.inbox / name
        if not source.exists():
            return  # moved before a crash
        folder = self.failed_dir if destination == "failed" else self.processed_dir
        os.replace(source, folder / name)
        if reason:
            (folder / f"{name}.error.txt").write_text(reason + "\n", "utf-8")
        self.log.info("edxml.moved", file=name, to=destination)

    def read_file(self, path: Path) -> list[dict[str, Any]]:
        """The records of one file: one per copy of ours, or one saying why it is refused."""
        base: dict[str, Any] = {"file": path.name}
        try:
            size = path.stat().st_size
            base["bytes"] = size
            if size > self.options.max_file_bytes:
                return [{**base, "error": f"{size} bytes: over max_file_bytes"
                                          f" ({self.options.max_file_bytes})"}]
            data = path.read_bytes()
        except FileNotFoundError:
            return []  # taken away since the inbox was listed
        except OSError as exc:
            return [{**base, "error": f"cannot be read: {type(exc).__name__}: {exc}"}]
        return message_records(data, base, self.options.own_organ_ids)

    def record_key(self, record: Any) -> str | None:
        if not isinstance(record, dict):
            return None
        document_id = (record.get("fields") or {}).get("document_id")
        return document_id or record.get("file")

    def map(self, record: Any) -> DocumentEvent:
        return document_event(record, self.places, self.name)
