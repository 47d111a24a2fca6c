"""An fsspec filesystem for ``datamon://`` URLs, so pandas, pyarrow, dask and every library
that speaks fsspec read bundles directly.

URL form: ``datamon://REPO@SELECTOR/path/in/bundle``. SELECTOR is a bundle id, a label or a
branch (``label:NAME`` / ``branch:NAME`` to say which); without it, the repo's latest bundle.
``datamon://`` lists repos; ``datamon://REPO`` is the root of its latest bundle.

The store comes from the storage options ``store=URL`` (or a path) or ``context=NAME``, else
the default, as for the CLI (``$DATAMON_STORE``, the current context, ``$DATAMON_HOME/store``)::

    import pandas as pd
    df = pd.read_csv("datamon://features@latest/train.csv")
    df = pd.read_csv("datamon://features/train.csv", storage_options={"store": "s3://b/p"})

Reads are ranged: ``open`` returns a seekable file whose reads fetch only the chunks they
cover. Writes: files opened for writing (or ``put``) under a branch URL (``REPO@BRANCH/...``,
default ``main``) inside ``with fs.transaction:`` become one new bundle on that branch when
the transaction commits, holding the branch head's files with the written ones over them;
nothing is visible before, and an exception discards everything. Outside a transaction each
written file is committed as its own bundle when closed.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Tuple

from fsspec.spec import AbstractFileSystem
from fsspec.transaction import Transaction

import datamon as _dm
from .errors import InvalidInput, NotFound, PathNotFound

__all__ = ["DatamonFileSystem"]

_PROTO = "datamon://"


def _split(path: str) -> Tuple[str, Optional[str], str]:
    """``REPO@SELECTOR/rest`` -> (repo, selector or None, rest)."""
    head, _, rest = path.partition("/")
    repo, at, sel = head.partition("@")
    return repo, (sel if at else None), rest.strip("/")


class _Listing:
    """The namespace of one bundle: files by path, children by directory."""

    def __init__(self, rows: List[Tuple[Any, ...]]):
        self.files: Dict[str, Tuple[Any, ...]] = {}
        self.children: Dict[str, Dict[str, bool]] = {"": {}}  # dir -> {name: is_dir}
        for r in rows:
            path = r[0]
            self.files[path] = r
            parent, _, name = path.rpartition("/")
            self.children.setdefault(parent, {})[name] = False
            while parent and parent not in self.children:
                self.children[parent] = {}
                grand, _, pname = parent.rpartition("/")
                self.children.setdefault(grand, {})[pname] = True
                parent = grand
            if parent:
                g, _, pn = parent.rpartition("/")
                self.children.setdefault(g, {})[pn] = True


class _StagedFile(io.FileIO):
    """A file being written: staged locally, committed with the transaction (or on close)."""

    def __init__(self, fs: "DatamonFileSystem", repo: str, branch: str, path: str, autocommit: bool):
        self._dir = tempfile.mkdtemp(prefix="datamon-put-")
        self._local = os.path.join(self._dir, "data")
        super().__init__(self._local, "wb")
        self.fs, self.repo, self.branch, self.path = fs, repo, branch, path
        self.autocommit = autocommit
        self._done = False

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        if self.autocommit:
            self.commit()

    def commit(self) -> None:
        """Hands the file to the transaction (or, outside one, commits it as a bundle)."""
        if not self.closed:
            super().close()
        if self._done:
            return
        self._done = True
        if self.autocommit:
            try:
                self.fs._commit(self.repo, self.branch, [(self.path, self._local)])
            finally:
                shutil.rmtree(self._dir, ignore_errors=True)
        else:
            self.fs._staged.setdefault((self.repo, self.branch), []).append((self.path, self._local, self._dir))

    def discard(self) -> None:
        """Drops the staged file."""
        if not self.closed:
            super().close()
        self._done = True
        shutil.rmtree(self._dir, ignore_errors=True)


class DatamonTransaction(Transaction):
    """Collects the files written in ``with fs.transaction:``; on success, one bundle per
    (repo, branch), its parent the branch head; on an exception, nothing."""

    def complete(self, commit: bool = True) -> None:
        fs = self.fs
        try:
            super().complete(commit=commit)
            if commit:
                for (repo, branch), files in list(fs._staged.items()):
                    fs._commit(repo, branch, [(p, local) for p, local, _ in files])
        finally:
            for files in fs._staged.values():
                for _, _, d in files:
                    shutil.rmtree(d, ignore_errors=True)
            fs._staged.clear()


class DatamonFileSystem(AbstractFileSystem):
    """fsspec filesystem over a datamon store (protocol ``datamon``).

    Storage options: ``store`` (URL or path), ``context``, ``home`` (``$DATAMON_HOME``),
    ``options`` (backend settings), ``message`` (of bundles written), or ``dm`` (an opened
    :class:`datamon.Datamon` to use instead).
    """

    protocol = "datamon"
    root_marker = ""
    transaction_type = DatamonTransaction

    def __init__(
        self,
        store: Optional[str] = None,
        context: Optional[str] = None,
        home: Optional[str] = None,
        options: Optional[Dict[str, str]] = None,
        message: str = "written through fsspec",
        dm: Optional["_dm.Datamon"] = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.dm = dm if dm is not None else _dm.open(store, context=context, home=home, options=options)
        self.message = message
        self._listings: "OrderedDict[Tuple[str, str], _Listing]" = OrderedDict()
        self._staged: Dict[Tuple[str, str], List[Tuple[str, str, str]]] = {}

    # -- paths ---------------------------------------------------------------------------

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = str(path)
        if path.startswith(_PROTO):
            path = path[len(_PROTO):]
        elif path.startswith("datamon:"):
            path = path[len("datamon:"):]
        return path.strip("/")

    @staticmethod
    def _get_kwargs_from_urls(path: str) -> Dict[str, Any]:
        return {}

    def unstrip_protocol(self, name: str) -> str:
        return _PROTO + name

    def _resolve(self, repo: str, sel: Optional[str]) -> str:
        return self.dm._store.resolve(repo, sel)

    def _listing(self, repo: str, bid: str) -> _Listing:
        key = (repo, bid)
        got = self._listings.get(key)
        if got is None:
            got = _Listing(self.dm._store.list_files(repo, bid, None))
            self._listings[key] = got
            while len(self._listings) > 4:
                self._listings.popitem(last=False)
        else:
            self._listings.move_to_end(key)
        return got

    @staticmethod
    def _name(repo: str, sel: Optional[str], rest: str) -> str:
        head = f"{repo}@{sel}" if sel is not None else repo
        return f"{head}/{rest}" if rest else head

    @staticmethod
    def _file_info(name: str, row: Tuple[Any, ...]) -> Dict[str, Any]:
        path, kind, size, mode, mtime_ns, hash_ = row
        return {
            "name": name,
            "size": size,
            "type": "file" if kind == "file" else "other",
            "kind": kind,
            "mode": mode,
            "mtime": mtime_ns / 1e9,
            "hash": hash_,
        }

    # -- reading -------------------------------------------------------------------------

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> List[Any]:
        path = self._strip_protocol(path)
        if not path:
            repos = [{"name": r.name, "size": 0, "type": "directory"} for r in self.dm.list_repos()]
            return repos if detail else [r["name"] for r in repos]
        repo, sel, rest = _split(path)
        bid = self._resolve(repo, sel)
        lst = self._listing(repo, bid)
        if rest in lst.files:
            out = [self._file_info(self._name(repo, sel, rest), lst.files[rest])]
        elif rest in lst.children:
            out = []
            for child, is_dir in sorted(lst.children[rest].items()):
                sub = f"{rest}/{child}" if rest else child
                name = self._name(repo, sel, sub)
                if is_dir:
                    out.append({"name": name, "size": 0, "type": "directory"})
                else:
                    out.append(self._file_info(name, lst.files[sub]))
        else:
            raise FileNotFoundError(f"{rest!r} is not in bundle {bid} of repo {repo!r}")
        return out if detail else [o["name"] for o in out]

    def info(self, path: str, **kwargs: Any) -> Dict[str, Any]:
        path = self._strip_protocol(path)
        if not path:
            return {"name": "", "size": 0, "type": "directory"}
        repo, sel, rest = _split(path)
        bid = self._resolve(repo, sel)
        if not rest:
            return {"name": self._name(repo, sel, ""), "size": 0, "type": "directory", "bundle": bid}
        key = (repo, bid)
        if key not in self._listings:
            # A file's info without listing the whole bundle.
            try:
                f = self.dm._store.open_file(repo, bid, rest)
            except PathNotFound:
                raise FileNotFoundError(f"{rest!r} is not in bundle {bid} of repo {repo!r}") from None
            except InvalidInput:
                pass  # a directory
            else:
                size = f.size
                f.close()
                return {"name": path, "size": size, "type": "file", "bundle": bid}
        lst = self._listing(repo, bid)
        if rest in lst.files:
            d = self._file_info(path, lst.files[rest])
            d["bundle"] = bid
            return d
        if rest in lst.children:
            return {"name": path, "size": 0, "type": "directory", "bundle": bid}
        raise FileNotFoundError(f"{rest!r} is not in bundle {bid} of repo {repo!r}")

    def exists(self, path: str, **kwargs: Any) -> bool:
        try:
            self.info(path)
            return True
        except (FileNotFoundError, NotFound):
            return False

    def find(self, path: str, maxdepth: Optional[int] = None, withdirs: bool = False,
             detail: bool = False, **kwargs: Any) -> Any:
        path = self._strip_protocol(path)
        if not path:
            return super().find(path, maxdepth=maxdepth, withdirs=withdirs, detail=detail, **kwargs)
        repo, sel, rest = _split(path)
        bid = self._resolve(repo, sel)
        lst = self._listing(repo, bid)
        out: Dict[str, Dict[str, Any]] = {}
        if rest in lst.files:
            out[self._name(repo, sel, rest)] = self._file_info(self._name(repo, sel, rest), lst.files[rest])
            return out if detail else list(out)
        if rest not in lst.children:
            return {} if detail else []
        prefix = rest + "/" if rest else ""
        base_depth = rest.count("/") + 1 if rest else 0
        for p, row in lst.files.items():
            if not p.startswith(prefix):
                continue
            depth = p.count("/") + 1 - base_depth
            if maxdepth is not None and depth > maxdepth:
                continue
            name = self._name(repo, sel, p)
            out[name] = self._file_info(name, row)
        if withdirs:
            for d in lst.children:
                if d and d.startswith(prefix):
                    depth = d.count("/") + 1 - base_depth
                    if maxdepth is None or depth <= maxdepth:
                        name = self._name(repo, sel, d)
                        out[name] = {"name": name, "size": 0, "type": "directory"}
        out = dict(sorted(out.items()))
        return out if detail else list(out)

    def _open(self, path: str, mode: str = "rb", block_size: Optional[int] = None,
              autocommit: bool = True, cache_options: Any = None, **kwargs: Any) -> Any:
        path = self._strip_protocol(path)
        repo, sel, rest = _split(path)
        if "r" in mode:
            bid = self._resolve(repo, sel)
            raw = _dm.BundleFile(self.dm._store.open_file(repo, bid, rest), path)
            return io.BufferedReader(raw, buffer_size=max(block_size or 0, 1 << 20))
        if "w" not in mode or "+" in mode:
            raise InvalidInput(f"mode {mode!r}: datamon files are read (rb) or written whole (wb)")
        return _StagedFile(self, repo, self._branch_of(repo, sel), rest, autocommit)

    def cat_file(self, path: str, start: Optional[int] = None, end: Optional[int] = None,
                 **kwargs: Any) -> bytes:
        path = self._strip_protocol(path)
        repo, sel, rest = _split(path)
        bid = self._resolve(repo, sel)
        f = self.dm._store.open_file(repo, bid, rest)
        try:
            size = f.size
            s = 0 if start is None else (start if start >= 0 else max(0, size + start))
            e = size if end is None else (end if end >= 0 else max(0, size + end))
            if e <= s:
                return b""
            return f.read_at(s, e - s)
        finally:
            f.close()

    def get_file(self, rpath: str, lpath: str, callback: Any = None, outfile: Any = None,
                 **kwargs: Any) -> None:
        rpath = self._strip_protocol(rpath)
        if self.isdir(rpath):
            os.makedirs(lpath, exist_ok=True)
            return
        repo, sel, rest = _split(rpath)
        bid = self._resolve(repo, sel)
        f = self.dm._store.open_file(repo, bid, rest)
        try:
            out = outfile if outfile is not None else open(lpath, "wb")
            try:
                at, size = 0, f.size
                while at < size:
                    data = f.read_at(at, 8 << 20)
                    out.write(data)
                    at += len(data)
            finally:
                if outfile is None:
                    out.close()
        finally:
            f.close()

    # -- writing -------------------------------------------------------------------------

    def _branch_of(self, repo: str, sel: Optional[str]) -> str:
        if sel is None:
            return "main"
        if sel.startswith("branch:"):
            return sel[len("branch:"):]
        if sel.startswith("label:") or sel == "latest":
            raise InvalidInput(
                f"cannot write to {repo}@{sel}: writes go to a branch (datamon://{repo}@BRANCH/path)"
            )
        return sel

    def _commit(self, repo: str, branch: str, files: List[Tuple[str, str]]) -> None:
        self.dm._store.commit_files(repo, branch, files, self.message)
        self.invalidate_cache()

    def put_file(self, lpath: str, rpath: str, callback: Any = None, mode: str = "overwrite",
                 **kwargs: Any) -> None:
        if os.path.isdir(lpath):
            return
        with open(lpath, "rb") as src, self.open(rpath, "wb") as dst:
            shutil.copyfileobj(src, dst, 8 << 20)

    def rm_file(self, path: str) -> None:
        raise InvalidInput("bundles are immutable: files cannot be removed from them")

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        pass

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        pass

    def invalidate_cache(self, path: Optional[str] = None) -> None:
        super().invalidate_cache(path)
