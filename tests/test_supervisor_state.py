"""The supervisor's state file is saved from two threads (the main loop, and the parent watchdog whose log
note can report a failed write). Unlocked, both wrote the same temporary file and json.dump iterated the
dict while the other thread added keys: "dictionary changed size during iteration" (a RuntimeError,
which ended the thread) or a file cut in the middle."""
from __future__ import annotations

import json
import threading

from vllm_magics.server.supervisor import StateFile


def test_saves_from_two_threads_never_fail_and_always_leave_whole_json(tmp_path):
    path = tmp_path / "state.json"
    state = StateFile(path, {"pid": None, "exit_code": None})
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def hammer(name: str) -> None:
        start.wait()
        try:
            for i in range(300):
                state.save(**{f"{name}-{i}": "x" * 200})  # a new key each time: the dict grows under json.dump
        except BaseException as exc:  # noqa: BLE001 - what would have ended the thread
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in ("main", "watchdog")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    saved = json.loads(path.read_text())
    assert {f"{n}-{i}" for n in ("main", "watchdog") for i in range(300)} <= saved.keys()
    assert not list(tmp_path.glob("*.tmp"))  # no temporary file left behind


def test_defaults_fill_only_what_is_not_set(tmp_path):
    path = tmp_path / "state.json"
    state = StateFile(path, {"exit_code": None})
    state.save({"ended_at": 1.0}, exit_code=3)
    state.save({"ended_at": 2.0}, exit_code=0, log_complete=True)  # the first exit time stays
    assert json.loads(path.read_text()) == {"exit_code": 0, "ended_at": 1.0, "log_complete": True}
