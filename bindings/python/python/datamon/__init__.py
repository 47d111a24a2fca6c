"""datamon: Git for data, from Python.

Open a store, version folders as immutable, deduplicated bundles, read them back (whole, by
file, or by byte range), name versions with labels and branches, and record pipeline runs with
their lineage. Everything runs in the native ``datamon`` library (no shell-outs); calls release
the GIL, are safe from several threads, and long ones stop cleanly on Ctrl-C.

>>> import datamon
>>> dm = datamon.open("file:///tmp/store")            # or a context name, or the default
>>> dm.create_repo("images", "training images")
>>> b = dm.upload("images", "./images", message="first cut", label="latest")
>>> with dm.bundle("images", "latest").open("cats/1.png") as f:
...     header = f.read(16)

fsspec: ``datamon://REPO@SELECTOR/path/in/bundle`` (see :mod:`datamon.fsspec`).
"""

from __future__ import annotations

import builtins as _builtins
import datetime as _dt
import io as _io
import json as _json
import os as _os
import re as _re
import shutil as _shutil
import tempfile as _tempfile
from pathlib import Path as _Path
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from . import _native
from .errors import (
    AlreadyExists,
    Busy,
    Cancelled,
    Conflict,
    Corrupt,
    Error,
    InvalidInput,
    IOFailure,
    NotFound,
    PathNotFound,
    PermissionDenied,
    Transient,
)

__version__: str = _native.__version__

__all__ = [
    "open",
    "Datamon",
    "Bundle",
    "BundleFile",
    "Entry",
    "Change",
    "Record",
    "Run",
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

PathLike = Union[str, "_os.PathLike[str]"]
#: A progress callback: ``callback(phase, done, total)``, called from the calling thread
#: about every 100 ms; raising in it cancels the call.
ProgressCallback = Callable[[str, int, int], Any]

_ANY: Any = object()  # "no guard" for set_label / set_branch


def _time(s: Optional[str]) -> Optional[_dt.datetime]:
    """An RFC 3339 time from the library (nanoseconds cut to microseconds)."""
    if not s:
        return None
    s = s.replace("Z", "+00:00")
    m = _re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)$", s)
    if m:
        frac = (m.group(2) or "")[:7]
        s = m.group(1) + frac + m.group(3)
    return _dt.datetime.fromisoformat(s)


def _since(since: Union[None, str, _dt.datetime, _dt.date, _dt.timedelta]) -> Optional[str]:
    if since is None:
        return None
    if isinstance(since, _dt.timedelta):
        since = _dt.datetime.now(_dt.timezone.utc) - since
    if isinstance(since, _dt.datetime):
        if since.tzinfo is None:
            since = since.replace(tzinfo=_dt.timezone.utc)
        return since.isoformat()
    if isinstance(since, _dt.date):
        return _dt.datetime(since.year, since.month, since.day, tzinfo=_dt.timezone.utc).isoformat()
    text = str(since)
    if _re.match(r"^\d{4}-\d\d-\d\d$", text):
        return text + "T00:00:00Z"
    return text


def _where(where: Union[None, Mapping[str, str], Iterable[str]]) -> Optional[List[Tuple[str, str]]]:
    """Metadata filters: a mapping, or ``KEY=VALUE`` strings (``meta.`` prefix optional)."""
    if where is None:
        return None
    if isinstance(where, Mapping):
        items = [(str(k), str(v)) for k, v in where.items()]
    else:
        items = []
        for w in where:
            k, sep, v = str(w).partition("=")
            if not sep:
                raise InvalidInput(f"filter {w!r}: expected KEY=VALUE")
            items.append((k, v))
    return [(k[5:] if k.startswith("meta.") else k, v) for k, v in items]


class Record:
    """A library record (repo, run, label or branch entry...): its JSON fields as attributes
    (``record.step``), and as a dict in ``record.raw``. Times are in ``*_at``/``time`` fields
    as text; :meth:`time_of` parses them."""

    __slots__ = ("raw",)

    def __init__(self, raw: Dict[str, Any]):
        self.raw = raw

    def __getattr__(self, name: str) -> Any:
        try:
            return self.raw[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name: str) -> Any:
        return self.raw[name]

    def time_of(self, field: str) -> Optional[_dt.datetime]:
        """The time in ``field`` as an aware :class:`datetime.datetime`."""
        return _time(self.raw.get(field))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Record) and other.raw == self.raw

    def __repr__(self) -> str:
        return f"Record({self.raw!r})"


class Entry(NamedTuple):
    """One file or symlink of a bundle."""

    path: str
    """Path in the bundle, ``/``-separated."""
    kind: str
    """``file`` or ``symlink``."""
    size: int
    """Size in bytes (a symlink: the length of its target)."""
    mode: int
    """Permission bits."""
    mtime_ns: int
    """Modification time, ns since the Unix epoch."""
    hash: Optional[str]
    """BLAKE3 content hash (files only)."""

    @property
    def mtime(self) -> _dt.datetime:
        """Modification time as an aware datetime."""
        return _dt.datetime.fromtimestamp(self.mtime_ns / 1e9, tz=_dt.timezone.utc)


class Change(NamedTuple):
    """One changed path: ``kind`` is ``A`` (added), ``D`` (deleted) or ``M`` (modified)."""

    kind: str
    path: str


class BundleFile(_io.RawIOBase):
    """A file of a bundle opened for reading: seekable, binary. Each read fetches only the
    chunks it covers (verified, through the shared chunk cache under ``$DATAMON_HOME/cache``).
    Use as a context manager, or close it."""

    def __init__(self, native: Any, name: str):
        super().__init__()
        self._f = native
        self._pos = 0
        self.name = name
        self.size: int = native.size
        """The file's size in bytes."""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def tell(self) -> int:
        self._checkClosed()
        return self._pos

    def seek(self, offset: int, whence: int = _io.SEEK_SET) -> int:
        self._checkClosed()
        if whence == _io.SEEK_SET:
            pos = offset
        elif whence == _io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == _io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def read(self, size: Optional[int] = -1) -> bytes:
        self._checkClosed()
        if size is None or size < 0:
            size = -1
        data = self._f.read_at(self._pos, size)
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, b: Any) -> int:
        self._checkClosed()
        view = memoryview(b).cast("B")
        data = self._f.read_at(self._pos, len(view))
        n = len(data)
        view[:n] = data
        self._pos += n
        return n

    def pread(self, offset: int, size: int) -> bytes:
        """Reads ``size`` bytes at ``offset`` without moving the position."""
        self._checkClosed()
        return self._f.read_at(offset, size)

    def close(self) -> None:
        if not self.closed:
            self._f.close()
        super().close()

    def __repr__(self) -> str:
        return f"<datamon.BundleFile {self.name!r} size={self.size}>"


def _glob_regex(pattern: str) -> "_re.Pattern[str]":
    """A path glob: ``*`` and ``?`` within a component, ``**`` across components."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                out.append(_re.escape(c))
            else:
                body = pattern[i + 1 : j].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = j
        else:
            out.append(_re.escape(c))
        i += 1
    return _re.compile("".join(out) + r"\Z", _re.S)


class Bundle:
    """One bundle of a repo: its record, its files, reads, downloads and diffs."""

    def __init__(self, dm: "Datamon", raw: Dict[str, Any]):
        self._dm = dm
        self.raw: Dict[str, Any] = raw
        """The bundle record as a dict."""
        self.id: str = raw["id"]
        self.repo: str = raw["repo"]
        self.message: str = raw.get("message", "")
        self.author: str = raw.get("author", "")
        self.branch: Optional[str] = raw.get("branch")
        self.parents: List[str] = list(raw.get("parents") or [])
        self.meta: Dict[str, str] = dict(raw.get("meta") or {})
        self.stats: Dict[str, int] = dict(raw.get("stats") or {})
        self.created_at: Optional[_dt.datetime] = _time(raw.get("created_at"))

    def __repr__(self) -> str:
        return f"<datamon.Bundle {self.repo}@{self.id} {self.message!r}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Bundle) and (other.repo, other.id) == (self.repo, self.id)

    def __hash__(self) -> int:
        return hash((self.repo, self.id))

    def entries(self, prefix: Optional[str] = None, glob: Optional[str] = None) -> List[Entry]:
        """Files and symlinks, sorted by path; only those under ``prefix`` and matching
        ``glob`` (``*``, ``?``, ``[...]`` within a path component, ``**`` across)."""
        rows = self._dm._store.list_files(self.repo, self.id, prefix)
        out = [Entry._make(r) for r in rows]
        if glob:
            rx = _glob_regex(glob.lstrip("/"))
            out = [e for e in out if rx.match(e.path)]
        return out

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries())

    def open(self, path: str) -> BundleFile:
        """Opens a file for reading: a seekable binary file object whose reads fetch only the
        chunks they need. Raises :class:`PathNotFound` (a ``FileNotFoundError``)."""
        return BundleFile(self._dm._store.open_file(self.repo, self.id, path), path)

    def read_bytes(self, path: str) -> bytes:
        """The whole content of one file."""
        with self.open(path) as f:
            return f.read()

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        """The content of one file as text."""
        return self.read_bytes(path).decode(encoding)

    def download(
        self,
        dest: PathLike,
        *,
        path: Optional[str] = None,
        glob: Optional[str] = None,
        pattern: Optional[str] = None,
        force: bool = False,
        progress: Optional[ProgressCallback] = None,
    ) -> Tuple[int, int]:
        """Downloads the bundle into ``dest`` (every chunk verified); returns (files, bytes).

        ``path``: only this file or directory (to ``dest/<path>``); ``glob``: only matching
        files; ``pattern``: only files whose path matches this regular expression (Rust
        syntax). ``force`` allows a non-empty destination / overwriting.
        """
        dest = _os.fspath(dest)
        if path is not None:
            return self._dm._store.download_file(self.repo, self.id, path, dest, force)
        if glob is not None:
            if pattern is not None:
                raise InvalidInput("give glob or pattern, not both")
            pattern = "^" + _glob_regex(glob.lstrip("/")).pattern[:-2] + r"\z"
        return self._dm._store.download(self.repo, self.id, dest, pattern, force, progress)

    def diff(self, other: Union["Bundle", str, PathLike]) -> List[Change]:
        """What changed from this bundle to ``other``: another bundle (a :class:`Bundle` or a
        bundle id of the same repo) or a local folder (compared by content)."""
        if isinstance(other, Bundle):
            rows = self._dm._store.diff_bundles(self.repo, self.id, other.id)
        elif (
            isinstance(other, str)
            and _re.fullmatch(r"[0-9A-Za-z]{27}", other)
            and not _os.path.exists(other)
        ):
            rows = self._dm._store.diff_bundles(self.repo, self.id, other)
        else:
            rows = self._dm._store.diff_dir(self.repo, self.id, _os.fspath(other))
        return [Change._make(r) for r in rows]

    def lineage(self, direction: str = "both", depth: Optional[int] = None) -> Record:
        """See :meth:`Datamon.lineage`."""
        return self._dm.lineage(self.repo, self.id, direction=direction, depth=depth)

    def set_label(self, label: str, *, expect: Any = _ANY) -> Record:
        """Points ``label`` at this bundle (see :meth:`Datamon.set_label`)."""
        return self._dm.set_label(self.repo, label, self.id, expect=expect)


class Run:
    """A pipeline step being recorded (see :meth:`Datamon.run`)."""

    def __init__(self, dm: "Datamon", plan: Any, step: str, params: Dict[str, str]):
        self._dm = dm
        self._plan = plan
        self.id: str = plan.id
        self.step = step
        self.params: Dict[str, str] = params
        self.metrics: Dict[str, Any] = {}
        self.inputs: Dict[str, _Path] = {}
        """Each input's local path, by key: the repo, then ``REPO#2``... for more of one repo."""
        self.input_bundles: Dict[str, str] = {}
        """Each input's bundle id, by key."""
        self.outputs: Dict[str, _Path] = {}
        """Each output's folder, by repo: what is there when the step ends is uploaded."""
        self.record: Optional[Record] = None
        """The run as recorded, once the ``with`` block is over."""

    @property
    def work_dir(self) -> Optional[_Path]:
        """The run's work folder (inputs are under ``inputs/``)."""
        w = self._plan.work_dir
        return _Path(w) if w else None

    def log_metric(self, key: str, value: Any) -> None:
        """Records a metric (any JSON value); the last value of a key wins."""
        self.metrics[str(key)] = value

    def log_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Records several metrics."""
        for k, v in metrics.items():
            self.log_metric(k, v)

    def _write_metrics(self) -> None:
        f = self._plan.metrics_file
        if f and self.metrics:
            with _builtins.open(f, "w", encoding="utf-8") as out:
                _json.dump(self.metrics, out, default=float)


class _RunContext:
    def __init__(self, dm: "Datamon", plan: Any, step: str, params: Dict[str, str],
                 outputs: Dict[str, _Path], temp_outputs: List[str]):
        self._run = Run(dm, plan, step, params)
        self._run.outputs = outputs
        self._temps = temp_outputs

    def __enter__(self) -> Run:
        run = self._run
        try:
            for repo, bundle, key, path in run._plan.materialize():
                run.inputs[key] = _Path(path)
                run.input_bundles[key] = bundle
        except BaseException:
            self._cleanup()
            raise
        return run

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        run = self._run
        try:
            run._write_metrics()
            if exc_type is None:
                run.record = Record(_json.loads(run._plan.succeed()))
            else:
                if isinstance(exc, KeyboardInterrupt):
                    code = 130
                elif isinstance(exc, SystemExit) and isinstance(exc.code, int):
                    code = exc.code or 1
                else:
                    code = 1
                run.record = Record(_json.loads(run._plan.fail(code)))
        finally:
            self._cleanup()
        return False

    def _cleanup(self) -> None:
        for t in self._temps:
            _shutil.rmtree(t, ignore_errors=True)


class Datamon:
    """An opened store. Thread-safe; cheap to share. Get one with :func:`datamon.open`."""

    def __init__(self, store: Any):
        self._store = store

    @property
    def url(self) -> str:
        """The store's URL."""
        return self._store.url

    @property
    def author(self) -> str:
        """Who is recorded as acting."""
        return self._store.author

    def __repr__(self) -> str:
        return f"<datamon.Datamon {self.url}>"

    # -- repos ---------------------------------------------------------------------------

    def list_repos(self) -> List[Record]:
        """Every repo (``name``, ``description``, ``created_at``, ``created_by``)."""
        return [Record(r) for r in _json.loads(self._store.list_repos())]

    def get_repo(self, repo: str) -> Record:
        """One repo; raises :class:`NotFound`."""
        return Record(_json.loads(self._store.get_repo(repo)))

    def create_repo(self, repo: str, description: str = "") -> Record:
        """Creates a repo; raises :class:`AlreadyExists`."""
        return Record(_json.loads(self._store.create_repo(repo, description)))

    # -- bundles -------------------------------------------------------------------------

    def upload(
        self,
        repo: str,
        path: PathLike,
        message: str,
        *,
        label: Optional[str] = None,
        branch: Optional[str] = None,
        meta: Optional[Mapping[str, str]] = None,
        files: Optional[Sequence[str]] = None,
        skip_on_error: bool = False,
        progress: Optional[ProgressCallback] = None,
    ) -> Bundle:
        """Uploads the folder ``path`` as a new bundle of ``repo`` on ``branch`` (default
        ``main``), setting ``label``, with metadata ``meta``. ``files`` uploads only those
        paths (relative to ``path``). Interrupted (Ctrl-C, or an exception in ``progress``),
        nothing is committed and the interrupt propagates."""
        raw = _json.loads(
            self._store.upload(
                repo,
                _os.fspath(path),
                message,
                label,
                branch,
                {str(k): str(v) for k, v in (meta or {}).items()},
                list(files) if files is not None else None,
                skip_on_error,
                progress,
            )
        )
        return Bundle(self, raw["bundle"])

    def bundles(
        self,
        repo: str,
        *,
        where: Union[None, Mapping[str, str], Iterable[str]] = None,
        since: Union[None, str, _dt.datetime, _dt.date, _dt.timedelta] = None,
    ) -> List[Bundle]:
        """The bundles of a repo, oldest first; ``where``: metadata that must match
        (``{"team": "vision"}`` or ``["meta.team=vision"]``); ``since``: committed at or after
        (a datetime, a date, a timedelta ago, or RFC 3339 text)."""
        rows = _json.loads(self._store.list_bundles(repo, _where(where), _since(since)))
        return [Bundle(self, r) for r in rows]

    def bundle(
        self,
        repo: str,
        selector: Optional[str] = None,
        *,
        id: Optional[str] = None,
        label: Optional[str] = None,
        branch: Optional[str] = None,
    ) -> Bundle:
        """One bundle: by ``selector`` text (a bundle id, a label, a branch, ``label:NAME``,
        ``branch:NAME``, ``latest``), or by ``id``, ``label`` or ``branch``; the latest bundle
        when none is given. Raises :class:`NotFound`."""
        given = [s for s in (selector, id, label, branch) if s is not None]
        if len(given) > 1:
            raise InvalidInput("give one of selector, id, label, branch")
        if label is not None:
            selector = f"label:{label}"
        elif branch is not None:
            selector = f"branch:{branch}"
        elif id is not None:
            selector = id
        bid = self._store.resolve(repo, selector)
        return Bundle(self, _json.loads(self._store.get_bundle(repo, bid)))

    def resolve(self, repo: str, selector: Optional[str] = None) -> str:
        """The bundle id a selector names (latest when ``None``)."""
        return self._store.resolve(repo, selector)

    def log(self, repo: str, branch: Optional[str] = None, limit: Optional[int] = None) -> List[Record]:
        """The history of a branch (default ``main``), newest first: ``bundle`` (a dict) and
        the ``run`` that produced it."""
        return [Record(r) for r in _json.loads(self._store.log(repo, branch, limit))]

    # -- labels and branches -------------------------------------------------------------

    def get_label(self, repo: str, label: str) -> Record:
        """A label's current value (``bundle``, ``previous``, ``author``, ``time``)."""
        return Record(_json.loads(self._store.get_label(repo, label)))

    def set_label(self, repo: str, label: str, bundle: Union[str, Bundle], *, expect: Any = _ANY) -> Record:
        """Points ``label`` at ``bundle``. With ``expect`` (a bundle id, or ``None`` for "the
        label does not exist"), only if the label has that value now; else :class:`Conflict`."""
        bid = bundle.id if isinstance(bundle, Bundle) else bundle
        guard = expect is not _ANY
        exp = expect.id if isinstance(expect, Bundle) else expect
        return Record(_json.loads(self._store.set_label(repo, label, bid, guard, exp if guard else None)))

    def label_history(self, repo: str, label: str) -> List[Record]:
        """Every value a label had, oldest first."""
        return [Record(r) for r in _json.loads(self._store.label_history(repo, label))]

    def list_labels(self, repo: str) -> Dict[str, Record]:
        """Every label of a repo with its current value."""
        return {k: Record(v) for k, v in _json.loads(self._store.list_labels(repo)).items()}

    def branch_head(self, repo: str, branch: str) -> Optional[str]:
        """The head bundle id of a branch (``None`` when it has none)."""
        return self._store.branch_head(repo, branch)

    def create_branch(self, repo: str, branch: str, start: Union[None, str, Bundle] = None) -> Record:
        """Creates a branch, empty or at ``start``; raises :class:`AlreadyExists`."""
        sid = start.id if isinstance(start, Bundle) else start
        return Record(_json.loads(self._store.create_branch(repo, branch, sid)))

    def set_branch(self, repo: str, branch: str, bundle: Union[str, Bundle], *, expect: Any = _ANY) -> Record:
        """Moves ``branch`` to ``bundle``. With ``expect`` (a bundle id, or ``None`` for "no
        head"), only if the head is that now; else :class:`Conflict`."""
        bid = bundle.id if isinstance(bundle, Bundle) else bundle
        guard = expect is not _ANY
        exp = expect.id if isinstance(expect, Bundle) else expect
        return Record(_json.loads(self._store.set_branch(repo, branch, bid, guard, exp if guard else None)))

    def branch_history(self, repo: str, branch: str) -> List[Record]:
        """Every head a branch had, oldest first."""
        return [Record(r) for r in _json.loads(self._store.branch_history(repo, branch))]

    def list_branches(self, repo: str) -> List[Record]:
        """Every branch of a repo (``name``, ``head``, ``updates``)."""
        return [Record(r) for r in _json.loads(self._store.list_branches(repo))]

    # -- runs and lineage ----------------------------------------------------------------

    def run(
        self,
        step: str,
        *,
        inputs: Sequence[str] = (),
        outputs: Union[None, Sequence[str], Mapping[str, Any]] = None,
        params: Optional[Mapping[str, Any]] = None,
        meta: Optional[Mapping[str, str]] = None,
        message: Optional[str] = None,
        workdir: Optional[PathLike] = None,
    ) -> _RunContext:
        """Records a pipeline step run in this process::

            with dm.run(step="train", inputs=["features@latest"],
                        outputs={"model": "./out/model"}, params={"lr": 0.01}) as run:
                train(run.inputs["features"], run.outputs["model"])
                run.log_metric("accuracy", 0.93)

        ``inputs``: ``REPO[@SELECTOR][:PATH]`` (resolved to bundle ids and downloaded before
        the block runs). ``outputs``: repo -> folder (or ``(folder, target)``, target a branch
        or label, or ``None`` for a temporary folder); a sequence of repos means temporary
        folders. On success each output folder becomes a bundle and the run is recorded with
        its params and metrics; an exception records a failed run, uploads nothing, and
        propagates. Everything is checked before the block runs.
        """
        if isinstance(outputs, Mapping):
            out_items = list(outputs.items())
        else:
            out_items = [(r, None) for r in (outputs or ())]
        temps: List[str] = []
        specs: List[Tuple[str, str, Optional[str]]] = []
        dirs: Dict[str, _Path] = {}
        try:
            for repo, value in out_items:
                target = None
                if isinstance(value, tuple):
                    value, target = value
                if value is None:
                    value = _tempfile.mkdtemp(prefix=f"datamon-out-{repo}-")
                    temps.append(value)
                folder = _Path(_os.fspath(value)).absolute()
                dirs[repo] = folder
                specs.append((repo, str(folder), target))
            str_params = {str(k): str(v) for k, v in (params or {}).items()}
            plan = self._store.plan_run(
                step,
                list(inputs),
                specs,
                str_params,
                {str(k): str(v) for k, v in (meta or {}).items()},
                message,
                _os.fspath(workdir) if workdir is not None else None,
                ["python"],
            )
        except BaseException:
            for t in temps:
                _shutil.rmtree(t, ignore_errors=True)
            raise
        return _RunContext(self, plan, step, str_params, dirs, temps)

    def get_run(self, run_id: str) -> Record:
        """One run record; raises :class:`NotFound`."""
        return Record(_json.loads(self._store.get_run(run_id)))

    def runs(
        self,
        *,
        step: Optional[str] = None,
        since: Union[None, str, _dt.datetime, _dt.date, _dt.timedelta] = None,
        where: Union[None, Mapping[str, str], Iterable[str]] = None,
    ) -> List[Record]:
        """Runs, oldest first, filtered by step, start time and metadata."""
        return [Record(r) for r in _json.loads(self._store.list_runs(step, _since(since), _where(where)))]

    def diff_runs(self, a: str, b: str) -> Record:
        """What changed between two runs: ``code_changed``, ``params``, ``inputs`` (with
        file-level ``changes``), ``outputs``, ``metrics``, and ``causes_changed``."""
        return Record(_json.loads(self._store.diff_runs(a, b)))

    def lineage(self, repo: str, bundle: Union[str, Bundle], *, direction: str = "both",
                depth: Optional[int] = None) -> Record:
        """The lineage of a bundle: ``direction`` ``up`` (the runs that produced it and their
        inputs, recursively), ``down`` (the runs that read it and what they wrote) or
        ``both``; at most ``depth`` runs deep. Fields: ``bundles``, ``runs``, ``edges``."""
        bid = bundle.id if isinstance(bundle, Bundle) else bundle
        return Record(_json.loads(self._store.lineage(repo, bid, direction, depth)))


def open(
    url: Optional[str] = None,
    *,
    context: Optional[str] = None,
    home: Optional[PathLike] = None,
    author: Optional[str] = None,
    options: Optional[Mapping[str, str]] = None,
    concurrency: Optional[int] = None,
) -> Datamon:
    """Opens a store the way the ``datamon`` CLI does.

    ``url``: ``file:///abs/path`` (or a plain path), ``s3://bucket/prefix``,
    ``gs://bucket/prefix``, ``az://container/prefix``; else ``$DATAMON_STORE``; else the
    ``context`` (else ``$DATAMON_CONTEXT``, else the current context of
    ``$DATAMON_HOME/config.toml``), whose ``default`` is the embedded store
    ``$DATAMON_HOME/store``. ``home`` overrides ``$DATAMON_HOME`` (default ``~/.datamon``).
    ``options``: backend settings (``aws_endpoint``...) over the ``AWS_*``/``GOOGLE_*``/
    ``AZURE_*`` environment.
    """
    store = _native.Store.open(
        url,
        context,
        _os.fspath(home) if home is not None else None,
        author,
        [(str(k), str(v)) for k, v in (options or {}).items()],
        concurrency,
    )
    return Datamon(store)
