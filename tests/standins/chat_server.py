"""Chat-server stand-ins on real loopback sockets, for the tests of %%ask's batches (test_ask_unit.py)
and comparisons (test_compare.py, test_compare_real.py). Their replies have the shape of vLLM 0.32's
(see each class); a request can be held open until `release`, and a held request whose client went
away is counted in `gone` (vLLM aborts such a request: listen_for_disconnect in vllm 0.32's
vllm/entrypoints/serve/utils/api_utils.py).

    server = SseStandIn()            # or ChatStandIn()
    ... ChatClient(server.url) ...
    server.close()
"""
from __future__ import annotations

import http.server
import json
import select
import socket
import threading

ATTACK = ('<script>document.body.setAttribute("data-pwned", "script")</script>'
          '<img src=x onerror="document.body.setAttribute(\'data-pwned\', \'img\')">')


class HoldingServer:
    """What both stand-ins share: the server thread, holding a request, closing."""

    release: threading.Event
    gone: list

    def _serve(self, handler) -> None:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _hold(self, conn) -> None:
        while not self.release.wait(0.02):
            if select.select([conn], [], [], 0)[0] and conn.recv(1, socket.MSG_PEEK) == b"":
                self.gone.append(conn)  # the client closed: vLLM would abort the request here
                return

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def serving(server: HoldingServer):
    """For a pytest fixture: `yield from serving(SseStandIn())` (closed after the test)."""
    try:
        yield server
    finally:
        server.close()


class ChatStandIn(HoldingServer):
    """A minimal OpenAI-compatible chat server on a real socket. Replies have the shape of vLLM 0.32's
    (tests/fixtures/sse holds recorded streams). A prompt containing "slow" is held until `release`;
    meanwhile the handler watches its socket and counts clients that went away. `keys`: the
    Authorization header of each request."""

    def __init__(self, log=None):
        self.log = log if log is not None else []
        self.release, self.held, self.gone, self.keys = threading.Event(), [], [], []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                outer.log.append(("request", prompt))
                outer.keys.append(self.headers.get("Authorization"))
                if "slow" in prompt:
                    outer.held.append(prompt)
                    return outer._hold(self.connection)
                reply = {"object": "chat.completion", "model": body["model"], "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": f"echo {prompt}"},
                     "finish_reason": "stop"}], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._serve(Handler)


class SseStandIn(HoldingServer):
    """An OpenAI-compatible chat server whose behaviour is picked by the model name. Streams have the
    shape of vLLM 0.32's (tests/fixtures/sse/vllm-0.32.0-cpu-reasoning-stream.txt: `delta.reasoning`
    then `delta.content`, a last chunk with finish_reason, a usage chunk with no choices, [DONE]);
    the 404 body is vLLM's for an unknown model (recorded on the rig with curl).

      echo-*   the answer "<model> heard: <last user message>" word by word
      reason   reasoning, then an answer
      system   the answer is the system message and the temperature it got
      hostile  model-written HTML in the reasoning and the answer (ATTACK)
      long     `repeat` words of answer
      hold     one word, then waits for `release` (counts clients that went away)
      missing  404: no such model
    """

    def __init__(self, repeat: int = 2000):
        self.release = threading.Event()
        self.held, self.gone, self.requests = [], [], []
        self.in_flight = self.max_in_flight = 0
        self.repeat = repeat
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                models = {"object": "list", "data": [{"id": "echo-a", "object": "model", "root": "echo-a",
                                                      "parent": None}]}
                self._send(200, json.dumps(models).encode(), "application/json")

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.requests.append(body)
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                try:
                    outer.answer(self, body)
                finally:
                    with outer.lock:
                        outer.in_flight -= 1

            def _send(self, status, data, kind):
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._serve(Handler)

    def answer(self, handler, body):
        model, messages = body["model"], body["messages"]
        if model == "missing":
            error = {"error": {"message": f"The model `{model}` does not exist.", "type": "NotFoundError",
                               "param": "model", "code": 404}}
            return handler._send(404, json.dumps(error).encode(), "application/json")
        reasoning, text = "", f"{model} heard: {messages[-1]['content']}"
        if model == "reason":
            reasoning, text = "Let me think it over.", "Paris."
        elif model == "system":
            system = [m["content"] for m in messages if m["role"] == "system"]
            text = f"system={system} temperature={body.get('temperature')}"
        elif model == "hostile":
            reasoning, text = "Thinking " + ATTACK, "Answer " + ATTACK
        elif model == "long":
            text = "word " * self.repeat
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.end_headers()
        pieces = [("reasoning", w + " ") for w in reasoning.split(" ") if reasoning] + \
            [("content", w + " ") for w in text.split(" ")]
        for i, (field, piece) in enumerate(pieces):
            self._event(handler, model, {"choices": [{"index": 0, "delta": {field: piece}, "finish_reason": None}]})
            if model == "hold" and i == 1:
                self.held.append(model)
                return self._hold(handler.connection)
        self._event(handler, model, {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        self._event(handler, model, {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": len(pieces)}})
        handler.wfile.write(b"data: [DONE]\n\n")

    @staticmethod
    def _event(handler, model, fields):
        event = {"id": "chatcmpl-0", "object": "chat.completion.chunk", "created": 0, "model": model, **fields}
        handler.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        handler.wfile.flush()
