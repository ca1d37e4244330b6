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
