"""The files of ``tincay issue --batch`` and ``tincay revoke --batch``: rows in, results out.

A batch file is CSV with a header row or JSON lines (one object a line), chosen by its
extension (``.csv``; ``.jsonl``, ``.ndjson``, ``.json``) or else by its first non-blank
character (``{``: JSON lines). Each row is validated by a pydantic model, so a row with an
unknown column, a missing one or a value of the wrong type is reported with the field at fault
and the rows after it still go on; the file itself only fails as a whole when it cannot be read
at all (missing, not UTF-8, a CSV without a header).

The results file has the input's format: one line per row, in row order, with ``row`` (1 for
the first row after a CSV header, or the first JSON line), ``serial``, ``status`` and, for
errors, ``field`` and ``error``.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Literal, TextIO

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ca.errors import ConfigurationError

Format = Literal["csv", "jsonl"]
RESULT_FIELDS = ("row", "serial", "status", "field", "error")
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


class RowError(Exception):
    """A row that cannot be served: ``field`` names the column at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _split(value: Any) -> Any:
    """A multi-valued column: a JSON list, or in CSV one cell with values separated by ``;``
    or whitespace."""
    if value is None:
        return []
    if isinstance(value, str):
        return [part for part in value.replace(";", " ").split() if part]
    return value


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_absent(cls, value: Any) -> Any:
        return None if value == "" else value  # an empty CSV cell


class IssueRow(_Row):
    """One certificate to issue: ``profile``, ``subject`` (a DN as ``--subject`` takes it) and
    exactly one of ``key_type`` (the key made on the HSM) and ``csr`` (PEM text, or a path
    relative to the batch file)."""

    profile: str
    subject: str
    key_type: str | None = None
    csr: str | None = None
    email: list[str] = Field(default_factory=list)
    dns: list[str] = Field(default_factory=list)
    days: int | None = Field(default=None, ge=1, le=36525)

    _lists = field_validator("email", "dns", mode="before")(_split)


class RevokeRow(_Row):
    """One certificate to revoke: ``serial`` (hex), ``reason`` (RFC 5280 name) and an optional
    ``invalidity_date`` (ISO 8601, UTC when no offset is given)."""

    serial: str
    reason: str
    invalidity_date: datetime | None = None

    @field_validator("invalidity_date")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


def validate(model: type[_Row], raw: Any) -> Any:
    """``raw`` as a ``model`` row; RowError naming the first field at fault."""
    if not isinstance(raw, dict):
        raise RowError("row", f"expected an object with named fields, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "row"
        message = "unknown column" if first["type"] == "extra_forbidden" else first["msg"]
        raise RowError(field, f"{field}: {message}") from None


@dataclass(frozen=True)
class RawRow:
    """A row as read: its number, and its fields (or the reason it could not be read)."""

    number: int
    fields: Any
    unreadable: str | None = None


def detect_format(path: Path) -> Format:
    """CSV or JSON lines, by extension, else by the first non-blank character."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in _JSONL_SUFFIXES:
        return "jsonl"
    with _open(path) as handle:
        for line in handle:
            if line.strip():
                return "jsonl" if line.lstrip().startswith("{") else "csv"
    return "csv"


def _open(path: Path) -> TextIO:
    try:
        return path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise ConfigurationError(f"cannot read batch file {path}: {exc.strerror}") from None


def read_rows(path: Path, fmt: Format) -> Iterator[RawRow]:
    """The rows of ``path``, lazily (a file of 100,000 rows is never held in memory)."""
    try:
        with _open(path) as handle:
            if fmt == "csv":
                yield from _csv_rows(path, handle)
            else:
                yield from _jsonl_rows(handle)
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"batch file {path} is not UTF-8 text: {exc.reason} at "
                                 f"byte {exc.start}") from None
    except csv.Error as exc:
        raise ConfigurationError(f"batch file {path}: {exc}") from None


def _csv_rows(path: Path, handle: TextIO) -> Iterator[RawRow]:
    reader = csv.DictReader(handle, restkey="_extra")
    if not reader.fieldnames:
        raise ConfigurationError(f"batch file {path}: empty, or no CSV header row")
    for number, record in enumerate(reader, start=1):
        extra = record.pop("_extra", None)
        if extra:
            yield RawRow(number, None, f"{len(extra)} more cells than the header's columns")
            continue
        # an empty cell is an absent field (a column only some rows fill)
        yield RawRow(number, {k.strip(): v for k, v in record.items() if v not in (None, "")})


def _jsonl_rows(handle: TextIO) -> Iterator[RawRow]:
    number = 0
    for line in handle:
        if not line.strip():
            continue
        number += 1
        try:
            yield RawRow(number, json.loads(line))
        except json.JSONDecodeError as exc:
            yield RawRow(number, None, f"not JSON: {exc.msg} at column {exc.colno}")


def count_rows(path: Path, fmt: Format) -> int:
    """How many rows ``path`` holds (for the progress bar); one quick pass."""
    return sum(1 for _ in read_rows(path, fmt))


@dataclass(frozen=True)
class RowResult:
    """What became of one row: ``status`` is issued, already-issued, revoked,
    already-revoked or error (then ``field`` and ``error`` say why)."""

    row: int
    status: str
    serial: str | None = None
    field: str | None = None
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == "error"


class ResultWriter:
    """Writes results as they come, in the batch file's format, flushed after each chunk so a
    crash leaves every line of the rows already committed."""

    def __init__(self, path: Path | None, fmt: Format) -> None:
        self.fmt = fmt
        self._handle: TextIO | None = None
        self._csv: Any = None
        if path is not None:
            try:
                self._handle = path.open("w", encoding="utf-8", newline="")
            except OSError as exc:
                raise ConfigurationError(f"cannot write results file {path}: "
                                         f"{exc.strerror}") from None
            if fmt == "csv":
                self._csv = csv.DictWriter(self._handle, RESULT_FIELDS)
                self._csv.writeheader()

    def write(self, result: RowResult) -> None:
        if self._handle is None:
            return
        record = asdict(result)
        if self._csv is not None:
            self._csv.writerow({k: "" if v is None else v for k, v in record.items()})
        else:
            self._handle.write(json.dumps({k: v for k, v in record.items() if v is not None},
                                          ensure_ascii=False) + "\n")

    def flush(self) -> None:
        if self._handle is not None:
            self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def csr_bytes(value: str, base: Path) -> bytes:
    """A ``csr`` cell: PEM text itself, or a file path relative to the batch file."""
    if value.lstrip().startswith("-----BEGIN"):
        return value.encode("ascii", "replace")
    path = base / value
    try:
        return path.read_bytes()
    except OSError as exc:
        raise RowError("csr", f"csr: cannot read {path}: {exc.strerror}") from None


def dump_row(fields: Any) -> str:
    """A row's content in one canonical form, for its claim key (the same row always gives the
    same text, whichever order its columns come in)."""
    return json.dumps(fields, ensure_ascii=False, sort_keys=True, default=str,
                      separators=(",", ":"))


def as_text(fmt: Format, rows: list[dict[str, Any]]) -> str:
    """Rows as a batch file's text (for tests and the bench): the inverse of :func:`read_rows`."""
    if fmt == "jsonl":
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    out = io.StringIO()
    writer = csv.DictWriter(out, columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ";".join(v) if isinstance(v, list) else v for k, v in row.items()})
    return out.getvalue()
