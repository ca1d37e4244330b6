"""%ask_history: the asks recorded in the SQLite history (ask/history.py), as a table or JSON; an entry
brought back as an Answer, or asked again. Recording itself is AskMagics._record_history."""
from __future__ import annotations

from IPython.core.error import UsageError
from IPython.core.magic import line_magic, magics_class

from vllm_magics.notebook.args import argument, magic_arguments
from vllm_magics.notebook.base import MagicsBase, _parse, at_the_edge


@magics_class
class HistoryMagics(MagicsBase):
    """The history of %%ask. Uses the ask group's `_history_store`, `_ask_client` and `_record_history`
    (VllmMagics joins both groups in one instance)."""

    @magic_arguments()
    @argument("-n", type=int, default=20, help="How many entries (newest first; default 20)")
    @argument("--search", default=None, metavar="TEXT", help="Entries whose prompt, answer, reasoning or "
              "error contains TEXT")
    @argument("--thread", default=None, metavar="NAME", help="Entries of this conversation")
    @argument("--json", action="store_true", help="Return the entries as a list of dicts (JSON-able)")
    @argument("--get", type=int, default=None, metavar="ID", help="Bring entry ID back as an Answer (in _ask)")
    @argument("--reask", type=int, default=None, metavar="ID", help="Send entry ID's messages and parameters "
              "again, to the current server")
    @argument("--out", default=None, metavar="VAR", help="With --get or --reask: also store the Answer in VAR")
    @argument("--model", default=None, help="With --reask: the model (default: the entry's, if the server "
              "serves it, else the server's first)")
    @argument("--url", default=None, help="With --reask: any OpenAI-compatible server")
    @argument("--api-key-env", default=None, metavar="NAME", help="With --reask: the variable holding the key")
    @argument("--timeout", type=float, default=None, help="With --reask: seconds to wait for the server")
    @line_magic
    @at_the_edge("%ask_history")
    def ask_history(self, line=""):
        """Show what %%ask asked and answered (kept across kernel restarts in a SQLite file).

            %ask_history                      the last 20 entries
            %ask_history --search Paris -n 5  entries mentioning Paris
            %ask_history --get 12 --out a     entry 12 as an Answer in `a`
            %ask_history --reask 12           ask entry 12 again (same messages and parameters)

        %config VllmMagics.history = False stops the recording.
        """
        import sqlite3

        args = _parse(self.ask_history, line)
        if args.n < 1:
            raise UsageError("-n must be at least 1")
        if args.out and not args.out.isidentifier():
            raise UsageError(f"--out needs a variable name, not {args.out!r}")
        db = self._history_store(required=True)
        try:
            if args.get is not None or args.reask is not None:
                return self._history_entry(db, args)
            if args.search is not None:
                entries = db.search(args.search, args.n, thread=args.thread or None)
            elif args.thread:
                entries = db.by_thread(args.thread, args.n)
            else:
                entries = db.last(args.n)
        except sqlite3.Error as exc:
            raise UsageError(f"the history database {db.path} cannot be read ({exc}); move it away and a new "
                             "one is made") from None
        if args.json:
            return entries
        where = "".join(f" {k} {v!r}" for k, v in (("matching", args.search), ("in thread", args.thread)) if v)
        from vllm_magics.notebook.views.answer_view import history_bundle

        bundle = history_bundle(entries, where)
        if self._in_notebook():
            from IPython.display import display

            display(bundle, raw=True)
        else:
            print(bundle["text/plain"], flush=True)

    def _history_entry(self, db, args):
        from vllm_magics.ask.history import entry_to_answer
        from vllm_magics.errors import HistoryError

        entry_id = args.get if args.get is not None else args.reask
        try:
            entry = db.get(entry_id)
        except HistoryError as exc:
            raise UsageError(f"{exc}: %ask_history lists the ids") from None
        if args.reask is not None:
            return self._reask(entry, args)
        answer = entry_to_answer(entry)
        self._store_answer(answer, args.out)
        self._show_answer(answer)

    def _reask(self, entry, args):
        from vllm_magics.ask import request as ask_mod
        from vllm_magics.ask.history import resend_args
        from vllm_magics.notebook.ask import _finish_live
        from vllm_magics.notebook.views.live import LiveAnswer

        messages, params, model = resend_args(entry)
        if not messages:
            raise UsageError(f"history entry {entry['id']} has no messages to send again")
        args.no_stream = False
        client, server = self._ask_client(args)
        if not (server is not None or self._is_vllm(client)):
            params.pop("return_token_ids", None)  # a vLLM-only field
        model = args.model or self._served_or_none(client, model)
        live = LiveAnswer(self._in_notebook(), hide_reasoning=self.hide_reasoning,
                          updates_per_second=self.stream_updates_per_second)
        try:
            answer = ask_mod.ask(client, messages, params, model=model, on_update=live.update, answer=live.answer)
        except KeyboardInterrupt:
            self._store_answer(live.answer, args.out)
            _finish_live(live, live.answer, whole=False)
            raise UsageError("interrupted: the partial answer stays above (and in _ask)") from None
        except ask_mod.AskError as exc:
            raise UsageError(str(exc)) from None
        self._record_history(answer, client.base_url, entry.get("thread"))
        self._store_answer(answer, args.out)
        _finish_live(live, answer)

    def _served_or_none(self, client, model):
        """The entry's model if the server serves it; else None (the server's first model is used)."""
        from vllm_magics.errors import VllmMagicsError

        try:
            served = {m.get("id") for m in client.models() if isinstance(m, dict)}
        except VllmMagicsError:
            return None  # the ask says what is wrong with the server
        return model if model in served else None

    def _show_answer(self, answer):
        if self._in_notebook():
            from IPython.display import display

            display(answer)
        else:
            print(answer.text_view(), flush=True)
