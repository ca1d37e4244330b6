"""%%ask and %ask_reset: questions to the model, streamed and rendered."""
from __future__ import annotations

import json
import os

from IPython.core.error import UsageError
from IPython.core.magic import cell_magic, line_magic, magics_class
from vllm_magics.notebook.args import argument, magic_arguments
from traitlets import Bool, Float, Integer, Unicode

from vllm_magics.notebook.base import MagicsBase, _parse, at_the_edge, served_model_name_or_default


@magics_class
class AskMagics(MagicsBase):
    """Settings and magics that ask the model."""

    model = Unicode("", help="Model for %%ask (default: the first one the server lists).").tag(config=True)
    system = Unicode("", help="System prompt for %%ask.").tag(config=True)
    temperature = Float(None, allow_none=True, help="Sampling temperature for %%ask.").tag(config=True)
    top_p = Float(None, allow_none=True, help="top_p for %%ask.").tag(config=True)
    max_tokens = Integer(None, allow_none=True, help="max_tokens for %%ask.").tag(config=True)
    seed = Integer(None, allow_none=True, help="Sampling seed for %%ask.").tag(config=True)
    concurrency = Integer(16, help="Requests in flight at once for %%ask --each.").tag(config=True)
    request_timeout = Float(600.0, help="Seconds %%ask waits for the server to send something.").tag(config=True)
    hide_reasoning = Bool(False, help="Leave the reasoning block out of %%ask's display.").tag(config=True)
    stream_updates_per_second = Float(15.0, help="How often a streaming answer is redrawn.").tag(config=True)
    history = Bool(True, help="Record every %%ask (and every --each item) in a SQLite history that "
                   "%ask_history shows.").tag(config=True)
    history_path = Unicode("", help="The history database (default: history.sqlite in the runtime "
                           "folder).").tag(config=True)
    history_rows = Integer(100_000, help="Most entries the history keeps (the oldest go first).").tag(config=True)

    # -- %%ask -------------------------------------------------------------------------------
    @magic_arguments()
    @argument("--model", default=None, help="Model name (default: the first the server lists)")
    @argument("--system", default=None, help="System prompt")
    @argument("--temperature", type=float, default=None, help="Sampling temperature")
    @argument("--top-p", type=float, default=None, help="Nucleus sampling top_p")
    @argument("--max-tokens", type=int, default=None, help="Most tokens to generate")
    @argument("--seed", type=int, default=None, help="Sampling seed")
    @argument("--stop", action="append", default=None, help="Stop string (repeat for several)")
    @argument("--params", default=None, metavar="JSON|VAR", help='Extra request fields: a JSON object, e.g. '
              '\'{"top_k": 20}\', or the name of a dict variable')
    @argument("--no-stream", action="store_true", help="Wait for the whole answer instead of streaming")
    @argument("--hide-reasoning", action="store_true", help="Do not show the reasoning block")
    @argument("--out", default=None, metavar="VAR", help="Also store the Answer in this variable")
    @argument("--url", default=None, help="Any OpenAI-compatible server, e.g. http://host:8000/v1")
    @argument("--api-key-env", default=None, metavar="NAME", help="Environment variable holding the key for --url")
    @argument("-c", "--continue", dest="cont", action="store_true", help="Continue the last conversation")
    @argument("--thread", default=None, metavar="NAME", help="Continue (or start) a named conversation")
    @argument("--no-template", action="store_true", help="Send the cell as written (no {{ }} templating)")
    @argument("--each", default=None, metavar="NAME", help="Ask once per item of the iterable NAME ({{ item }})")
    @argument("--concurrency", type=int, default=None, help="Requests in flight at once with --each")
    @argument("--timeout", type=float, default=None, help="Seconds to wait for the server to send something")
    @argument("--schema", default=None, metavar="NAME", help="Answer in JSON fitting NAME (a pydantic model "
              "class or a JSON-schema dict); the Answer's .data is the validated object")
    @argument("--jsonl", default=None, metavar="PATH", help="With --each: write each answer to this JSONL file as "
              "it finishes (memory stays small); the result reads from it")
    @argument("--resume", action="store_true", help="With --jsonl: ask only the items not answered in the file")
    @argument("--export-batch", default=None, metavar="PATH", help="With --each: write the requests for "
              "`vllm run-batch` (OpenAI batch format) instead of asking")
    @argument("--compare", default=None, metavar="A,B[,C]",
              help="Ask several servers/models/variants at once, side by side")
    @cell_magic
    @at_the_edge("%%ask")
    def ask(self, line="", cell=""):
        """Send the cell to the model and show the answer as it streams, reasoning apart.

        The cell is a jinja2 template over your variables ({{ text }}, {% for %}); code in
        backticks or fences is sent as written. Example:

            %%ask --temperature 0
            What is the capital of {{ country }}?
        """
        from vllm_magics.ask import prompt as prompt_mod
        from vllm_magics.ask import request as ask_mod

        args = _parse(self.ask, line)
        if not (cell or "").strip():
            raise UsageError("%%ask needs a prompt in the cell body, e.g.\n%%ask\nWhat is vLLM?")
        if args.compare:
            from vllm_magics.notebook.ask_compare import ask_compare

            return ask_compare(self, args, cell)
        if args.each and (args.cont or args.thread):
            raise UsageError("--each sends independent prompts: it cannot continue a conversation")
        for flag, value in (("--jsonl", args.jsonl), ("--export-batch", args.export_batch)):
            if value and not args.each:
                raise UsageError(f"{flag} works with --each NAME (one request per item)")
        if args.resume and not args.jsonl:
            raise UsageError("--resume continues a --jsonl file: add --jsonl PATH (the file of the first run)")
        if args.jsonl and args.export_batch:
            raise UsageError("--jsonl asks and keeps the answers, --export-batch only writes the requests: pick one")
        params = self._request_params(args)
        spec = self._schema(args)
        if spec is not None:
            params.update(spec.request_fields())
        ns = self.shell.user_ns if self.shell is not None else {}
        system = args.system if args.system is not None else (self.system or None)
        if args.export_batch:
            return self._export_each(args, cell, ns, params, system)
        client, server = self._ask_client(args)
        if server is not None or self._is_vllm(client):
            params.setdefault("return_token_ids", True)  # exact reasoning token counts
        # The managed server's model name is known: no /v1/models round trip per question.
        model = args.model or self.model or (served_model_name_or_default(server) if server is not None else None)
        if self._conversations is None:
            self._conversations = prompt_mod.Conversations()
        convs = self._conversations

        if args.each:
            return self._ask_each(args, cell, ns, params, client, model, system, spec)
        try:
            prompt = cell.strip("\n") if args.no_template else prompt_mod.render_prompt(cell.strip("\n"), ns)
        except prompt_mod.TemplateError as exc:
            raise UsageError(str(exc)) from None
        thread = args.thread or (convs.last or convs.DEFAULT if args.cont else None)
        history = convs.history(thread) if thread else []
        messages = prompt_mod.build_messages(prompt, system, history)
        from vllm_magics.notebook.views.live import LiveAnswer

        live = LiveAnswer(self._in_notebook(), hide_reasoning=args.hide_reasoning or self.hide_reasoning,
                          updates_per_second=self.stream_updates_per_second)
        answer = None
        thread = thread or convs.DEFAULT
        try:
            answer = ask_mod.ask(client, messages, params, model=model, stream=not args.no_stream,
                                 on_update=live.update, answer=live.answer)
        except KeyboardInterrupt:
            answer = live.answer
            self._store_answer(answer, args.out)
            self._record_history(answer, client.base_url, thread)
            _finish_live(live, answer, whole=False)
            raise UsageError("interrupted: the partial answer stays above (and in _ask)") from None
        except ask_mod.AskError as exc:
            if exc.answer is not None:
                self._record_history(exc.answer, client.base_url, thread)
            if exc.answer is not None and (exc.answer.text or exc.answer.reasoning):
                self._store_answer(exc.answer, args.out)
                _finish_live(live, exc.answer)
            raise UsageError(str(exc)) from None
        if spec is not None:  # only the answer text: the reasoning was split off while it streamed
            parsed = spec.parse(answer.text)
            answer.data, answer.schema_error = parsed.data, parsed.error
        convs.record(thread, prompt, answer)
        self._record_history(answer, client.base_url, thread)
        self._store_answer(answer, args.out)
        _finish_live(live, answer)

    def _request_params(self, args) -> dict:
        params = {}
        for key, given, default in (("temperature", args.temperature, self.temperature),
                                    ("top_p", args.top_p, self.top_p),
                                    ("max_tokens", args.max_tokens, self.max_tokens),
                                    ("seed", args.seed, self.seed)):
            value = given if given is not None else default
            if value is not None:
                params[key] = value
        if args.stop:
            params["stop"] = args.stop
        if args.params:
            ns = self.shell.user_ns if self.shell is not None else {}
            if args.params.isidentifier() and isinstance(ns.get(args.params), dict):
                extra = ns[args.params]  # a dict variable: no quoting trouble with JSON on the line
            else:
                try:
                    extra = json.loads(args.params)
                except ValueError as exc:
                    raise UsageError(f"--params must be a JSON object or the name of a dict variable: {exc}"
                                     ) from None
            if not isinstance(extra, dict):
                raise UsageError("--params must be a JSON object, e.g. '{\"top_k\": 20}'")
            params.update(extra)
        if args.max_tokens is not None and args.max_tokens < 1:
            raise UsageError("--max-tokens must be at least 1")
        return params

    def _ask_client(self, args):
        from vllm_magics.ask.client import ChatClient

        base_url, key, server = self._target(args)
        if key:  # never stored in the history, whatever text it turns up in
            self.__dict__.setdefault("_keys_seen", set()).add(key)
        if server is not None and not server.is_alive():
            raise UsageError(f"the vLLM server has exited (code {server.exit_code()}): %vllm_logs shows why, "
                             "%vllm_serve starts it again")
        return ChatClient(base_url, key, timeout=args.timeout or self.request_timeout), server

    def _is_vllm(self, client) -> bool:
        """Whether a server given by URL is vLLM (it then accepts vLLM-only request fields). Asked once per URL."""
        cache = self._vllm_urls
        if client.base_url not in cache:
            from vllm_magics.status.probes import get_json

            try:
                status, body = get_json(client.base_url, "/version", timeout=2.0)
                cache[client.base_url] = status == 200 and isinstance(body, dict) and "version" in body
            except OSError:
                cache[client.base_url] = False
            except KeyboardInterrupt:  # the probe waits up to 2 s: Ctrl-C then is one line too
                raise UsageError("interrupted before the question was sent") from None
        return cache[client.base_url]

    def _store_answer(self, answer, out):
        if self.shell is None:
            return
        self.shell.user_ns["_ask"] = answer
        if out:
            if not out.isidentifier():
                raise UsageError(f"--out needs a variable name, not {out!r}")
            self.shell.user_ns[out] = answer

    def _ask_each(self, args, cell, ns, params, client, model, system, spec):
        from vllm_magics.ask.client import NoServer, ServerError
        from vllm_magics.ask.request import explain
        from vllm_magics.notebook import ask_each

        items, rows = ask_each.items_of(args.each, ns)
        prepare = ask_each.make_prepare(args, cell, ns, system)
        concurrency = args.concurrency or self.concurrency
        if concurrency < 1:
            raise UsageError("--concurrency must be at least 1")
        try:
            model = model or client.default_model()
        except (NoServer, ServerError) as exc:
            raise UsageError(explain(exc, client)) from None
        except KeyboardInterrupt:
            raise UsageError("interrupted before the batch started: nothing was asked") from None
        run = ask_each.ask_each_to_file if args.jsonl else ask_each.ask_each_in_memory
        run(self, args, items, rows, prepare, params, client, model, spec, concurrency)

    def _export_each(self, args, cell, ns, params, system):
        from vllm_magics.notebook import ask_each

        model = args.model or self.model or (served_model_name_or_default(self.server) if self.server else None)
        if not model:
            raise UsageError("--export-batch: name the model with --model (the one `vllm run-batch --model` "
                             "loads); nothing is asked, so no server tells it")
        items, _ = ask_each.items_of(args.each, ns)
        ask_each.export_each(self, args, items, ask_each.make_prepare(args, cell, ns, system), params, model)

    def _schema(self, args):
        """The --schema NAME of the user's namespace as an AnswerSchema (None without --schema)."""
        if not args.schema:
            return None
        from vllm_magics.ask.schema import answer_schema
        from vllm_magics.errors import SchemaError

        ns = self.shell.user_ns if self.shell is not None else {}
        if args.schema not in ns:
            raise UsageError(f"--schema {args.schema}: there is no variable named {args.schema} (define a "
                             "pydantic model class or a JSON-schema dict)")
        try:
            return answer_schema(ns[args.schema])
        except SchemaError as exc:
            raise UsageError(f"--schema {args.schema}: {exc}") from None

    # -- the history ---------------------------------------------------------------------------
    def _history_store(self, required: bool = False):
        """The open History (made on first use), or None when it is turned off or cannot be opened (said
        once). `required` (for %ask_history): open it even when recording is off, and say why it cannot."""
        from pathlib import Path

        from vllm_magics.ask.history import History
        from vllm_magics.errors import HistoryError

        if not self.history and not required:
            return None
        path = Path(self.history_path).expanduser() if self.history_path else \
            Path(self._runtime_dir()) / "history.sqlite"
        db = self.__dict__.get("_history_db")
        if db is not None and db.path == path:
            db.max_rows = self.history_rows
            return db
        try:
            # A database another program holds locked delays an ask by at most 5 s (then it is not recorded).
            db = History(path, max_rows=self.history_rows, secrets=self._known_secrets(), busy_seconds=5.0)
        except HistoryError as exc:
            if required:
                raise UsageError(str(exc)) from None
            self._history_warn(str(exc))
            return None
        if self.__dict__.get("_history_db") is not None:
            self._history_db.close()
        self._history_db = db
        return db

    def _known_secrets(self) -> set:
        keys = set(self.__dict__.get("_keys_seen", ()))
        keys.update(s.api_key for s in self.servers.values() if s.api_key)  # every named server's
        if self.api_key_env and os.environ.get(self.api_key_env):
            keys.add(os.environ[self.api_key_env])
        return keys

    def _record_history(self, answer, server_url, thread=None):
        """Record one answer in the history (unless %config VllmMagics.history = False); its id or None.
        Never breaks an ask: a history that cannot be written is said once, and the ask goes on."""
        db = self._history_store()
        if db is None:
            return None
        db.add_secrets(self._known_secrets())
        entry_id = db.record(answer, server_url, thread)
        self._history_check(db)
        return entry_id

    def _history_check(self, db) -> None:
        if db.failed_writes and not self.__dict__.get("_history_warned"):
            self._history_warn(f"the history at {db.path} could not be written ({db.last_write_error})")

    def _history_warn(self, why: str) -> None:
        import sys

        if self.__dict__.get("_history_warned"):
            return
        self._history_warned = True
        print(f"Warning: {self._redact(why)}; asking goes on without it. %config VllmMagics.history = False "
              "turns the history off.", file=sys.stderr, flush=True)

    @magic_arguments()
    @argument("thread", nargs="?", default=None, help="The conversation to forget (default: all)")
    @line_magic
    @at_the_edge("%ask_reset")
    def ask_reset(self, line=""):
        """Forget %%ask conversations (all, or the named one)."""
        args = _parse(self.ask_reset, line)
        if self._conversations is None:
            print("No conversation to forget.")
            return
        n = self._conversations.reset(args.thread)
        print(f"Forgot {n} conversation{'s' if n != 1 else ''}." if n else f"No conversation named {args.thread}.")


def _finish_live(live, answer, whole: bool = True) -> None:
    """The final render of an answer (one pass over it: about a second for 500 KB). Ctrl-C during it
    leaves the answer complete in _ask."""
    try:
        live.finish(answer, whole)
    except KeyboardInterrupt:
        raise UsageError("interrupted while drawing the answer: the whole answer is in _ask") from None
