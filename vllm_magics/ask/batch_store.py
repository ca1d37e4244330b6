"""Batches that survive: answers appended to a JSONL file as they finish, read back lazily.

    store = AnswerStore(path)                        # opens (and repairs a torn last line)
    done = store.done_mask(n, key_of)                # which items are already answered (resume)
    store.write(index, key, answer_fields)           # one line per finished item
    results = BatchResults(path, n)                  # len, [i], iteration in input order, to_frame()

A line: {"i": index, "key": <hash of the request>, "text", "reasoning", "finish_reason", "usage",
"error", "model", "elapsed"}. The key ties an answer to its input: on resume an answer whose key no
longer matches its row (the input changed) does not count as done. A failed item's line is kept (its
error is the answer until a retry succeeds); the last line for an index wins.

Durability: every line is flushed to the OS when written (a killed kernel loses nothing the OS has);
fsync every `fsync_every` lines and at close bounds what a power cut can take. A crash can leave a
torn last line: reading ignores it and opening for append cuts it off first.

Memory: the results keep one 8-byte file offset per input item (an array), never the answers.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from array import array
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from vllm_magics.ask.answer import NOT_ANSWERED
from vllm_magics.ask.batch_retry import TRANSIENT_STATUS, BatchProgress, is_transient, with_retries  # noqa: F401
from vllm_magics.errors import BatchStoreError

ANSWER_FIELDS = ("text", "reasoning", "finish_reason", "usage", "error", "model", "elapsed")


def item_key(messages: list[dict], params: dict | None = None, model: str | None = None) -> str:
    """A short, stable hash of what was asked (same request -> same key, in any process)."""
    canonical = json.dumps([model, messages, params or {}], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:20]


def answer_fields(answer) -> dict:
    """The stored fields of an Answer."""
    return {"text": answer.text, "reasoning": answer.reasoning or "", "finish_reason": answer.finish_reason,
            "usage": answer.usage, "error": answer.error or ("interrupted" if answer.interrupted else None),
            "model": answer.model, "elapsed": round(answer.elapsed, 4) if answer.ended_at else None}


def read_lines(path: Path) -> Iterator[tuple[int, dict]]:
    """(offset, record) for each complete, well-formed line; a torn or damaged line is skipped."""
    with open(path, "rb") as f:
        offset = 0
        for raw in f:
            start, offset = offset, offset + len(raw)
            if not raw.endswith(b"\n"):
                return  # torn last line: the write that a crash cut short
            record = _parse(raw)
            if record is not None:
                yield start, record


def _parse(raw: bytes) -> dict | None:
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("i"), int) or record["i"] < 0:
        return None
    return record


def _good_length(path: Path) -> int:
    """Bytes up to the end of the last complete line."""
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb") as f:
        pos = size
        while pos > 0:
            step = min(65536, pos)
            f.seek(pos - step)
            chunk = f.read(step)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                return pos - step + nl + 1
            pos -= step
    return 0


class AnswerStore:
    """The append side. Thread-safe: workers of a batch write through one store."""

    def __init__(self, path: str | Path, fsync_every: int = 200):
        self.path = Path(path)
        self.fsync_every = max(1, fsync_every)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch(exist_ok=True)
        good = _good_length(self.path)
        if good != self.path.stat().st_size:
            with open(self.path, "r+b") as f:  # cut the torn last line, so the next line starts clean
                f.truncate(good)
        self._file = open(self.path, "ab")
        self._lock = threading.Lock()
        self._unsynced = 0

    def done_mask(self, n: int, key_of=None) -> bytearray:
        """Which of n items are answered (1 byte each): the last line for the index has no error and,
        given `key_of(i)`, was asked with that same request (the key is computed for done lines only)."""
        last_ok = bytearray(n)
        for _, record in read_lines(self.path):
            i = record["i"]
            if i < n:
                last_ok[i] = not record.get("error") and (key_of is None or record.get("key") == key_of(i))
        return last_ok

    def write(self, index: int, key: str | None, fields: dict) -> None:
        line = json.dumps({"i": index, "key": key, **fields}, ensure_ascii=False, default=str) + "\n"
        with self._lock:
            self._file.write(line.encode("utf-8"))
            self._file.flush()
            self._unsynced += 1
            if self._unsynced >= self.fsync_every:
                os.fsync(self._file.fileno())
                self._unsynced = 0

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def answer_from_record(index: int, record: dict | None):
    """An Answer from a stored line (None: the item was never answered). The file is untrusted: every
    field is checked for its type."""
    from vllm_magics.ask.answer import Answer

    answer = Answer(index=index)
    answer.started_at = answer.ended_at = 1.0  # a stored answer is over; its `elapsed` comes from the file
    if record is None:
        answer.error = NOT_ANSWERED
        return answer
    answer.text, answer.reasoning = str(record.get("text") or ""), str(record.get("reasoning") or "")
    answer.finish_reason = record.get("finish_reason") if isinstance(record.get("finish_reason"), str) else None
    answer.model = record.get("model") if isinstance(record.get("model"), str) else None
    answer.usage = record.get("usage") if isinstance(record.get("usage"), dict) else None
    answer.error = str(record["error"]) if record.get("error") else None
    if isinstance(record.get("elapsed"), (int, float)) and record["elapsed"] >= 0:
        answer.ended_at += record["elapsed"]
    return answer


class BatchResults:
    """The answers of an n-item batch, read from its JSONL file on demand, in input order.

    `results[i]` is an Answer (one not answered yet has `error` NOT_ANSWERED). Memory: an array of
    n file offsets; call `refresh()` to see lines written since. With a `schema` each answer carries its
    validated `.data` (or `.schema_error`); `rows` (the batch's input) are what `to_frame()` joins to."""

    def __init__(self, path: str | Path, n: int, schema=None, rows=None):
        self.path = Path(path)
        self.n = n
        self.schema, self.rows = schema, rows
        self.refresh()

    def refresh(self) -> None:
        self._offsets = array("q", [-1]) * self.n
        self.bad_lines = 0
        for offset, record in read_lines(self.path):
            if record["i"] < self.n:
                self._offsets[record["i"]] = offset  # the last line for an index wins
            else:
                self.bad_lines += 1

    def __len__(self) -> int:
        return self.n

    @property
    def answered(self) -> int:
        return sum(1 for o in self._offsets if o >= 0)

    def record(self, i: int) -> dict | None:
        if not -self.n <= i < self.n:
            raise IndexError(f"batch index {i} out of range (0..{self.n - 1})")
        offset = self._offsets[i % self.n]
        if offset < 0:
            return None
        with open(self.path, "rb") as f:
            f.seek(offset)
            return _parse(f.readline())

    def _answer(self, i: int, record: dict | None):
        answer = answer_from_record(i, record)
        if self.schema is not None and answer.ok:
            from vllm_magics.ask.schema import answer_schema

            parsed = answer_schema(self.schema).parse(answer.text)
            answer.data, answer.schema_error = parsed.data, parsed.error
        return answer

    def __getitem__(self, i: int):
        record = self.record(i)
        return self._answer(i % self.n, record)

    def __iter__(self):
        """In input order; one open file, one line read per item."""
        with open(self.path, "rb") as f:
            for i, offset in enumerate(self._offsets):
                record = None
                if offset >= 0:
                    f.seek(offset)
                    record = _parse(f.readline())
                yield self._answer(i, record)

    @property
    def texts(self) -> Iterable[str]:
        return (a.text for a in self)

    def to_frame(self, rows=None, schema=None):
        """A DataFrame in input order. With `schema` (given, or the batch's): the input rows (given, or
        the batch's) joined to its fields (vllm_magics.ask.schema.answers_to_frame). Without: the input
        rows plus the answer columns text, reasoning, finish_reason, completion_tokens, error."""
        rows = rows if rows is not None else self.rows
        schema = schema if schema is not None else self.schema
        if schema is not None:
            from vllm_magics.ask.schema import answers_to_frame

            return answers_to_frame(rows if rows is not None else range(self.n), iter(self), schema)
        from vllm_magics.ask.frames import answers_frame

        return answers_frame(iter(self), rows)

    def head(self, n: int = 50) -> list:
        """The first n answers (what a view shows of a batch of 100,000)."""
        from itertools import islice

        return list(islice(iter(self), n))

    def counts(self) -> dict:
        """{"ok", "failed", "not_answered"}: one pass over the file's lines."""
        ok = failed = 0
        for answer in self:
            if answer.error == NOT_ANSWERED:
                continue
            ok, failed = (ok + 1, failed) if answer.ok and not answer.schema_error else (ok, failed + 1)
        return {"ok": ok, "failed": failed, "not_answered": self.n - ok - failed}

    def summary(self) -> str:
        c = self.counts()
        parts = [f"{c['ok']:,} ok"] + [f"{c[k]:,} {k.replace('_', ' ')}" for k in ("failed", "not_answered") if c[k]]
        return f"{self.n:,} answer{'s' if self.n != 1 else ''} in {self.path}: " + ", ".join(parts)

    def text_view(self, rows: int = 50) -> str:
        lines = []
        for a in self.head(rows):
            status = "ok" if a.ok else "error"
            body = (a.data_json() or a.text) if a.ok else (a.error or "")
            body = " ".join(body.split())
            lines.append(f"[{a.index}] {status}: {body[:200]}" + (f" ! {a.schema_error}" if a.schema_error else ""))
        if self.n > rows:
            lines.append(f"... {self.n - rows:,} more (read them with results[i], iteration or to_frame())")
        lines.append(self.summary())
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.text_view()


# -- a batch run into a store ---------------------------------------------------------------------
def run_to_store(client_factory: Callable, message_lists: Sequence[list[dict]], params: dict, path, *,
                 model: str, concurrency: int = 16, stop_event: threading.Event | None = None,
                 progress: BatchProgress | None = None, attempts: int = 5, sleep=None,
                 on_answer: Callable | None = None) -> BatchResults:
    """Ask every item not yet answered in the JSONL file at `path`, at most `concurrency` at once,
    writing each answer as it finishes. `message_lists` may be a lazy sequence (len + [i]): items are
    taken one window at a time, so memory does not grow with the batch. `stop_event` stops starting
    new items (those in flight finish and are kept); Ctrl-C aborts those in flight too, waits for their
    workers to let go of the file, and raises KeyboardInterrupt. `on_answer(i, answer)` is called from
    the worker once an item's answer is written (progress display, history); its errors are ignored."""
    from vllm_magics.ask.answer import Answer
    from vllm_magics.ask.request import AskError, ask

    n = len(message_lists)

    def key_of(i: int) -> str:
        return item_key(message_lists[i], params, model)

    stop = stop_event or threading.Event()
    abort = threading.Event()  # Ctrl-C: close the streams in flight (vLLM aborts those requests)
    local = threading.local()
    window = threading.BoundedSemaphore(2 * concurrency)
    failures: list[OSError] = []  # a full disk, a file gone: the first stops the batch (said after the pool)

    def ask_item(i: int):
        try:
            local.client = getattr(local, "client", None) or client_factory()
            messages = message_lists[i]
            return with_retries(lambda: ask(local.client, messages, params, model=model, stop_event=abort),
                                attempts=attempts, on_retry=progress.retried, stop_event=abort, sleep=sleep)
        except AskError as exc:
            exc.answer.error = exc.answer.error or str(exc)
            return exc.answer
        except Exception as exc:  # noqa: BLE001 - one bad item must not lose the others
            return Answer(error=f"{exc.__class__.__name__}: {exc}")

    try:
        with AnswerStore(path) as store:
            done = store.done_mask(n, key_of)
            progress = progress or BatchProgress(n)
            progress.already_done = sum(done)

            def work(i: int) -> None:
                try:
                    if stop.is_set() or abort.is_set():
                        return  # never started: not written, asked on resume
                    progress.started()
                    ok, tokens, aborted = False, 0, False
                    try:
                        answer = ask_item(i)
                        aborted = answer.interrupted  # not finished: not written, asked again on resume
                        if not aborted:
                            store.write(i, key_of(i), answer_fields(answer))
                        ok, tokens = answer.ok, answer.completion_tokens or 0
                    finally:  # in flight no more, even when its answer could not be written
                        progress.finished(ok, tokens, aborted)
                    if on_answer is not None:
                        try:
                            on_answer(i, answer)
                        except Exception:  # noqa: BLE001 - a display or history failure must not stop the batch
                            pass
                except OSError as exc:  # nobody reads the pool's futures: kept, and the batch stops
                    failures.append(exc)
                    stop.set()
                finally:
                    window.release()

            pool = ThreadPoolExecutor(max_workers=max(1, concurrency))
            try:
                for i in range(n):
                    if done[i]:
                        continue
                    while not window.acquire(timeout=0.2):  # short waits: Ctrl-C gets through
                        pass
                    if stop.is_set():
                        window.release()
                        break
                    pool.submit(work, i)
                pool.shutdown(wait=True)  # the last window (a thread join: Ctrl-C reaches it too)
            except KeyboardInterrupt:
                stop.set()
                abort.set()  # the streams in flight are cut: their workers end soon, and the store after them
                pool.shutdown(wait=True)
                raise
    except OSError as exc:  # the file cannot be opened, or its last lines not flushed at close
        failures.append(exc)
    if failures:
        first = failures[0]
        raise BatchStoreError(f"the batch stopped: its answers cannot be written to {path} "
                              f"({first.strerror or first}); the answers already in the file are kept, and "
                              "running the batch again asks only the rest") from None
    return BatchResults(path, n)
