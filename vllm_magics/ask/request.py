"""Asking the model: the prompt template, conversation threads, one streamed request, a concurrent
batch, and plain-language errors. No IPython and no display: callers pass an `on_update(answer)`.

    client = ChatClient(base_url, api_key)
    answer = ask(client, [{"role": "user", "content": "Hi"}], {"temperature": 0})
"""
from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Callable, Iterable

from vllm_magics.ask.answer import Answer, AnswerList
from vllm_magics.ask.client import ChatClient, NoServer, ServerError, chat_payload
from vllm_magics.errors import VllmMagicsError
from vllm_magics.ask.reasoning import ReasoningSplitter


class AskError(VllmMagicsError):
    """A request failed; `answer` keeps whatever arrived before the failure."""

    def __init__(self, message: str, answer: Answer | None = None):
        super().__init__(message)
        self.answer = answer


# -- the prompt template -------------------------------------------------------------------------
_PROTECT = re.compile(r"(```.*?(?:```|\Z)|~~~.*?(?:~~~|\Z)|`[^`\n]+`)", re.S)


class TemplateError(VllmMagicsError):
    pass


def render_prompt(cell: str, namespace: dict) -> str:
    """The cell as a jinja2 template over the user's namespace.

    `{{ name }}` and `{% for %}` work; an undefined name is an error that names it. Code is left
    alone: fenced blocks and `inline code` are not templated, and jinja's `{# #}` comments are
    switched off, so dicts, JSON, f-strings and shell `${#x}` pass through unchanged.
    """
    import jinja2

    if "{{" not in cell and "{%" not in cell:
        return cell  # nothing to render: skip jinja entirely (and any chance to misread code)
    protected: list[str] = []

    def keep(m):
        protected.append(m.group(0))
        return f"\x00VM{len(protected) - 1}\x00"

    source = _PROTECT.sub(keep, cell)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True,
                             comment_start_string="\x01{#", comment_end_string="#}\x01")
    try:
        rendered = env.from_string(source).render(**namespace)
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"the prompt uses {exc.message.replace('is undefined', 'which is not defined')}: "
                            "define it in a cell first, or send the cell as written with --no-template") from None
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"the prompt is not a valid template (line {exc.lineno}: {exc.message}); "
                            "send it as written with --no-template") from None
    except Exception as exc:  # an expression in {{ }} raised
        raise TemplateError(f"evaluating the prompt template failed: {exc.__class__.__name__}: {exc}") from None
    return re.sub("\x00VM(\\d+)\x00", lambda m: protected[int(m.group(1))], rendered)


# -- conversations -------------------------------------------------------------------------------
class Conversations:
    """Named threads of messages. Reasoning is never stored: like DeepSeek-R1's own chat template,
    only the answers go back to the model."""

    DEFAULT = "default"

    def __init__(self):
        self.threads: dict[str, list[dict]] = {}
        self.last: str | None = None

    def history(self, name: str) -> list[dict]:
        return list(self.threads.get(name, []))

    def record(self, name: str, user: str, answer: Answer) -> None:
        thread = self.threads.setdefault(name, [])
        thread += [{"role": "user", "content": user}, {"role": "assistant", "content": answer.text}]
        self.last = name

    def reset(self, name: str | None = None) -> int:
        if name is None:
            n = len(self.threads)
            self.threads.clear()
            self.last = None
            return n
        return 1 if self.threads.pop(name, None) is not None else 0


def build_messages(prompt: str, system: str | None = None, history: list[dict] | None = None) -> list[dict]:
    messages = [{"role": "system", "content": system}] if system else []
    return messages + list(history or []) + [{"role": "user", "content": prompt}]


# -- one request ---------------------------------------------------------------------------------
def ask(client: ChatClient, messages: list[dict], params: dict, *, model: str | None = None,
        stream: bool = True, on_update: Callable[[Answer], None] | None = None,
        stop_event: threading.Event | None = None, answer: Answer | None = None) -> Answer:
    """Send one chat request and return the Answer. Raises AskError (with the partial answer) on
    failure, KeyboardInterrupt after marking the answer interrupted (the stream is closed, so vLLM
    aborts the request)."""
    answer = answer or Answer()
    answer.started_at = time.monotonic()
    try:
        model = model or client.default_model()
    except (NoServer, ServerError) as exc:
        raise AskError(explain(exc, client), answer) from None
    answer.model = model
    answer.request = chat_payload(messages, model, params, stream)
    splitter = ReasoningSplitter()
    answer.streaming = stream
    try:
        if stream:
            _consume_stream(client, messages, params, model, answer, splitter, on_update, stop_event)
        else:
            reply = client.chat(messages, model=model, **params)
            answer.first_token_at = time.monotonic()
            choice = (reply.get("choices") or [{}])[0]
            splitter.feed(choice.get("message") or {})
            answer.finish_reason = choice.get("finish_reason")
            answer.usage = reply.get("usage")
        if answer.finish_reason == "abort" and not answer.interrupted:
            # vLLM ends a request it dropped (shutting down, engine trouble) with finish_reason "abort".
            raise ServerError("the server aborted the request before the answer was complete "
                              "(finish_reason: abort); the part that arrived is kept. %vllm_status / "
                              "%vllm_logs show what happened to the server")
    except KeyboardInterrupt:
        answer.interrupted = True
        raise
    except (NoServer, ServerError) as exc:
        answer.error = answer.error or explain(exc, client)  # a mid-stream error already says what it is
        raise AskError(answer.error, answer) from None
    except _connection_errors() as exc:
        answer.error = (f"the connection to {client.base_url} was lost ({exc.__class__.__name__}); "
                        "what arrived before is kept")
        if "Timeout" in exc.__class__.__name__:
            answer.error = (f"no reply from {client.base_url} within {client.timeout:.0f} s; what arrived "
                            "before is kept (raise the timeout with --timeout)")
        raise AskError(answer.error, answer) from None
    finally:
        splitter.finish()
        answer.text, answer.reasoning = splitter.answer, splitter.reasoning
        answer.reasoning_source = splitter.source
        answer.ended_at = time.monotonic()
        answer.streaming = False
    return answer


def _connection_errors():
    import requests

    return (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


def _consume_stream(client, messages, params, model, answer, splitter, on_update, stop_event):
    events = client.stream_chat(messages, model=model, **params)
    try:
        for event in events:
            if stop_event is not None and stop_event.is_set():
                answer.interrupted = True
                return
            if "error" in event:  # vLLM: an engine failure mid-stream, then [DONE]
                err = event["error"]
                msg = err.get("message") if isinstance(err, dict) else str(err)
                answer.error = (f"the server reported an error mid-answer: {msg} The part that arrived is "
                                "kept; the server's log says more (%vllm_logs)")
                raise ServerError(answer.error, (err or {}).get("code") if isinstance(err, dict) else None, event)
            if event.get("usage"):
                answer.usage = event["usage"]
            answer.model = event.get("model") or answer.model
            for choice in event.get("choices") or []:
                delta = choice.get("delta") or {}
                in_reasoning = "reasoning" in delta or "reasoning_content" in delta
                changed = splitter.feed(delta)
                in_reasoning = in_reasoning or (splitter.source == "tags" and not splitter.answer and changed)
                if in_reasoning:
                    answer.reasoning_chunks += 1
                    # vLLM sends the generated token ids with return_token_ids: an exact count.
                    if choice.get("token_ids") is not None:
                        answer.reasoning_token_ids = (answer.reasoning_token_ids or 0) + len(choice["token_ids"])
                if changed:
                    if answer.first_token_at is None:
                        answer.first_token_at = time.monotonic()
                    answer.text, answer.reasoning = splitter.answer, splitter.reasoning
                    if on_update:
                        on_update(answer)
                if choice.get("finish_reason"):
                    answer.finish_reason = choice["finish_reason"]
    finally:
        events.close()  # closes the HTTP response: vLLM aborts a request whose client went away


def explain(exc: Exception, client: ChatClient) -> str:
    """One plain line for a failed request, with what to do next."""
    if isinstance(exc, NoServer):
        return f"nothing answers at {client.base_url}: is the server running? (%vllm_status, %vllm_serve)"
    if isinstance(exc, ServerError):
        from vllm_magics.ask.client import error_message

        detail = error_message(exc.status or 0, exc.body) if exc.body is not None else str(exc)
        if exc.status is None and exc.body is None:
            return str(exc)
        if exc.status == 401:
            return ("the server refused the API key (401 Unauthorized): with --url, name the variable "
                    "that holds the key with --api-key-env NAME")
        if exc.status == 404 and "model" in detail.lower():
            return (f"unknown model (404): {detail.rstrip('.')}. Use --model with one of the served names, "
                    "or leave it out")
        if exc.status == 400 and re.search(r"context length|maximum context|max_model_len|too long|"
                                           r"maximum model length|prompt.*tokens", detail, re.I):
            return (f"the request does not fit the model's context (400): {detail}. Shorten the prompt or "
                    "the conversation (%ask_reset), lower --max-tokens, or restart the server with a larger "
                    "--max-model-len")
        return f"the server answered {exc.status or 'with an error'}: {detail}"
    return str(exc)


# -- a batch -------------------------------------------------------------------------------------
def ask_many(client_factory: Callable[[], ChatClient], message_lists: list[list[dict]], params: dict, *,
             model: str | None = None, concurrency: int = 16, prompts: Iterable[str] | None = None,
             on_progress: Callable[[int, int, AnswerList], None] | None = None) -> AnswerList:
    """Send every request at once (up to `concurrency` in flight) so vLLM's continuous batching
    does the work. Results come back in input order; a failed item keeps its error and the rest go on.
    Ctrl-C stops the batch: requests in flight are closed (vLLM aborts them)."""
    prompts = list(prompts or [m[-1]["content"] for m in message_lists])
    results = AnswerList(Answer(prompt=p, index=i) for i, p in enumerate(prompts))
    if not message_lists:
        return results
    stop = threading.Event()
    local = threading.local()
    done = [0]
    lock = threading.Lock()
    if model is None:
        model = client_factory().default_model()

    def work(i: int) -> None:
        if stop.is_set():
            results[i].interrupted = True
            return
        if not hasattr(local, "client"):
            local.client = client_factory()
        try:
            ask(local.client, message_lists[i], params, model=model, stop_event=stop, answer=results[i])
        except AskError as exc:
            results[i].error = results[i].error or str(exc)
        except Exception as exc:  # one bad item must not lose the others
            results[i].error = f"{exc.__class__.__name__}: {exc}"
        finally:
            with lock:
                done[0] += 1
            if on_progress:
                on_progress(done[0], len(results), results)

    pool = ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(message_lists))))
    futures = [pool.submit(work, i) for i in range(len(message_lists))]
    try:
        pending = set(futures)
        while pending:  # short waits: Ctrl-C reaches this thread between them
            _, pending = wait(pending, timeout=0.2)
    except KeyboardInterrupt:
        stop.set()
        for a in results:
            if a.ended_at is None:
                a.interrupted = True
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return results
