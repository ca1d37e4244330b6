"""server.json names the server's temp folder, which stop() deletes: the file is untrusted (anyone who can
write the runtime folder could name any folder), so VllmServer.find accepts only a folder start() could
have made (tempfile.mkdtemp(prefix="vllm-magics-"))."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from vllm_magics.server.manager import our_tmp_dir


@pytest.fixture
def made():
    d = Path(tempfile.mkdtemp(prefix="vllm-magics-"))
    yield d
    for p in (d.with_name(d.name + "-link"), d):
        if p.is_symlink():
            p.unlink()
        elif p.exists():
            os.rmdir(p)


def test_the_folder_start_makes_is_accepted(made):
    assert our_tmp_dir(str(made)) == made


def test_anything_else_is_refused(made, tmp_path):
    victim = tmp_path / "precious"
    victim.mkdir()
    link = made.with_name(made.name + "-link")  # in the temp folder, our name, but a symlink to elsewhere
    link.symlink_to(victim, target_is_directory=True)
    for value in (str(victim),                                  # any folder
                  str(tmp_path / "vllm-magics-x"),              # our name, not directly in the temp folder
                  tempfile.gettempdir(),                        # the temp folder itself
                  str(Path(tempfile.gettempdir()) / "other"),   # another name there
                  str(made) + "/..",                            # a way out
                  str(link),
                  str(made) + "-gone",                          # no such folder
                  "vllm-magics-relative", "", "/", "a\0b", None, 3, ["/"], {"p": "/"}):
        assert our_tmp_dir(value) is None, value
    assert victim.is_dir()


@pytest.mark.skipif(os.getuid() != 0, reason="giving a folder to another user needs root")
def test_a_folder_of_another_user_is_refused(made):
    os.chown(made, 65534, 65534)
    assert our_tmp_dir(str(made)) is None


def _environ(pid: int) -> dict:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def test_torchs_kernel_cache_stays_where_a_bare_vllm_keeps_it(tmp_path, monkeypatch):
    """The server's TMPDIR is its own folder, which stop() deletes. torch.compile's kernel cache would follow
    it (inductor's default is under the temp folder) and every start would compile its kernels again: it
    stays where a bare `vllm serve` keeps it. A user's own TORCHINDUCTOR_CACHE_DIR wins."""
    import getpass

    from helpers import free_port, wait_until
    from test_process import standin_server

    def started_env(home):
        server = standin_server(home, free_port())
        server.start()
        try:
            # (right after the fork, before the exec, the process still has the supervisor's environment)
            assert wait_until(lambda: _environ(server.pid).get("TMPDIR") == str(server.tmp_dir), 60)
            return _environ(server.pid), server.tmp_dir
        finally:
            server.stop()

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    env, private = started_env(tmp_path / "a")
    assert env["TMPDIR"] == str(private) and Path(private).parent == Path(tempfile.gettempdir())
    assert env["TORCHINDUCTOR_CACHE_DIR"] == os.path.join(tempfile.gettempdir(), "torchinductor_" + getpass.getuser())
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    env, _ = started_env(tmp_path / "b")
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")
