"""Tiny HTTP probes with the standard library (readiness polling runs often; `requests` costs
130-195 ms to import, http.client is already loaded in any Jupyter kernel)."""
from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit


def server_root(url: str) -> str:
    """`http://host:8000/v1/` -> `http://host:8000`: users paste the OpenAI base URL, the probes and
    /metrics live at the root."""
    return url.rstrip("/").removesuffix("/v1")


def _request(base_url: str, path: str, timeout: float, api_key: str | None = None,
             headers: dict | None = None):
    parts = urlsplit(base_url)
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(parts.hostname, parts.port, timeout=timeout)
    headers = dict(headers or {})
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    try:
        conn.request("GET", parts.path.rstrip("/") + path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def health_status(base_url: str, timeout: float = 1.0, headers: dict | None = None) -> int | None:
    """HTTP status of GET /health (200 ready, 503 engine dead), or None when nothing answers."""
    try:
        return _request(base_url, "/health", timeout, headers=headers)[0]
    except (OSError, http.client.HTTPException):
        return None


def get_json(base_url: str, path: str, timeout: float = 2.0, api_key: str | None = None):
    """(status, parsed JSON or None); raises OSError when nothing answers."""
    status, body = _request(base_url, path, timeout, api_key)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


def get_text(base_url: str, path: str, timeout: float = 2.0) -> tuple[int, str]:
    """(status, body as text); raises OSError when nothing answers."""
    status, body = _request(base_url, path, timeout)
    return status, body.decode("utf-8", errors="replace")
