"""A history of every ask in SQLite (the standard library's sqlite3): search it, bring an answer back.

    h = History()                                   # <cache folder>/history.sqlite
    h.record(answer, server_url=url, thread="default")
    h.last(20); h.search("Paris"); h.by_thread("default")
    answer = entry_to_answer(h.get(entry_id)); messages, params, model = resend_args(entry)

Two kernels may write at once: WAL mode (readers never block the writer), a busy timeout (a writer
waits for the other's short transaction instead of failing), one INSERT per transaction. The size is
bounded: `max_rows` and `max_bytes` prune the oldest entries.

No key or token is stored. The request body never holds one (the key is an HTTP header), and still:
fields named like a credential are replaced, strings equal to a known secret (passed in `secrets`)
are cut out of every text, and credentials in the server URL (user:pass@, query) are dropped.
Search is LIKE over prompt, answer, reasoning and error: with the row bound (100,000 by default) a
scan stays cheap and, unlike FTS5 tokens, finds any substring with the same meaning on every SQLite.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from vllm_magics.errors import HistoryError
from vllm_magics.files import private_dir

SCHEMA_VERSION = 1
REDACTED = "[redacted]"
# A whole key name, or its last `_`/`-` part: api_key, x-api-key, Authorization, hf_token, password...
# ("max_tokens", "prompt_tokens" do not match: the plural is a count, not a credential).
_SECRET_KEY = re.compile(r"^(?:.*[_-])?(?:api[_-]?key|apikey|authorization|auth|token|access[_-]?token|"
                         r"secret|password|passwd|bearer|cookie)$", re.I)
_COLUMNS = ("id", "time", "server_url", "model", "thread", "prompt", "messages", "params", "answer",
            "reasoning", "usage", "ttft", "elapsed", "finish_reason", "error", "interrupted", "batch_index")
_JSON_COLUMNS = ("messages", "params", "usage")


def default_history_path() -> Path:
    from vllm_magics.server.manager import default_runtime_dir

    return default_runtime_dir() / "history.sqlite"


def scrub(value, secrets: tuple[str, ...] = ()):
    """A copy of a JSON-like value with credential-named fields and known secrets removed."""
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and _SECRET_KEY.match(k) else scrub(v, secrets))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v, secrets) for v in value]
    if isinstance(value, str):
        if value.lower().startswith("bearer "):
            return REDACTED
        for s in secrets:
            value = value.replace(s, REDACTED)
        return value
    return value


def scrub_url(url: str | None) -> str | None:
    """The server URL without user:password@ and without a query or fragment (tokens travel there)."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:
        return REDACTED


class History:
    def __init__(self, path: str | Path | None = None, *, max_rows: int | None = 100_000,
                 max_bytes: int | None = None, secrets=(), prune_every: int = 100, busy_seconds: float = 30.0):
        self.path = Path(path) if path else default_history_path()
        self.max_rows, self.max_bytes, self.prune_every = max_rows, max_bytes, prune_every
        self.secrets = tuple(sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True))
        self.failed_writes = 0
        self.last_write_error: str | None = None
        self._lock = threading.Lock()
        self._since_prune = 0
        try:
            # Prompts and answers are private: the folder 0700, the file made 0600 before sqlite opens it
            # (sqlite would make it 0644 under the usual umask; its -wal and -shm take the file's mode).
            private_dir(self.path.parent)
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            # isolation_level=None: no implicit transactions; each write is its own BEGIN IMMEDIATE.
            # busy_seconds: how long a write waits for another writer's transaction before it fails.
            self._db = sqlite3.connect(str(self.path), timeout=busy_seconds, isolation_level=None,
                                       check_same_thread=False)
            self._setup(int(busy_seconds * 1000))
        except (OSError, sqlite3.OperationalError) as exc:  # no folder, no permission, locked too long
            raise HistoryError(f"cannot open the history at {self.path}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise HistoryError(f"the history database {self.path} cannot be used ({exc}); move it away "
                               "and a new one is made") from None

    def _setup(self, busy_ms: int) -> None:
        db = self._db
        db.execute(f"PRAGMA busy_timeout = {busy_ms}")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"made by a newer vllm_magics (schema {version})")
        if version == 0:
            db.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only takes effect before the first table
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable at checkpoints, never corrupt
        if version == 0:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("""CREATE TABLE IF NOT EXISTS asks (
                    id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, server_url TEXT, model TEXT,
                    thread TEXT, prompt TEXT, messages TEXT, params TEXT, answer TEXT, reasoning TEXT,
                    usage TEXT, ttft REAL, elapsed REAL, finish_reason TEXT, error TEXT,
                    interrupted INTEGER NOT NULL DEFAULT 0, batch_index INTEGER)""")
                db.execute("CREATE INDEX IF NOT EXISTS asks_thread ON asks (thread, id)")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- writing ----------------------------------------------------------------------------------
    def row_for(self, answer, server_url: str | None = None, thread: str | None = None) -> dict:
        """The stored form of an Answer, scrubbed."""
        request = scrub(dict(answer.request or {}), self.secrets)
        messages = request.pop("messages", None)
        request.pop("model", None)
        for transport in ("stream", "stream_options"):  # how it travelled, not what was asked
            request.pop(transport, None)
        row = {
            "time": time.time(), "server_url": scrub_url(server_url), "model": answer.model, "thread": thread,
            "prompt": answer.prompt or _last_user(messages), "messages": messages, "params": request,
            "answer": answer.text, "reasoning": answer.reasoning, "usage": answer.usage,
            "ttft": answer.ttft, "elapsed": answer.elapsed if answer.ended_at else None,
            "finish_reason": answer.finish_reason, "error": answer.error,
            "interrupted": int(bool(answer.interrupted)), "batch_index": answer.index}
        return {k: (json.dumps(scrub(v, self.secrets)) if k in _JSON_COLUMNS and v is not None
                    else scrub(v, self.secrets)) for k, v in row.items()}

    def add_secrets(self, secrets) -> None:
        """More strings never to store (e.g. the key of a server given by --url)."""
        known = set(self.secrets) | {s for s in secrets if s and len(s) >= 4}
        self.secrets = tuple(sorted(known, key=len, reverse=True))

    def record(self, answer, server_url: str | None = None, thread: str | None = None) -> int | None:
        """Store one answer; returns its id. A write that fails (disk full, locked too long) never
        breaks the ask: it is counted in `failed_writes` and the reason kept in `last_write_error`."""
        ids = self.insert_rows([self.row_for(answer, server_url, thread)])
        return ids[0] if ids else None

    def insert_rows(self, rows: list[dict]) -> list[int]:
        """Store rows made by `row_for` in one transaction (a batch writes a few hundred at a time: one
        commit each would cost a lock round per answer); returns their ids, [] when the write failed
        (counted in `failed_writes`, as in `record`)."""
        if not rows:
            return []
        names = list(_COLUMNS[1:])
        sql = f"INSERT INTO asks ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    ids = [self._db.execute(sql, [row.get(n) for n in names]).lastrowid for row in rows]
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._since_prune += len(rows)
                if self._since_prune >= self.prune_every:
                    self._prune_locked()
                return ids
            except sqlite3.Error as exc:
                self.failed_writes += 1
                self.last_write_error = f"{exc.__class__.__name__}: {exc}"
                return []

    def prune(self) -> int:
        """Delete the oldest entries beyond max_rows / max_bytes; returns how many went."""
        with self._lock:
            return self._prune_locked()

    def _prune_locked(self) -> int:
        self._since_prune = 0
        db = self._db
        count, newest = db.execute("SELECT count(*), coalesce(max(id), 0) FROM asks").fetchone()
        keep = count
        if self.max_rows is not None:
            keep = min(keep, self.max_rows)
        if self.max_bytes is not None and count:
            page_size = db.execute("PRAGMA page_size").fetchone()[0]
            used = (db.execute("PRAGMA page_count").fetchone()[0]
                    - db.execute("PRAGMA freelist_count").fetchone()[0]) * page_size
            if used > self.max_bytes:  # rows are of varied size: aim 10% under, by the average
                keep = min(keep, int(count * self.max_bytes * 0.9 / used))
        if keep >= count:
            return 0
        cut = db.execute("SELECT id FROM asks ORDER BY id DESC LIMIT 1 OFFSET ?", (keep,)).fetchone()
        db.execute("BEGIN IMMEDIATE")
        try:
            gone = db.execute("DELETE FROM asks WHERE id <= ?", (cut[0],)).rowcount
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("PRAGMA incremental_vacuum")  # give the freed pages back to the file system
        return gone

    # -- reading ----------------------------------------------------------------------------------
    def _query(self, where: str = "", args: tuple = (), n: int | None = 20) -> list[dict]:
        sql = f"SELECT {', '.join(_COLUMNS)} FROM asks {where} ORDER BY id DESC"
        if n is not None:
            sql += f" LIMIT {int(n)}"
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [_entry(r) for r in rows]

    def last(self, n: int = 20) -> list[dict]:
        """The newest n entries, newest first."""
        return self._query(n=n)

    def search(self, text: str, n: int | None = 20, thread: str | None = None) -> list[dict]:
        """Entries whose prompt, answer, reasoning or error contains `text` (case-insensitive for ASCII),
        in one conversation when `thread` is given (filtered in the query: the n newest of its matches)."""
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where = " OR ".join(f"{c} LIKE ? ESCAPE '\\'" for c in ("prompt", "answer", "reasoning", "error"))
        if thread is None:
            return self._query(f"WHERE ({where})", (pattern,) * 4, n)
        return self._query(f"WHERE ({where}) AND thread = ?", (pattern,) * 4 + (thread,), n)

    def by_thread(self, thread: str, n: int | None = 20) -> list[dict]:
        return self._query("WHERE thread = ?", (thread,), n)

    def get(self, entry_id: int) -> dict:
        found = self._query("WHERE id = ?", (int(entry_id),), 1)
        if not found:
            raise HistoryError(f"no history entry {entry_id}")
        return found[0]

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM asks").fetchone()[0]


def _last_user(messages) -> str:
    for m in reversed(messages or []):
        if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str):
            return m["content"]
    return ""


def _entry(row) -> dict:
    entry = dict(zip(_COLUMNS, row))
    for k in _JSON_COLUMNS:
        try:
            entry[k] = json.loads(entry[k]) if entry[k] is not None else None
        except ValueError:  # a hand-edited or damaged file: keep the text
            pass
    entry["interrupted"] = bool(entry["interrupted"])
    return entry


def entry_to_answer(entry: dict):
    """An Answer rebuilt from a history entry (its figures come back: ttft, elapsed, tokens/s)."""
    from vllm_magics.ask.answer import Answer

    request = {"model": entry.get("model"), "messages": entry.get("messages") or [], **(entry.get("params") or {})}
    # Answer keeps monotonic instants; a base of 1.0 (not 0, which reads as "not yet") restores the spans.
    base = 1.0
    answer = Answer(text=entry.get("answer") or "", reasoning=entry.get("reasoning") or "",
                    model=entry.get("model"), finish_reason=entry.get("finish_reason"), usage=entry.get("usage"),
                    request=request, error=entry.get("error"), interrupted=bool(entry.get("interrupted")),
                    prompt=entry.get("prompt") or "", index=entry.get("batch_index"), started_at=base)
    answer.first_token_at = base + entry["ttft"] if entry.get("ttft") is not None else None
    answer.ended_at = base + (entry.get("elapsed") or 0.0)
    return answer


def resend_args(entry: dict) -> tuple[list[dict], dict, str | None]:
    """(messages, params, model) to ask the same again, e.g. `ask(client, *resend_args(e)[:2], model=...)`."""
    return list(entry.get("messages") or []), dict(entry.get("params") or {}), entry.get("model")
