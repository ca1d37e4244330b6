"""Chat over HTTP with an OpenAI-compatible server (vLLM first): models, chat, streaming chat.

Plain module, no IPython. `requests` is imported when a client is made, not when this module is.

    c = ChatClient("http://127.0.0.1:8000", api_key="...")
    c.chat([{"role": "user", "content": "Hi"}])["choices"][0]["message"]["content"]
    for chunk in c.stream_chat([...]): ...     # parsed `data:` events, [DONE] ends the iterator

Any server may answer (`--url`). Whatever it sends ends as NoServer or ServerError (BadReply for a
reply that breaks the protocol, TooSlow for one that does not arrive in time), never as a stray
exception: replies are read with a size cap and a deadline (a slow drip does not reset it, see
status/deadline.py), events and replies are checked for the shape the callers read.
"""
from __future__ import annotations

import functools
import json
import threading
from typing import Iterator

from vllm_magics.errors import VllmMagicsError, NoServer, ServerError, BadReply, TooSlow
from vllm_magics.status.deadline import ReadGuard
from vllm_magics.status.probes import server_root

MODELS_TIMEOUT = 10.0
MAX_SSE_LINE = 4 * 1024 * 1024  # one event: vLLM's are a few hundred bytes (more with logprobs)
MAX_REPLY = 64 * 1024 * 1024  # a whole --no-stream reply: 100k tokens of text with logprobs fit
MAX_ERROR_BODY = 64 * 1024
_local = threading.local()  # the ReadGuard of this thread's request in flight


def error_message(status: int, body) -> str:
    """vLLM's error bodies: {"error": {"message": ...}} for 400/404, {"error": "Unauthorized"} for 401,
    {"detail": ...} from FastAPI for unknown paths."""
    if isinstance(body, dict):
        err = body.get("error", body.get("detail"))
        if isinstance(err, dict):
            return str(err.get("message") or err)
        if err:
            return str(err)
    return str(body)[:500] if body else f"HTTP {status}"


def chat_payload(messages: list[dict], model: str, params: dict, stream: bool) -> dict:
    """The JSON body of a chat completion (streamed ones ask for the usage chunk at the end)."""
    payload = {"model": model, "messages": messages, **params}
    if stream:
        payload.update(stream=True, stream_options={"include_usage": True})
    return payload


class ChatClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 600.0):
        import requests

        self.base_url = server_root(base_url)
        self.timeout = timeout
        self.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter()
        _guard_sockets(adapter)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"

    # -- transport -------------------------------------------------------------------------------
    def _send(self, method: str, path: str, limit: float, **kwargs):
        """The response (headers read, body not yet) and its ReadGuard; the caller closes both."""
        import requests

        guard = ReadGuard(limit)
        _local.guard = guard  # the connection attaches its socket (see _guard_sockets)
        error = None
        try:
            resp = self.session.request(method, self.base_url + path, stream=True, timeout=limit, **kwargs)
        except requests.RequestException as exc:
            error = self._transport_error(exc, guard)
        except BaseException:
            guard.close()
            raise
        finally:
            _local.guard = None
        if error is not None:
            guard.close()
            raise error  # outside the except: no __context__, which retry policies would read as transient
        guard.progress()  # the headers are in: the body gets a full period of its own
        if guard.sock is None:  # a session whose adapter was replaced: guard the body at least
            guard.attach(getattr(getattr(resp.raw, "connection", None), "sock", None))
        if resp.status_code >= 400:
            try:
                body = _json_or_text(self._read(resp, guard, MAX_ERROR_BODY, truncate=True))
            finally:
                guard.close()
                resp.close()
            raise ServerError(f"{resp.status_code}: {error_message(resp.status_code, body)}", resp.status_code,
                              body)
        return resp, guard

    def _too_slow(self, guard) -> TooSlow:
        return TooSlow(f"no complete reply from {self.base_url} within {guard.limit:g} s (the server sends "
                       "nothing, or too slowly)")

    def _transport_error(self, exc, guard) -> VllmMagicsError:
        import requests

        cause = _root_cause(exc)
        if isinstance(exc, requests.ConnectTimeout) or (
                isinstance(exc, requests.ConnectionError) and not _is_protocol_error(exc) and not guard.fired):
            return NoServer(f"nothing answers at {self.base_url}: {cause}")
        if guard.fired or isinstance(exc, requests.Timeout):
            return self._too_slow(guard)
        return BadReply(f"{self.base_url} did not answer with a usable HTTP reply ({cause})")

    def _read(self, resp, guard, limit: int, truncate: bool = False) -> bytes:
        """The whole body, at most `limit` bytes (more is BadReply, or cut with `truncate`)."""
        import requests

        chunks, size, error = [], 0, None
        try:
            for chunk in resp.iter_content(64 * 1024):
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    if truncate:
                        break
                    raise BadReply(f"{self.base_url} sent a reply larger than {limit // 2 ** 20} MB")
        except requests.RequestException as exc:
            error = self._transport_error(exc, guard)
        if error is not None:
            raise error
        if guard.fired:  # a body cut short by the guard can look complete
            raise self._too_slow(guard)
        return b"".join(chunks)[:limit]

    def _get_json(self, method: str, path: str, limit: float, max_bytes: int, **kwargs):
        resp, guard = self._send(method, path, limit, **kwargs)
        try:
            body = self._read(resp, guard, max_bytes)
        finally:
            guard.close()
            resp.close()
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            kind = resp.headers.get("Content-Type") or "no Content-Type"
            raise BadReply(f"{self.base_url}{path} sent something that is not JSON ({kind[:60]}): is it an "
                           "OpenAI-compatible server?") from None

    # -- the API -----------------------------------------------------------------------------
    def models(self) -> list[dict]:
        body = self._get_json("GET", "/v1/models", min(MODELS_TIMEOUT, self.timeout), 4 * 1024 * 1024)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or not all(isinstance(m, dict) and isinstance(m.get("id"), str) for m in data):
            raise BadReply(f"{self.base_url}/v1/models did not send a model list (no data: [{{id: ...}}])")
        return data

    def default_model(self) -> str:
        models = self.models()
        if not models:
            raise ServerError("the server lists no models")
        return models[0]["id"]

    def chat(self, messages: list[dict], model: str | None = None, **params) -> dict:
        payload = chat_payload(messages, model or self.default_model(), params, stream=False)
        reply = self._get_json("POST", "/v1/chat/completions", self.timeout, MAX_REPLY, json=payload)
        check_completion(reply, "message")
        return reply

    def stream_chat(self, messages: list[dict], model: str | None = None, **params) -> Iterator[dict]:
        """Yield each `data:` event of a streamed chat completion. An `{"error": ...}` event (vLLM
        sends one when the engine fails mid-stream) is yielded too: the caller decides. Each line must
        be complete within the timeout and MAX_SSE_LINE bytes."""
        payload = chat_payload(messages, model or self.default_model(), params, stream=True)
        resp, guard = self._send("POST", "/v1/chat/completions", self.timeout, json=payload)
        events = 0
        try:
            for event in iter_sse(self._lines(resp, guard)):
                events += 1
                yield event
            if guard.fired:
                raise self._too_slow(guard)
            if not events:
                kind = resp.headers.get("Content-Type") or "no Content-Type"
                raise BadReply(f"{self.base_url} sent no server-sent events ({kind[:60]}): is it an "
                               "OpenAI-compatible server?")
        finally:
            guard.close()
            resp.close()  # closing the connection makes vLLM abort the request

    def _lines(self, resp, guard) -> Iterator[bytes]:
        """Lines of the body, each ending the guard's wait; a line longer than MAX_SSE_LINE is BadReply
        (requests' iter_lines would buffer an endless one whole)."""
        import requests

        error = None
        try:
            yield from self._split_lines(_chunks(resp), guard)
        except requests.RequestException as exc:
            if not guard.fired and isinstance(exc, (requests.ConnectionError,
                                                    requests.exceptions.ChunkedEncodingError)):
                raise  # the connection was lost mid-answer: the caller keeps what arrived
            error = self._too_slow(guard) if guard.fired else BadReply(
                f"{self.base_url} broke off the stream ({_root_cause(exc)})")
        if error is not None:
            raise error

    def _split_lines(self, chunks, guard) -> Iterator[bytes]:
        pending = bytearray()
        for chunk in chunks:
            if b"\n" not in chunk:
                pending += chunk
                if len(pending) > MAX_SSE_LINE:
                    raise BadReply(f"{self.base_url} sent a line longer than {MAX_SSE_LINE // 2 ** 20} MB "
                                   "in the stream (not server-sent events)")
                continue
            lines = chunk.split(b"\n")
            lines[0] = bytes(pending) + lines[0]
            pending = bytearray(lines.pop())
            for line in lines:
                if len(line) > MAX_SSE_LINE:
                    raise BadReply(f"{self.base_url} sent a line longer than {MAX_SSE_LINE // 2 ** 20} MB "
                                   "in the stream (not server-sent events)")
                guard.progress()
                yield line.rstrip(b"\r")
        if pending:
            yield bytes(pending)


def iter_sse(lines) -> Iterator[dict]:
    """Parse server-sent events (bytes or str lines) into JSON objects until `data: [DONE]`. An event
    that is not JSON, or not of a chat completion chunk's shape, is BadReply."""
    for raw in lines:
        line = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        if data:
            try:
                event = json.loads(data)
            except (ValueError, RecursionError):
                raise BadReply(f"the server sent an event that is not JSON: {data[:60]!r}") from None
            check_completion(event, "delta")
            yield event


_TEXT_FIELDS = ("content", "reasoning", "reasoning_content", "role")


def check_completion(reply, field: str) -> None:
    """Raise BadReply unless `reply` has the shape the callers read: a dict whose `choices` (if any)
    are dicts with a dict `field` (message or delta) of text fields, and a dict `usage` (if any)."""
    problem = None
    if not isinstance(reply, dict):
        problem = f"a JSON {type(reply).__name__}, not an object"
    elif not isinstance(reply.get("choices", []), list):
        problem = "choices is not a list"
    elif not isinstance(reply.get("usage") or {}, dict):
        problem = "usage is not an object"
    else:
        for choice in reply.get("choices", []):
            part = choice.get(field) if isinstance(choice, dict) else None
            if not isinstance(choice, dict) or not isinstance(part or {}, dict):
                problem = f"a choice without a {field} object"
            elif any(not isinstance(part.get(k), (str, type(None))) for k in _TEXT_FIELDS if part):
                problem = f"a {field} whose text is not a string"
            elif not isinstance(choice.get("finish_reason"), (str, type(None))) or not isinstance(
                    choice.get("token_ids"), (list, type(None))):
                problem = "a choice with a malformed finish_reason or token_ids"
            if problem:
                break
    if problem:
        what = "an event" if field == "delta" else "a reply"
        raise BadReply(f"the server sent {what} that is not a chat completion ({problem})")


def _json_or_text(body: bytes):
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return body.decode("utf-8", errors="replace")


def _chunks(resp) -> Iterator[bytes]:
    """The body as it arrives, at most 64 KB at a time. requests' iter_content(None) would read an
    unchunked body whole, and a bounded size waits to fill it: urllib3 2's read1 does neither.
    urllib3's errors are raised as requests' (what iter_content does), which callers handle."""
    import requests
    from urllib3.exceptions import HTTPError, ProtocolError, ReadTimeoutError

    read1 = getattr(resp.raw, "read1", None)
    if read1 is None:  # urllib3 1.x: chunk by chunk for vLLM's chunked streams
        yield from resp.iter_content(64 * 1024)
        return
    try:
        while True:
            chunk = read1(64 * 1024)
            if not chunk:
                return
            yield chunk
    except ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from None
    except ReadTimeoutError as exc:
        raise requests.ConnectionError(exc) from None
    except HTTPError as exc:  # DecodeError, SSLError, ...
        raise requests.RequestException(exc) from None


def _root_cause(exc: BaseException) -> str:
    """The innermost exception's class name (BadStatusLine, ConnectionRefusedError, ...)."""
    seen = exc
    for _ in range(8):
        inner = next((a for a in getattr(seen, "args", ()) if isinstance(a, BaseException)), None)
        inner = inner or getattr(seen, "reason", None) or seen.__context__
        if not isinstance(inner, BaseException):
            break
        seen = inner
    return seen.__class__.__name__


def _is_protocol_error(exc) -> bool:
    """A connection was made but what came back is not HTTP (urllib3's ProtocolError: BadStatusLine,
    a reset mid-reply)."""
    from urllib3.exceptions import ProtocolError

    return any(isinstance(a, ProtocolError) for a in exc.args)


def _guard_sockets(adapter) -> None:
    """Make the adapter's connections hand their socket to this thread's ReadGuard before waiting for
    the response headers (a slow drip of headers otherwise blocks beyond any timeout)."""
    adapter.poolmanager.pool_classes_by_scheme = _guarded_pools()


@functools.lru_cache(maxsize=None)
def _guarded_pools() -> dict:
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class Attach:
        def getresponse(self, *args, **kwargs):
            guard = getattr(_local, "guard", None)
            if guard is not None:
                guard.attach(self.sock)
            return super().getresponse(*args, **kwargs)

    http_conn = type("GuardedHTTPConnection", (Attach, HTTPConnection), {})
    https_conn = type("GuardedHTTPSConnection", (Attach, HTTPSConnection), {})
    return {"http": type("GuardedHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
            "https": type("GuardedHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn})}
