"""%%ask and %ask_reset: questions to the model, streamed and rendered."""
from __future__ import annotations

import json

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
        if args.each and (args.cont or args.thread):
            raise UsageError("--each sends independent prompts: it cannot continue a conversation")
        params = self._request_params(args)
        client, server = self._ask_client(args)
        if server is not None or self._is_vllm(client):
            params.setdefault("return_token_ids", True)  # exact reasoning token counts
        # The managed server's model name is known: no /v1/models round trip per question.
        model = args.model or self.model or (served_model_name_or_default(server) if server is not None else None)
        system = args.system if args.system is not None else (self.system or None)
        ns = self.shell.user_ns if self.shell is not None else {}
        if self._conversations is None:
            self._conversations = prompt_mod.Conversations()
        convs = self._conversations

        if args.each:
            return self._ask_each(args, cell, ns, params, client, model, system)
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
        try:
            answer = ask_mod.ask(client, messages, params, model=model, stream=not args.no_stream,
                                 on_update=live.update, answer=live.answer)
        except KeyboardInterrupt:
            answer = live.answer
            self._store_answer(answer, args.out)
            _finish_live(live, answer, whole=False)
            raise UsageError("interrupted: the partial answer stays above (and in _ask)") from None
        except ask_mod.AskError as exc:
            if exc.answer is not None and (exc.answer.text or exc.answer.reasoning):
                self._store_answer(exc.answer, args.out)
                _finish_live(live, exc.answer)
            raise UsageError(str(exc)) from None
        convs.record(thread or convs.DEFAULT, prompt, answer)
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

    def _ask_each(self, args, cell, ns, params, client, model, system):
        from vllm_magics.ask import prompt as prompt_mod
        from vllm_magics.ask.batch import BatchInterrupted, ask_many
        from vllm_magics.ask.client import ChatClient, NoServer, ServerError
        from vllm_magics.ask.request import AskError, explain
        from vllm_magics.notebook.views.live import BatchProgress

        if args.each not in ns:
            raise UsageError(f"--each {args.each}: there is no variable named {args.each}")
        items = ns[args.each]
        if isinstance(items, (str, bytes)) or not hasattr(items, "__iter__"):
            raise UsageError(f"--each {args.each}: it must be a list or other iterable of items, "
                             f"not {type(items).__name__}")
        items = list(items.itertuples(index=False) if hasattr(items, "itertuples") else items)
        cell = cell.strip("\n")
        try:  # compiled once for every item; a name no item can supply is an error before any request
            template = prompt_mod.PromptTemplate("" if args.no_template else cell)
        except prompt_mod.TemplateError as exc:
            raise UsageError(str(exc)) from None
        missing = template.missing(ns, provided=("item",))
        if missing:
            raise UsageError(f"the prompt uses '{missing[0]}' which is not defined: define it in a cell first, "
                             "or send the cell as written with --no-template")

        def prepare(item):  # run by the batch's workers as they take items: the first request goes at once
            prompt = cell if args.no_template else template.render(ns, item=item)
            return prompt, prompt_mod.build_messages(prompt, system)

        concurrency = args.concurrency or self.concurrency
        if concurrency < 1:
            raise UsageError("--concurrency must be at least 1")

        def factory():  # the headers copied, key and all: the key is never a variable of its own here
            c = ChatClient(client.base_url, None, timeout=client.timeout)
            c.session.headers.update(client.session.headers)
            return c

        try:
            model = model or client.default_model()
        except (NoServer, ServerError) as exc:
            raise UsageError(explain(exc, client)) from None
        except KeyboardInterrupt:
            raise UsageError("interrupted before the batch started: nothing was asked") from None
        progress = BatchProgress(len(items), self._in_notebook())
        try:
            results = ask_many(factory, items, prepare, params, model=model, concurrency=concurrency,
                               stream=not args.no_stream, on_answer=progress.update)
        except BatchInterrupted as exc:
            results = exc.answers
            progress.finish()
            self._store_answer(results, args.out)
            where = "_ask" + (f" and {args.out}" if args.out and args.out.isidentifier() else "")
            raise UsageError(f"interrupted: {results.finished} of {len(items)} answers finished; they are kept in "
                             f"{where} (requests in flight were aborted)") from None
        except AskError as exc:
            raise UsageError(str(exc)) from None
        progress.finish()
        self._store_answer(results, args.out)
        if self._in_notebook():
            from IPython.display import display

            from vllm_magics.notebook.views.answer_view import answer_list_bundle

            display(answer_list_bundle(results), raw=True)
        else:
            print(repr(results))

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
