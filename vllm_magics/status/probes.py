"""Tiny HTTP probes with the standard library (readiness polling runs often; `requests` costs
130-195 ms to import, http.client is already loaded in any Jupyter kernel).

Any server may be on the other end (`--url`): every probe ends within its `timeout` in total (see
status/deadline.py: a slow drip does not reset it), reads a capped body, and fails with an OSError:
`BadReply` when something answered but not usefully, another OSError when nothing answered.
"""
from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

from vllm_magics.errors import BadURL
from vllm_magics.status.deadline import ReadGuard

MAX_JSON = 4 * 1024 * 1024  # /version and /v1/models are a few hundred bytes from vLLM
MAX_METRICS = 8 * 1024 * 1024  # vLLM's /metrics is tens of KB


class BadReply(OSError):
    """Something answered, but not with a usable HTTP reply (not HTTP, too slow, too large)."""


def normalize_url(url: str) -> str:
    """`localhost:8000` -> `http://localhost:8000`; anything that is not an http(s) URL with a host
    raises BadURL (http.client would fail on it with an AttributeError)."""
    url = (url or "").strip()
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise BadURL(f"{url!r} is not an http:// or https:// URL")
    try:
        parts.port  # noqa: B018 (raises ValueError on a port out of range or not a number)
    except ValueError:
        raise BadURL(f"{url!r} has an invalid port") from None
    if not parts.hostname:
        raise BadURL(f"{url!r} has no host name")
    return url


def server_root(url: str) -> str:
    """`http://host:8000/v1/` -> `http://host:8000`: users paste the OpenAI base URL, the probes and
    /metrics live at the root."""
    url = normalize_url(url).rstrip("/")
    return url[:-3] if url.endswith("/v1") else url


def _request(base_url: str, path: str, timeout: float, api_key: str | None = None,
             headers: dict | None = None, limit: int = 0) -> tuple[int, bytes]:
    """(status, at most `limit` bytes of body); raises BadReply past `limit` or the deadline."""
    parts = urlsplit(normalize_url(base_url))
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(parts.hostname, parts.port, timeout=timeout)
    headers = dict(headers or {})
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    with ReadGuard(timeout) as guard:
        try:
            conn.connect()
            guard.attach(conn.sock)
            conn.request("GET", parts.path.rstrip("/") + path, headers=headers)
            resp = conn.getresponse()
            body = resp.read(limit + 1) if limit else b""
        except http.client.HTTPException as exc:
            if guard.fired:
                raise BadReply(f"no complete reply within {timeout:g} s") from None
            raise BadReply(f"not an HTTP reply ({exc.__class__.__name__})") from None
        except OSError as exc:
            if guard.fired or isinstance(exc, TimeoutError):
                raise BadReply(f"no complete reply within {timeout:g} s") from None
            raise
        finally:
            conn.close()
    if guard.fired:  # a body cut short by the guard can look complete
        raise BadReply(f"no complete reply within {timeout:g} s")
    if len(body) > limit:
        raise BadReply(f"a reply larger than {limit // 1024} KB")
    return resp.status, body


def get_status(base_url: str, path: str, timeout: float = 1.0, headers: dict | None = None) -> int:
    """HTTP status of GET path; the status line and headers are all it reads. Raises OSError."""
    return _request(base_url, path, timeout, headers=headers)[0]


def health_status(base_url: str, timeout: float = 1.0, headers: dict | None = None) -> int | None:
    """HTTP status of GET /health (200 ready, 503 engine dead), or None when nothing answers (or
    something that is not an HTTP server)."""
    try:
        return get_status(base_url, "/health", timeout, headers)
    except (OSError, BadURL):
        return None


def get_json(base_url: str, path: str, timeout: float = 2.0, api_key: str | None = None):
    """(status, parsed JSON or None when the body is not JSON); raises OSError when nothing answers
    (BadReply: something did, but not with a usable reply)."""
    status, body = _request(base_url, path, timeout, api_key, limit=MAX_JSON)
    try:
        return status, json.loads(body)
    except (ValueError, RecursionError):  # not JSON (UnicodeDecodeError is a ValueError), or nested too deep
        return status, None


def get_text(base_url: str, path: str, timeout: float = 2.0) -> tuple[int, str]:
    """(status, body as text); raises OSError when nothing answers."""
    status, body = _request(base_url, path, timeout, limit=MAX_METRICS)
    return status, body.decode("utf-8", errors="replace")
