"""An https:// server given by --url that drips its TLS handshake a byte at a time. The read guard is
attached after connect(), where http.client does the handshake; what bounds the handshake is the ssl
module: SSLSocket.do_handshake() keeps one deadline of the socket's timeout for the whole handshake, not
per recv (CPython Modules/_ssl.c, _ssl__SSLSocket_do_handshake_impl: `deadline = _PyDeadline_Init(timeout)`;
"_ssl.c: The handshake operation timed out"). This test holds the probe to that: one line, at the
probe's own limit, while the server is still dripping."""
from __future__ import annotations

import socket
import threading

import pytest

from vllm_magics.status.probes import BadReply, get_status

DRIP_BYTES = 400  # at 0.05 s each, 20 s of handshake: far past the probe's 0.5 s
STEP_S = 0.05


@pytest.fixture
def dripping_tls_server():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    stop = threading.Event()
    sent = []

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)  # the ClientHello
            # A TLS handshake record header announcing 16 KB, then its body one byte at a time.
            conn.sendall(b"\x16\x03\x03\x40\x00")
            for _ in range(DRIP_BYTES):
                if stop.wait(STEP_S):
                    return
                try:
                    conn.sendall(b"\x02")
                except OSError:  # the client gave up
                    return
                sent.append(1)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield listener.getsockname()[1], sent
    stop.set()
    listener.close()
    t.join(5)


def test_a_dripped_tls_handshake_ends_at_the_probe_deadline(dripping_tls_server):
    port, sent = dripping_tls_server
    with pytest.raises(BadReply) as caught:
        get_status(f"https://127.0.0.1:{port}", "/health", timeout=0.5)
    assert str(caught.value) == "no complete reply within 0.5 s"
    assert len(sent) < DRIP_BYTES  # it ended while the server was still dripping, not at its end
