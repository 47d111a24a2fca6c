"""Exceptions raised by datamon: one class per error kind of the library.

Every exception is a :class:`Error`; its ``kind`` attribute names the library's error kind
(``NotFound``, ``Conflict``...). Messages name the repo, the bundle and the path concerned.
"""

from __future__ import annotations

__all__ = [
    "Error",
    "NotFound",
    "PathNotFound",
    "AlreadyExists",
    "Conflict",
    "InvalidInput",
    "Corrupt",
    "Transient",
    "PermissionDenied",
    "Busy",
    "Cancelled",
    "IOFailure",
]


class Error(Exception):
    """Any datamon error. ``kind`` is the library's error kind."""

    kind: str = "Internal"


class NotFound(Error, LookupError):
    """A repo, bundle, label, branch, run or context does not exist."""

    kind = "NotFound"


class PathNotFound(NotFound, FileNotFoundError):
    """A file or directory is not in the bundle (also a :class:`FileNotFoundError`)."""

    kind = "NotFound"


class AlreadyExists(Error):
    """A repo, branch or run exists already, or a download would overwrite a file."""

    kind = "AlreadyExists"


class Conflict(Error):
    """A guarded update of a label or branch found another value: someone moved it."""

    kind = "Conflict"


class InvalidInput(Error, ValueError):
    """An invalid name, id, selector, pattern or argument (also a :class:`ValueError`)."""

    kind = "InvalidInput"


class Corrupt(Error):
    """Stored data does not match its hash; nothing damaged is ever returned."""

    kind = "Corrupt"


class Transient(Error):
    """The store is unreachable, too slow or throttling: retrying may succeed."""

    kind = "Transient"


class PermissionDenied(Error, PermissionError):
    """The store or a local path refused access."""

    kind = "PermissionDenied"


class Busy(Error):
    """Someone else holds what is needed (a commit in progress)."""

    kind = "Busy"


class Cancelled(Error):
    """The operation was cancelled; nothing was committed."""

    kind = "Cancelled"


class IOFailure(Error, OSError):
    """A local input/output failure (also an :class:`OSError`)."""

    kind = "Io"
