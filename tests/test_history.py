"""The SQLite history: record, query, rebuild, two writers at once, pruning, no secret in the file."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from vllm_magics.ask.answer import Answer
from vllm_magics.ask.history import (History, HistoryError, default_history_path, entry_to_answer,
                                     resend_args, scrub_url)

KEY = "sk-test-9f8e7d6c5b4a39281706"


def make_answer(i: int = 0, text: str = "Paris.", **kw) -> Answer:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Capital of France? #{i}"}]
    a = Answer(text=text, reasoning="The user asks...", model="smol", finish_reason="stop",
               usage={"prompt_tokens": 12, "completion_tokens": 3}, prompt=messages[-1]["content"],
               request={"model": "smol", "messages": messages, "temperature": 0, "max_tokens": 40,
                        "stream": True, "stream_options": {"include_usage": True}}, index=kw.pop("index", None), **kw)
    a.started_at, a.first_token_at, a.ended_at = 100.0, 100.25, 101.5
    return a


def test_default_path_is_under_the_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_MAGICS_HOME", str(tmp_path / "home"))
    assert default_history_path() == tmp_path / "home" / "history.sqlite"
    with History() as h:
        assert h.path.exists()


def test_the_history_is_readable_by_its_owner_only(tmp_path, monkeypatch):
    import os
    import stat

    monkeypatch.setenv("VLLM_MAGICS_HOME", str(tmp_path / "cache" / "vllm_magics"))
    old = os.umask(0o022)  # the usual umask: without care, folders 0755 and sqlite's files 0644
    try:
        with History() as h:
            h.record(make_answer(), server_url="http://127.0.0.1:8000/v1", thread="geo")
            files = [h.path, h.path.with_name(h.path.name + "-wal"), h.path.with_name(h.path.name + "-shm")]
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}  # WAL and shm exist while open
    finally:
        os.umask(old)
    assert modes == {"history.sqlite": 0o600, "history.sqlite-wal": 0o600, "history.sqlite-shm": 0o600}
    for folder in (tmp_path / "cache", tmp_path / "cache" / "vllm_magics"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def test_a_history_folder_that_is_a_symlink_is_refused(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(HistoryError, match="symbolic link"):
        History(tmp_path / "link" / "h.sqlite")


def test_record_and_bring_back_an_answer(tmp_path):
    with History(tmp_path / "h.sqlite") as h:
        entry_id = h.record(make_answer(), server_url="http://127.0.0.1:8000/v1", thread="geo")
        entry = h.get(entry_id)
    assert entry["server_url"] == "http://127.0.0.1:8000/v1" and entry["thread"] == "geo"
    assert entry["params"] == {"temperature": 0, "max_tokens": 40}  # no transport fields
    assert entry["messages"][-1]["content"] == "Capital of France? #0" and entry["usage"]["completion_tokens"] == 3
    assert entry["time"] == pytest.approx(time.time(), abs=60)
    back = entry_to_answer(entry)
    assert (back.text, back.reasoning, back.finish_reason, back.model) == ("Paris.", "The user asks...", "stop", "smol")
    assert back.ttft == pytest.approx(0.25) and back.elapsed == pytest.approx(1.5)
    assert back.request["messages"] == entry["messages"] and back.request["max_tokens"] == 40
    messages, params, model = resend_args(entry)
    assert messages == entry["messages"] and params == {"temperature": 0, "max_tokens": 40} and model == "smol"


def test_last_search_and_thread(tmp_path):
    with History(tmp_path / "h.sqlite") as h:
        for i in range(30):
            h.record(make_answer(i, text="Rome." if i % 10 == 3 else "Paris."), thread="a" if i % 2 else "b")
        h.record(make_answer(99, text="", error="the server answered 503: 100%_busy"), thread="a")
        assert [e["prompt"][-3:] for e in h.last(3)] == ["#99", "#29", "#28"]
        assert sorted(e["prompt"] for e in h.search("rome")) == ["Capital of France? #13", "Capital of France? #23",
                                                                 "Capital of France? #3"]
        assert [e["error"] for e in h.search("100%_")] == ["the server answered 503: 100%_busy"]
        assert h.search("0%X") == [] and h.search("_busy") != []  # % and _ are literal
        assert len(h.by_thread("a", n=None)) == 16 and all(e["thread"] == "b" for e in h.by_thread("b"))
        # In one thread: its newest matches, however many newer ones the other thread has.
        assert [e["prompt"][-3:] for e in h.search("paris", n=2, thread="b")] == ["#28", "#26"]
        assert [e["prompt"][-3:] for e in h.search("rome", thread="b")] == []


def test_no_secret_reaches_the_file(tmp_path):
    path = tmp_path / "h.sqlite"
    a = make_answer(text=f"your key is {KEY}")
    a.request.update(api_key=KEY, extra_headers={"Authorization": f"Bearer {KEY}"}, hf_token=KEY,
                     metadata={"note": f"Bearer {KEY}"})
    a.request["messages"].append({"role": "user", "content": f"remember {KEY}"})
    a.error = f"401 for key {KEY}"
    with History(path, secrets=[KEY]) as h:
        entry = h.get(h.record(a, server_url=f"https://user:{KEY}@x.ngrok.app/v1?token={KEY}"))
    assert entry["params"]["api_key"] == "[redacted]" and entry["params"]["max_tokens"] == 40
    assert entry["server_url"] == "https://x.ngrok.app/v1"
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir())  # the database, its WAL and shm
    assert KEY.encode() not in data and KEY[3:].encode() not in data
    assert entry["messages"][-1]["content"] == "remember [redacted]" and entry["error"] == "401 for key [redacted]"
    assert entry["params"]["extra_headers"]["Authorization"] == "[redacted]" and entry["answer"] == "your key is [redacted]"
    assert entry["params"]["metadata"]["note"] == "[redacted]"


def test_scrub_url_of_hostile_input():
    assert scrub_url("http://[::1]:8000/v1?x=1#f") == "http://[::1]:8000/v1"
    assert scrub_url("http://host:99999/") == "[redacted]"  # an invalid port: drop it all


def test_pruning_keeps_the_newest(tmp_path):
    with History(tmp_path / "h.sqlite", max_rows=50, prune_every=10) as h:
        for i in range(205):
            h.record(make_answer(i))
        assert h.count() <= 50 + 10
        h.prune()
        assert h.count() == 50 and h.last(1)[0]["prompt"].endswith("#204")
    with History(tmp_path / "b.sqlite", max_rows=None, max_bytes=200_000, prune_every=50) as h:
        for i in range(1000):
            h.record(make_answer(i, text="x" * 1000))
        h.prune()
        size = h.path.stat().st_size
        assert h.count() < 1000 and h.last(1)[0]["prompt"].endswith("#999")
    assert size < 400_000  # freed pages went back (incremental vacuum), not just onto a free list


def test_a_damaged_file_is_one_clear_error(tmp_path):
    bad = tmp_path / "h.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(HistoryError, match="cannot be used .*move it away"):
        History(bad)


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    path = tmp_path / "h.sqlite"
    script = textwrap.dedent(f"""
        import sys
        from vllm_magics.ask.answer import Answer
        from vllm_magics.ask.history import History
        h = History({str(path)!r}, max_rows=None)
        sys.stdin.readline()  # both start writing together
        for i in range(500):
            a = Answer(text=f"answer {{i}}", prompt=f"writer {{sys.argv[1]}} item {{i}}", request={{"messages": []}})
            assert h.record(a, thread=sys.argv[1]) is not None, h.last_write_error
        h.close()
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, name], stdin=subprocess.PIPE) for name in ("k1", "k2")]
    for p in procs:
        p.stdin.write(b"go\n")
        p.stdin.flush()
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    with History(path, max_rows=None) as h:
        assert h.count() == 1000
        for name in ("k1", "k2"):
            prompts = {e["prompt"] for e in h.by_thread(name, n=None)}
            assert prompts == {f"writer {name} item {i}" for i in range(500)}
        assert len(h.search("writer k2 item 49", n=None)) == 11  # 49 and 490..499


def test_an_unusable_folder_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(HistoryError, match="cannot open the history at"):
        History(blocker / "sub" / "h.sqlite")
