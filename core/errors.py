"""Errors a user can cause. The CLI prints ``str(error)`` on one line and exits 2."""

from __future__ import annotations

import difflib


# an error message is one line for a person: a value quoted in it (a 10M-item list given
# as a text, a 50 MB line) is cut in the middle, keeping the start and the hint at the end
MAX_MESSAGE = 1000


def shorten(text: str, limit: int = MAX_MESSAGE) -> str:
    if len(text) <= limit:
        return text
    head, tail = limit * 2 // 3, limit // 3
    return f"{text[:head]} [... {len(text) - head - tail:,} characters cut ...] {text[-tail:]}"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


class TunesmithError(Exception):
    """Base class: a problem in the user's input, configuration or plugins."""

    def __init__(self, *args):
        super().__init__(*(shorten(a) if isinstance(a, str) else a for a in args))


class ConfigError(TunesmithError):
    """One or more problems in a run configuration, all reported at once."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = [shorten(p, MAX_MESSAGE // 3) for p in problems]   # each one stays readable
        self.source = source
        where = f"{source}: " if source else ""
        if len(self.problems) == 1:
            msg = f"{where}{self.problems[0]}"
        else:
            msg = f"{where}{len(self.problems)} problems: " + "; ".join(self.problems)
        super().__init__(msg)


class UnknownNameError(TunesmithError):
    """A task, strategy, metric or model source that no plugin registered."""

    def __init__(self, kind: str, name: str, available: list[str]):
        self.kind, self.name, self.available = kind, name, sorted(available)
        hint = did_you_mean(name, self.available)
        listing = ", ".join(repr(a) for a in self.available) or "none"
        super().__init__(f"unknown {kind} {name!r}{hint}; available: {listing}")


class DataError(TunesmithError):
    """A data file that cannot be used, naming the file, line and field."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None,
                 field: str | None = None, row: int | None = None):
        self.file, self.line, self.field, self.row = file, line, field, row
        where = file or ""
        if line is not None:
            where += f":{line}"
        elif row is not None:   # formats without lines (parquet, arrow, in-memory): the row number
            where += f": row {row}" if where else f"row {row}"
        if field:
            where += f": field {field!r}"
        super().__init__(f"{where}: {message}" if where else message)


class RowError(ValueError):
    """Raised by a task's check; the core adds file and line. ``row`` is the row's index in
    the batch handed to ``check_batch`` (``tunesmith.data.each_row`` sets it)."""

    def __init__(self, field: str | None, message: str, row: int | None = None):
        self.field, self.row = field, row
        super().__init__(message)


class PluginError(TunesmithError):
    """A plugin that failed to load, clashed with another, or raised inside a hook."""

    def __init__(self, plugin: str, message: str):
        self.plugin = plugin
        super().__init__(f"plugin {plugin!r}: {message}")


class ModelError(TunesmithError):
    """A model reference that cannot be resolved or loaded."""


class RunDirError(TunesmithError):
    """A run directory that is missing, incomplete, or in the way."""


class TrainingInterrupted(TunesmithError):
    """SIGINT/SIGTERM during training: a checkpoint was saved; ``--resume`` continues."""

    exit_code = 130


def did_you_mean(name: str, choices) -> str:
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
