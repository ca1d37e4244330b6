"""Chat over HTTP with an OpenAI-compatible server (vLLM first): models, chat, streaming chat.

Plain module, no IPython. `requests` is imported when a client is made, not when this module is.

    c = ChatClient("http://127.0.0.1:8000", api_key="...")
    c.chat([{"role": "user", "content": "Hi"}])["choices"][0]["message"]["content"]
    for chunk in c.stream_chat([...]): ...     # parsed `data:` events, [DONE] ends the iterator
"""
from __future__ import annotations

import json
from typing import Iterator

from vllm_magics.errors import VllmMagicsError
from vllm_magics.status.probes import server_root


class ServerError(VllmMagicsError):
    """The server answered with an error status; `status` and vLLM's own message are kept."""

    def __init__(self, message: str, status: int | None = None, body=None):
        super().__init__(message)
        self.status = status
        self.body = body


class NoServer(VllmMagicsError):
    pass


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
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"

    def _check(self, resp):
        if resp.status_code >= 400:
            try:
                body = resp.json()
            except ValueError:
                body = resp.text
            raise ServerError(f"{resp.status_code}: {error_message(resp.status_code, body)}", resp.status_code, body)
        return resp

    def _post(self, path: str, payload: dict, stream: bool = False):
        import requests

        try:
            resp = self.session.post(self.base_url + path, json=payload, stream=stream, timeout=self.timeout)
        except requests.ConnectionError as exc:
            raise NoServer(f"nothing answers at {self.base_url}: {exc.__class__.__name__}") from None
        return self._check(resp)

    def models(self) -> list[dict]:
        import requests

        try:
            resp = self.session.get(self.base_url + "/v1/models", timeout=10)
        except requests.ConnectionError:
            raise NoServer(f"nothing answers at {self.base_url}") from None
        return self._check(resp).json().get("data", [])

    def default_model(self) -> str:
        models = self.models()
        if not models:
            raise ServerError("the server lists no models")
        return models[0]["id"]

    def chat(self, messages: list[dict], model: str | None = None, **params) -> dict:
        payload = chat_payload(messages, model or self.default_model(), params, stream=False)
        return self._post("/v1/chat/completions", payload).json()

    def stream_chat(self, messages: list[dict], model: str | None = None, **params) -> Iterator[dict]:
        """Yield each `data:` event of a streamed chat completion. An `{"error": ...}` event (vLLM
        sends one when the engine fails mid-stream) is yielded too: the caller decides."""
        payload = chat_payload(messages, model or self.default_model(), params, stream=True)
        resp = self._post("/v1/chat/completions", payload, stream=True)
        try:
            yield from iter_sse(resp.iter_lines(chunk_size=None, decode_unicode=False))
        finally:
            resp.close()  # closing the connection makes vLLM abort the request


def iter_sse(lines) -> Iterator[dict]:
    """Parse server-sent events (bytes or str lines) into JSON objects until `data: [DONE]`."""
    for raw in lines:
        line = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        if data:
            yield json.loads(data)
