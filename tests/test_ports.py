"""vllm_magics.server.ports on real sockets: loopback over IPv4 and IPv6, a real listening process for
port_holder (read back from the kernel's /proc/net/tcp{,6} and /proc/<pid>/fd), the top of the port range."""
from __future__ import annotations

import array
import contextlib
import os
import socket
import subprocess
import sys

import pytest

from vllm_magics.server.ports import (PortHolder, next_free_port, port_holder, port_holders, port_is_free,
                                      port_listening)

V4, V6 = "127.0.0.1", "::1"
# A listener in a process of its own; it prints its port, and ends when its stdin closes.
LISTENER = ("import socket, sys; fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET; "
            "s = socket.socket(fam); s.bind((sys.argv[1], 0)); s.listen(); "
            "print(s.getsockname()[1], flush=True); sys.stdin.read()")


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


@contextlib.contextmanager
def listening(host: str, port: int = 0):
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.bind((host, port))
        s.listen()
        yield s.getsockname()[1]


@contextlib.contextmanager
def listener_process(host: str):
    proc = subprocess.Popen([sys.executable, "-c", LISTENER, host, "vm-ports-test-marker"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield proc, int(proc.stdout.readline())
    finally:
        proc.stdin.close()
        proc.wait()
        proc.stdout.close()


@pytest.mark.parametrize("host", [V4, V6])
def test_a_listened_port_is_taken_and_a_closed_one_free(host):
    with listening(host) as port:
        assert port_is_free(host, port) is False
    assert port_is_free(host, port) is True


def test_an_ipv6_host_is_bound_as_ipv6():
    # A v6-only listener on ::1 does not take 127.0.0.1's port, and the other way round.
    with socket.socket(socket.AF_INET6) as s:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((V6, 0))
        s.listen()
        port = s.getsockname()[1]
        assert not port_is_free(V6, port)
        assert port_is_free(V4, port)


def test_a_port_in_time_wait_is_free_like_for_uvicorn():
    # The side that closes first keeps the connection in TIME_WAIT (RFC 9293 3.6). A server that set
    # SO_REUSEADDR, as uvicorn does (and so the vLLM that ran before), leaves connections that do not block
    # a new bind with SO_REUSEADDR on Linux; a bind without it fails.
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((V4, 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection((V4, port))
        conn, _ = server.accept()
        conn.close()  # the server side closes first: its end (port) goes to TIME_WAIT
        client.recv(1)
        client.close()
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind((V4, port))  # the premise: without SO_REUSEADDR the port is still taken
    assert port_is_free(V4, port) is True


def test_a_bad_host_is_not_free():
    assert port_is_free("192.0.2.1", 8000) is False  # TEST-NET-1: not an address of this machine


def _hold_two_adjacent_ports(stack: contextlib.ExitStack) -> tuple[int, int]:
    # Above the kernel's ephemeral range (32768-60999 by default), where no connection takes a port by chance.
    for first in range(61001, 65000, 7):
        attempt = contextlib.ExitStack()
        try:
            pair = attempt.enter_context(listening(V4, first)), attempt.enter_context(listening(V4, first + 1))
        except OSError:
            attempt.close()
            continue
        stack.enter_context(attempt)
        return pair
    pytest.skip("no two adjacent free ports between 61001 and 65000")


def test_next_free_port_skips_taken_ports_and_counts_attempts():
    with contextlib.ExitStack() as held:
        first, second = _hold_two_adjacent_ports(held)
        assert next_free_port(V4, first, attempts=1) is None
        assert next_free_port(V4, first, attempts=2) is None
    assert next_free_port(V4, first, attempts=1) == first
    with listening(V4, first):
        assert next_free_port(V4, first, attempts=2) == second
        assert next_free_port(V4, first) == second  # the default tries more than one port


def test_next_free_port_stops_at_the_top_of_the_range():
    top = 65535
    if not port_is_free(V4, top) or not port_is_free(V4, top - 1):
        pytest.skip("the top two ports are in use on this machine")
    with listening(V4, top - 1):
        assert next_free_port(V4, top - 1, attempts=50) == top
        with listening(V4, top):
            assert next_free_port(V4, top - 1, attempts=50) is None
            assert next_free_port(V4, top, attempts=0) is None
    assert next_free_port(V4, top) == top


@pytest.mark.parametrize("host", [V4, V6])
def test_port_holder_names_the_listening_process(host):
    # The same port number may also be held on the other address family by another process (vLLM's
    # engine listens on random ports of 127.0.0.1): ours must be among the holders, not the only one.
    with listener_process(host) as (proc, port):
        others = [h for h in port_holders(port) if h.pid != proc.pid]
        holder = next(h for h in port_holders(port) if h.pid == proc.pid)
        assert "vm-ports-test-marker" in holder.command and holder.command.startswith(sys.executable)
        assert holder.describe() == f"pid {proc.pid} ({holder.command[:120]})"
        if not others:
            assert port_holder(port) == holder
    assert proc.pid not in [h.pid for h in port_holders(port)]


def test_port_holder_ignores_sockets_that_do_not_listen():
    with listening(V4) as port:
        client = socket.create_connection((V4, port))
        with client:
            local = client.getsockname()[1]  # an established socket, not a listening one
            assert port_holder(local) is None
            with socket.socket() as bound:  # bound to a port but not listening
                bound.bind((V4, 0))
                assert port_holder(bound.getsockname()[1]) is None
            assert port_holder(port).pid == os.getpid()


@contextlib.contextmanager
def held_by_no_process(listener: socket.socket):
    """Leaves `listener` open but in no process's fd table: its descriptor sits only in a unix-socket message
    in flight (SCM_RIGHTS, unix(7)). It is in /proc/net/tcp and in no /proc/<pid>/fd, the same case as a
    socket of another user's process that we may not inspect."""
    left, right = socket.socketpair()
    try:
        left.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [listener.fileno()]))])
        listener.close()
        yield
    finally:
        _, fds, _, _ = right.recvmsg(1, socket.CMSG_SPACE(array.array("i").itemsize))
        for _, _, data in fds:
            os.close(array.array("i", data)[0])
        left.close()
        right.close()


def test_a_listener_no_process_holds_is_reported_as_not_visible():
    listener = socket.socket()
    listener.bind((V4, 0))
    listener.listen()
    port = listener.getsockname()[1]
    with held_by_no_process(listener):
        assert port_holders(port) == [PortHolder(None, "")]
        holder = port_holder(port)
        assert holder == PortHolder(None, "")
        assert holder.describe() == "another process (not visible to this user)"


def test_port_holders_names_each_process_sharing_the_socket_once():
    # A listening socket inherited by a child (as a forked server's workers do) is held by both.
    with socket.socket() as ours:
        ours.bind((V4, 0))
        ours.listen()
        port = ours.getsockname()[1]
        again = os.dup(ours.fileno())  # two descriptors of one socket in one process: still one entry
        child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE,
                                 pass_fds=(ours.fileno(),))
        try:
            holders = port_holders(port)
            assert sorted(h.pid for h in holders) == sorted([os.getpid(), child.pid])
            assert all(h.command for h in holders)
        finally:
            os.close(again)
            child.stdin.close()
            child.wait()
        assert [h.pid for h in port_holders(port)] == [os.getpid()]
    assert port_holders(port) == []


def test_a_hidden_socket_beside_a_visible_one_is_reported_too():
    # IPv4 and IPv6 listeners on one port: two sockets; we can name the holder of one only.
    with listening(V4) as port, socket.socket(socket.AF_INET6) as v6:
        v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        v6.bind((V6, port))
        v6.listen()
        assert [h.pid for h in port_holders(port)] == [os.getpid()]  # one process holds both: one entry
        with held_by_no_process(v6):
            assert port_holders(port) == [PortHolder(os.getpid(), port_holders(port)[0].command),
                                          PortHolder(None, "")]


def test_describe_shortens_the_command_and_shows_unknown_as_a_question_mark():
    assert PortHolder(7, "").describe() == "pid 7 (?)"
    assert PortHolder(7, "x" * 200).describe() == f"pid 7 ({'x' * 120})"
    assert PortHolder(None, "vllm serve").describe() == "another process (not visible to this user)"


def test_known_pids_are_not_looked_up_again():
    # The manager passes its server's pids: only sockets none of them holds are looked for elsewhere.
    with listener_process(V4) as (proc, port):
        assert port_holders(port, known=(proc.pid,)) == []  # it holds the only socket
        assert [h.pid for h in port_holders(port, known=(os.getpid(),))] == [proc.pid]
        assert [h.pid for h in port_holders(port, known=(os.getpid(), proc.pid, 999999999))] == []
        with socket.socket(socket.AF_INET6) as v6:
            v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            v6.bind((V6, port))
            v6.listen()
            # the child's socket is known, ours is not: we are the one found
            assert [h.pid for h in port_holders(port, known=(proc.pid,))] == [os.getpid()]


def test_port_listening_sees_any_address_and_only_listeners():
    with listening(V6) as port:
        assert port_listening(port) is True
        client = socket.create_connection((V6, port))
        with client:
            assert port_listening(client.getsockname()[1]) is False  # an established socket
    assert port_listening(port) is False


def test_the_default_search_gives_up_after_50_ports():
    # Bounded, so that a crowded machine gives a clear "no free port follows it" instead of a long scan.
    for first in range(61001, 64900, 97):
        with contextlib.ExitStack() as held:
            try:
                for p in range(first, first + 50):
                    held.enter_context(listening(V4, p))
            except OSError:
                continue
            if not port_is_free(V4, first + 50):
                continue
            assert next_free_port(V4, first) is None
            assert next_free_port(V4, first, attempts=51) == first + 50
            return
    pytest.skip("no 51 adjacent free ports between 61001 and 65000")


def test_sockets_held_by_different_processes_are_all_accounted_for():
    # IPv4 in this process, IPv6 in a child: both named, and no hidden holder invented.
    with listener_process(V6) as (proc, port), listening(V4, port):
        holders = port_holders(port)
        assert sorted(h.pid for h in holders) == sorted([os.getpid(), proc.pid])


def test_a_descriptor_gone_while_reading_is_skipped_not_the_rest():
    # Listing /proc/self/fd shows the descriptor of the listing itself, closed by the time it is read
    # (proc(5)); it takes the lowest free number (POSIX open()). Free low numbers below our socket's, so that
    # the vanished descriptor comes before it.
    spare = [os.open(os.devnull, os.O_RDONLY) for _ in range(3)]
    try:
        with listening(V4) as port:
            for fd in spare:
                os.close(fd)
            spare = []
            assert [h.pid for h in port_holders(port)] == [os.getpid()]
    finally:
        for fd in spare:
            os.close(fd)
