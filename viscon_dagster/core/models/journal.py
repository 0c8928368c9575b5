"""Pay-once journal: every answered request is persisted, keyed by fingerprint, the moment it arrives.

Layout under the journal directory (a `UPath`: local folder or S3 prefix):

    entries/<fingerprint>.json   one object per response, written as it arrives (a kill loses nothing
                                 that was written; S3 has no append, so one object per write)
    entries/<id>.jsonl           a group of responses that arrived together (`put_many`)
    segments/<id>.jsonl          compacted entries (`compact()`, at the end of a run): one read per
                                 thousands of responses on reload instead of one per response
    state/<name>.json            small resumable state, e.g. submitted batch ids

Every file is written whole (`core/files/atomic.py`). Writes of the same fingerprint are idempotent.
Compaction writes its segment before it deletes the entries it folded, and `load` reads entries before
it lists segments, so an entry moved by a concurrent compaction is seen in one place or the other; two
processes compacting at once only duplicate lines, and a file that vanishes between listing and reading
(folded by the other process) is skipped. A torn entry (from before atomic writes) is skipped on load.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from viscon_dagster.core.files.atomic import write_text_atomic as _write_text
from viscon_dagster.core.models.request import Response


def _read_text(path) -> str | None:
    """The file's text, or None when it vanished since it was listed (folded or deleted by another process)."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


class Journal:
    def __init__(self, root):
        self.root = root
        self._entries: dict[str, Response] | None = None

    # -- responses ---------------------------------------------------------------------------
    def _listing(self, sub: str) -> list:
        d = self.root / sub
        try:
            # object-store listings are cached by fsspec; another process may have written since
            d.fs.invalidate_cache()
        except AttributeError:
            pass
        try:
            return sorted(d.iterdir(), key=lambda p: p.name)
        except (FileNotFoundError, NotADirectoryError):  # not made yet; on S3 a prefix whose last key went
            return []

    def load(self) -> dict[str, Response]:
        # entries first: one folded away before it is read sits in a segment written before it vanished
        loose = [r for p in self._listing("entries") for r in self._read_entry(p)]
        entries: dict[str, Response] = {}
        for seg in self._listing("segments"):
            if seg.name.endswith(".jsonl"):
                for line in (_read_text(seg) or "").splitlines():
                    if line.strip():
                        r = Response.model_validate_json(line)
                        entries[r.fingerprint] = r
        entries.update((r.fingerprint, r) for r in loose)
        self._entries = entries
        return entries

    @property
    def entries(self) -> dict[str, Response]:
        return self._entries if self._entries is not None else self.load()

    def get(self, fingerprint: str) -> Response | None:
        return self.entries.get(fingerprint)

    def __contains__(self, fingerprint: str) -> bool:
        return fingerprint in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    @staticmethod
    def _read_entry(p) -> list[Response]:
        if not p.name.endswith((".json", ".jsonl")):
            return []  # e.g. a temporary file of a write that was killed
        text = _read_text(p)
        if text is None:
            return []  # folded into another process's segment since it was listed
        try:
            return [Response.model_validate_json(line) for line in text.splitlines() if line.strip()]
        except ValueError:
            return []  # torn: as if never answered

    def put_many(self, responses: list[Response]) -> None:
        """One write for responses that arrived together (group commit)."""
        rows = [r.model_copy(update={"cached": False}) for r in responses if r.journaled()]
        if not rows:
            return
        if len(rows) == 1:
            return self.put(rows[0])
        name = f"{rows[0].fingerprint}-{len(rows)}.jsonl"
        _write_text(self.root / "entries" / name, "".join(r.model_dump_json() + "\n" for r in rows))
        for r in rows:
            self.entries[r.fingerprint] = r

    def put(self, response: Response) -> None:
        if not response.journaled():
            return
        stored = response.model_copy(update={"cached": False})
        _write_text(self.root / "entries" / f"{response.fingerprint}.json", stored.model_dump_json())
        self.entries[response.fingerprint] = stored

    def compact(self) -> int:
        """Fold loose entries into one segment; returns how many were folded."""
        loose = [p for p in self._listing("entries") if p.name.endswith((".json", ".jsonl"))]
        lines = [r.model_dump_json() for p in loose for r in self._read_entry(p)]
        if not lines:
            return 0
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.jsonl"
        _write_text(self.root / "segments" / name, "\n".join(lines) + "\n")
        for p in loose:
            p.unlink(missing_ok=True)
        return len(lines)

    # -- small resumable state -----------------------------------------------------------------
    def get_state(self, name: str) -> dict[str, Any] | None:
        text = _read_text(self.root / "state" / f"{name}.json")
        return json.loads(text) if text is not None else None

    def put_state(self, name: str, value: dict[str, Any]) -> None:
        _write_text(self.root / "state" / f"{name}.json", json.dumps(value, sort_keys=True))

    def delete_state(self, name: str) -> None:
        (self.root / "state" / f"{name}.json").unlink(missing_ok=True)

    def states(self, prefix: str = "") -> dict[str, dict[str, Any]]:
        found = {p.name[:-5]: _read_text(p) for p in self._listing("state")
                 if p.name.startswith(prefix) and p.name.endswith(".json")}
        return {name: json.loads(text) for name, text in found.items() if text is not None}
