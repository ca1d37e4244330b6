"""`%%ask --each`: one question per item, in memory (the answers in a list), streamed to a JSONL file
(`--jsonl`, resumable, memory bounded), or written as a `vllm run-batch` input file (`--export-batch`).

Functions of the AskMagics instance (`magics`): they use its display, history and settings.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from IPython.core.error import UsageError

FRAME_ROWS = 50  # what a view shows of a batch; the whole of it is the result
HISTORY_CHUNK = 200  # --each answers recorded per history transaction


# -- the items and their prompts ------------------------------------------------------------------
class FrameRows:
    """A DataFrame's rows as namedtuples (what `{{ item.col }}` reads), made a chunk at a time when a
    worker asks for row i: no second copy of a 100,000-row frame. Thread-safe."""

    CHUNK = 1024

    def __init__(self, frame):
        self.frame = frame
        self._lock = threading.Lock()
        self._chunks: OrderedDict[int, list] = OrderedDict()

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, i: int):
        start = i - i % self.CHUNK
        with self._lock:
            chunk = self._chunks.get(start)
            if chunk is None:
                chunk = list(self.frame.iloc[start:start + self.CHUNK].itertuples(index=False))
                self._chunks[start] = chunk
                while len(self._chunks) > 4:  # workers take items in order: a few chunks are in use
                    self._chunks.popitem(last=False)
        return chunk[i - start]


def items_of(name: str, ns: dict):
    """(items as a sequence, the input rows for to_frame) of the variable NAME."""
    if name not in ns:
        raise UsageError(f"--each {name}: there is no variable named {name}")
    value = ns[name]
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise UsageError(f"--each {name}: it must be a list or other iterable of items, not {type(value).__name__}")
    if hasattr(value, "itertuples") and hasattr(value, "iloc"):
        return FrameRows(value), value
    if hasattr(value, "iloc"):  # a Series: its values, by position
        return list(value), value
    if hasattr(value, "__len__") and hasattr(value, "__getitem__") and not isinstance(value, dict):
        return value, value
    items = list(value)  # a generator or a set: its items are taken once
    return items, items


def make_prepare(args, cell: str, ns: dict, system):
    """prepare(item) -> (prompt, messages); the template is compiled once and checked before any request."""
    from vllm_magics.ask import prompt as prompt_mod

    cell = cell.strip("\n")
    try:
        template = prompt_mod.PromptTemplate("" if args.no_template else cell)
    except prompt_mod.TemplateError as exc:
        raise UsageError(str(exc)) from None
    missing = template.missing(ns, provided=("item",))
    if missing:
        raise UsageError(f"the prompt uses '{missing[0]}' which is not defined: define it in a cell first, "
                         "or send the cell as written with --no-template")

    def prepare(item):
        prompt = cell if args.no_template else template.render(ns, item=item)
        return prompt, prompt_mod.build_messages(prompt, system)
    return prepare


class MessageLists:
    """The messages of item i, rendered when a worker takes it (run_to_store reads each item twice:
    to ask it and to key its answer; a small cache keeps that one render)."""

    def __init__(self, items, prepare, keep: int = 256):
        self.items, self.prepare, self.keep = items, prepare, keep
        self._lock = threading.Lock()
        self._cache: OrderedDict[int, list] = OrderedDict()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> list[dict]:
        with self._lock:
            if i in self._cache:
                return self._cache[i]
        messages = self.prepare(self.items[i])[1]
        with self._lock:
            self._cache[i] = messages
            while len(self._cache) > self.keep:
                self._cache.popitem(last=False)
        return messages


# -- history of a batch ---------------------------------------------------------------------------
class BatchRecorder:
    """Records a batch's answers in the history a chunk at a time (one transaction per chunk), from the
    workers' threads; holds at most HISTORY_CHUNK rows."""

    def __init__(self, magics, server_url: str):
        self.history = magics._history_store()
        self.magics, self.server_url = magics, server_url
        self._rows: list[dict] = []
        self._lock = threading.Lock()

    def add(self, answer) -> None:
        if self.history is None:
            return
        row = self.history.row_for(answer, self.server_url)
        with self._lock:
            self._rows.append(row)
            rows = self._take() if len(self._rows) >= HISTORY_CHUNK else None
        if rows:
            self.history.insert_rows(rows)

    def _take(self) -> list[dict]:
        rows, self._rows = self._rows, []
        return rows

    def flush(self) -> None:
        if self.history is None:
            return
        with self._lock:
            rows = self._take()
        self.history.insert_rows(rows)
        self.magics._history_check(self.history)


# -- the three ways ---------------------------------------------------------------------------------
def worker_client_factory(client):
    from vllm_magics.ask.client import ChatClient

    def factory():  # the headers copied, key and all: the key is never a variable of its own here
        c = ChatClient(client.base_url, None, timeout=client.timeout)
        c.session.headers.update(client.session.headers)
        return c
    return factory


def export_each(magics, args, items, prepare, params, model: str) -> None:
    """--export-batch PATH: the requests in the OpenAI batch format, nothing asked."""
    from vllm_magics.ask.export import export_batch

    path = Path(args.export_batch).expanduser()
    params = {k: v for k, v in params.items() if k != "return_token_ids"}  # a streaming count: not needed
    try:
        n = export_batch(path, (prepare(items[i])[1] for i in range(len(items))), params, model=model)
    except OSError as exc:
        raise UsageError(f"--export-batch: cannot write {path}: {exc.strerror or exc}") from None
    out = path.with_name(path.stem + "-output.jsonl")
    rows = f"rows={args.each}" + (f", schema={args.schema}" if args.schema else "")
    print(f"Wrote {n:,} request{'s' if n != 1 else ''} to {path} (OpenAI batch format); nothing was asked.\n"
          f"Run them with vLLM's batch runner (in a terminal, or with ! in a cell):\n"
          f"  vllm run-batch -i {path} -o {out} --model {model}\n"
          f"then load the answers, in input order:\n"
          f"  from vllm_magics.ask.export import batch_output_frame\n"
          f"  answers = batch_output_frame({str(out)!r}, {rows})", flush=True)


def ask_each_in_memory(magics, args, items, rows, prepare, params, client, model, spec, concurrency):
    """--each without --jsonl: the answers in an AnswerList (in memory), shown as a table."""
    from vllm_magics.ask.batch import BatchInterrupted, ask_many
    from vllm_magics.ask.request import AskError
    from vllm_magics.notebook.views.live import BatchProgress

    progress = BatchProgress(len(items), magics._in_notebook())
    interrupted = None
    try:
        results = ask_many(worker_client_factory(client), items, prepare, params, model=model,
                           concurrency=concurrency, stream=not args.no_stream, on_answer=progress.update)
    except BatchInterrupted as exc:
        results, interrupted = exc.answers, exc
    except AskError as exc:
        raise UsageError(str(exc)) from None
    progress.finish()
    results.rows, results.schema = rows, spec
    for answer in results:
        if spec is not None and answer.ok:
            parsed = spec.parse(answer.text)
            answer.data, answer.schema_error = parsed.data, parsed.error
    recorder = BatchRecorder(magics, client.base_url)
    for answer in results:
        if answer.ended_at is not None:
            recorder.add(answer)
    recorder.flush()
    magics._store_answer(results, args.out)
    if interrupted is not None:
        where = "_ask" + (f" and {args.out}" if args.out else "")
        raise UsageError(f"interrupted: {results.finished} of {len(items)} answers finished; they are kept in "
                         f"{where} (requests in flight were aborted)")
    show_batch(magics, results, results.summary(), [a for a in results[:FRAME_ROWS]], rows, spec)


def ask_each_to_file(magics, args, items, rows, prepare, params, client, model, spec, concurrency):
    """--jsonl PATH: each answer appended to the file as it finishes; the result reads from it."""
    from vllm_magics.ask.batch_store import BatchProgress, BatchResults, run_to_store
    from vllm_magics.errors import BatchStoreError
    from vllm_magics.notebook.views.live import StoreProgress

    path = Path(args.jsonl).expanduser()
    if path.is_dir():
        raise UsageError(f"--jsonl {path} is a folder: name a file, e.g. {path / 'answers.jsonl'}")
    if not args.resume and path.exists() and path.stat().st_size:
        raise UsageError(f"--jsonl {path} already holds answers: add --resume to ask only the items not answered "
                         "there yet, or name a new file")
    n = len(items)
    progress = BatchProgress(n)
    view = StoreProgress(progress, magics._in_notebook())
    recorder = BatchRecorder(magics, client.base_url)

    def on_answer(i, answer):
        answer.index = i
        recorder.add(answer)
        view.update()

    failure = None
    try:
        run_to_store(worker_client_factory(client), MessageLists(items, prepare), params, path, model=model,
                     concurrency=concurrency, progress=progress, on_answer=on_answer)
    except KeyboardInterrupt:
        failure = "interrupted"
    except BatchStoreError as exc:
        failure = str(exc)
    recorder.flush()
    view.finish()
    results = BatchResults(path, n, schema=spec, rows=rows)
    magics._store_answer(results, args.out)
    if failure == "interrupted":
        raise UsageError(f"interrupted: {results.answered:,} of {n:,} answers are kept in {path} (and in _ask); "
                         "run the same cell with --resume added to ask only the rest")
    if failure:
        raise UsageError(failure)
    show_batch(magics, results, results.summary(), results.head(FRAME_ROWS), rows, spec)


def show_batch(magics, results, summary: str, head: list, rows, spec) -> None:
    """The first answers as a table (with a schema: the first rows of `to_frame()`), and a summary."""
    frame = None
    if spec is not None:
        from vllm_magics.ask.schema import answers_to_frame

        part = rows.iloc[:len(head)] if hasattr(rows, "iloc") else list(rows[:len(head)])
        frame = answers_to_frame(part, head, spec)
    if not magics._in_notebook():
        print((frame.to_string() + "\n" + summary) if frame is not None else repr(results), flush=True)
        return
    from IPython.display import display

    from vllm_magics.notebook.views.answer_view import answers_table_bundle, frame_bundle

    display(frame_bundle(frame, len(results), summary) if frame is not None
            else answers_table_bundle(head, len(results), summary), raw=True)
