"""One request to the model, streamed or not, and plain-language errors. No IPython and no display:
callers pass an `on_update(answer)` (prompts are in ask.prompt, batches in ask.batch).

    client = ChatClient(base_url, api_key)
    answer = ask(client, [{"role": "user", "content": "Hi"}], {"temperature": 0})
"""
from __future__ import annotations

import re
import threading
import time
from typing import Callable

from vllm_magics.ask.answer import Answer
from vllm_magics.ask.client import ChatClient, NoServer, ServerError, chat_payload
from vllm_magics.errors import AskError
from vllm_magics.ask.reasoning import ReasoningSplitter


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
    answer.live = splitter
    try:
        if stream:
            _consume_stream(client, messages, params, model, answer, splitter, on_update, stop_event)
        else:
            reply = _object(client.chat(messages, model=model, **params), "reply")
            answer.first_token_at = time.monotonic()
            choices = reply.get("choices") or [{}]
            choice = _object(choices[0] if isinstance(choices, list) else choices, "choice")
            splitter.feed(_object(choice.get("message") or {}, "message"))
            answer.finish_reason = _str_or_none(choice.get("finish_reason"))
            answer.usage = reply.get("usage") if isinstance(reply.get("usage"), dict) else None
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
        answer.live = None
    return answer


def _connection_errors():
    import requests

    return (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


def _consume_stream(client, messages, params, model, answer, splitter, on_update, stop_event):
    events = client.stream_chat(messages, model=model, **params)
    try:
        for event in events:
            if stop_event is not None and stop_event.is_set():
                # Stopped after the finish event (only usage was left to come): the answer is whole,
                # and a batch keeps it instead of asking the server for it again.
                answer.interrupted = answer.finish_reason is None
                return
            event = _object(event, "stream event")
            if "error" in event:  # vLLM: an engine failure mid-stream, then [DONE]
                err = event["error"]
                msg = err.get("message") if isinstance(err, dict) else str(err)
                answer.error = (f"the server reported an error mid-answer: {msg} The part that arrived is "
                                "kept; the server's log says more (%vllm_logs)")
                raise ServerError(answer.error, (err or {}).get("code") if isinstance(err, dict) else None, event)
            if isinstance(event.get("usage"), dict):
                answer.usage = event["usage"]
            answer.model = _str_or_none(event.get("model")) or answer.model
            choices = event.get("choices") or []
            for choice in choices if isinstance(choices, list) else [choices]:
                choice = _object(choice, "choice")
                delta = _object(choice.get("delta") or {}, "delta")
                in_reasoning = "reasoning" in delta or "reasoning_content" in delta
                changed = splitter.feed(delta)
                in_reasoning = in_reasoning or (splitter.source == "tags" and not len(splitter.answer_text) and changed)
                if in_reasoning:
                    answer.reasoning_chunks += 1
                    # vLLM sends the generated token ids with return_token_ids: an exact count.
                    if isinstance(choice.get("token_ids"), list):
                        answer.reasoning_token_ids = (answer.reasoning_token_ids or 0) + len(choice["token_ids"])
                if changed:
                    if answer.first_token_at is None:
                        answer.first_token_at = time.monotonic()
                    if on_update:  # it reads answer.live: the text is joined once, at the end
                        on_update(answer)
                if choice.get("finish_reason"):
                    answer.finish_reason = _str_or_none(choice["finish_reason"])
    finally:
        events.close()  # closes the HTTP response: vLLM aborts a request whose client went away


def _object(value, what: str) -> dict:
    """A part of the server's reply that must be a JSON object; anything else is a ServerError (one
    line for the user), not a TypeError deep in the parsing."""
    if not isinstance(value, dict):
        raise ServerError(f"the server's {what} is not an OpenAI chat completion object "
                          f"(got {type(value).__name__}: {str(value)[:80]!r}); is --url a chat server?")
    return value


def _str_or_none(value) -> str | None:
    return value if isinstance(value, str) else None


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
