"""Writes that publish whole: a reader of the final name sees the old object or the new one, never a torn one.

Local files are written to a temporary name in the same folder (`.<name>.<uuid>.tmp`) and renamed over
the final name (`os.replace`, atomic on POSIX); a kill mid-write leaves the old file and at most one
hidden temp file, which readers and `list_parquet` ignore. Object stores (S3) show an object only once
its single PUT or its multipart upload completes. fsspec's files complete the upload on `close()`, and
a `with` block closes them on an exception too (as does `__del__`): `AtomicFile.abort` discards the
upload instead, so what was written before the error never replaces the old object.
"""

from __future__ import annotations

import codecs
import os
import time
import uuid
from typing import IO, Any

from fsspec.spec import AbstractBufferedFile

STALE_TEMP_S = 24 * 3600  # a temp file this old belongs to a killed writer


def is_local(path: Any) -> bool:
    return getattr(path, "protocol", "") in ("", "file", "local")


def local_path(path: Any) -> str:
    return path.path if hasattr(path, "path") else os.fspath(path)


def is_temp_name(name: str) -> bool:
    """Whether `name` is the temp file of an unfinished local write."""
    return name.startswith(".") and name.endswith(".tmp")


def remove_stale_temps(final: str, older_than_s: float = STALE_TEMP_S) -> int:
    """Delete temp files of `final` (a local path) left by writers killed more than `older_than_s` ago."""
    folder, name = os.path.split(final)
    cutoff, removed = time.time() - older_than_s, 0
    with os.scandir(folder or ".") as found:
        for entry in found:
            if entry.name.startswith(f".{name}.") and is_temp_name(entry.name):
                try:
                    if entry.stat().st_mtime < cutoff:
                        os.unlink(entry.path)
                        removed += 1
                except FileNotFoundError:  # another writer cleaned it first
                    pass
    return removed


def _abandon(raw: AbstractBufferedFile) -> None:
    """Drop an unfinished object-store upload: abort a multipart upload begun, PUT nothing."""
    try:
        raw.discard()
    finally:
        raw.closed = True  # close() (also from __del__) would complete the upload


class AtomicFile:
    """A file that appears under `path` only on `commit()`; `abort()` leaves the previous version.

    As a context manager it commits on a clean exit and aborts on an exception. `mode` is "wb" or
    "w" (UTF-8 text). `sweep` also deletes this name's stale temps (local) once committed.
    """

    def __init__(self, path: Any, mode: str = "wb", *, sweep: bool = False):
        if mode not in ("wb", "w"):
            raise ValueError(f"AtomicFile writes 'wb' or 'w', not {mode!r}")
        self.path, self.sweep, self.done = path, sweep, True  # nothing to abort until the file is open
        if is_local(path):
            self._final = local_path(path)
            folder = os.path.dirname(self._final) or "."
            self._tmp: str | None = os.path.join(folder, f".{os.path.basename(self._final)}.{uuid.uuid4().hex}.tmp")
            try:  # the folder exists for all but the first file written there (makedirs first costs syscalls)
                self.raw: Any = open(self._tmp, "wb")
            except FileNotFoundError:
                os.makedirs(folder, exist_ok=True)
                self.raw = open(self._tmp, "wb")
        else:
            self._tmp = None
            self.raw = path.fs.open(path.path, "wb")
            if not isinstance(self.raw, AbstractBufferedFile):
                self.raw.close()
                raise TypeError(f"no atomic writes on {path.protocol}:// (its files are not fsspec buffered files)")
        self.done = False
        self.file: IO[Any] = codecs.getwriter("utf-8")(self.raw) if mode == "w" else self.raw

    def commit(self) -> None:
        if self.done:
            return
        self.done = True
        if self._tmp is None:
            try:
                self.raw.close()  # the single PUT, or completing the multipart upload
            except BaseException:
                try:
                    self.raw.discard()  # abort a multipart upload left open by the failed close
                except Exception:  # noqa: BLE001 - the store is failing; the close error is the one to raise
                    pass
                raise
            return
        try:
            self.raw.close()
            os.replace(self._tmp, self._final)
        except BaseException:
            self._remove_tmp()
            raise
        if self.sweep:
            remove_stale_temps(self._final)

    def abort(self) -> None:
        if self.done:
            return
        self.done = True
        if self._tmp is None:
            _abandon(self.raw)
            return
        try:
            self.raw.close()
        finally:
            self._remove_tmp()

    def _remove_tmp(self) -> None:
        try:
            os.unlink(self._tmp)
        except FileNotFoundError:
            pass

    def __del__(self) -> None:
        if not getattr(self, "done", True):  # dropped unfinished (e.g. by an exception): never publish
            try:
                self.abort()
            except Exception:  # noqa: BLE001 - nothing to report to from a finalizer
                pass

    def __enter__(self) -> IO[Any]:
        return self.file

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def write_bytes_atomic(path: Any, data: bytes) -> None:
    """The whole of `data` under `path`, or nothing new (local: temp + rename; object stores: one upload)."""
    if is_local(path):
        with AtomicFile(path) as f:
            f.write(data)
    else:
        path.fs.pipe_file(path.path, data)  # a PUT, or a multipart upload aborted on failure


def write_text_atomic(path: Any, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))
