"""PyngrokAgent's agent config file (tunnel/agent.py): the token is written 0600 into a folder only its
owner may write to, never through a link, and an existing folder's mode is never changed."""
from __future__ import annotations

import os
import stat

import pytest
import yaml

from vllm_magics.redact import Secret
from vllm_magics.tunnel.agent import PyngrokAgent

TOKEN = "2Vt9dTestTokenAbcdefghij_0123456789KLMNOPqrstu"


def agent(config_path) -> PyngrokAgent:
    return PyngrokAgent("/nonexistent/ngrok", config_path, startup_timeout=5)


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_new_folder_is_private_and_the_file_0600(tmp_path):
    a = agent(tmp_path / "new" / "deeper" / "agent.yml")
    a.write_config(Secret(TOKEN), {"inspect_db_size": -1})
    assert mode(tmp_path / "new" / "deeper") == 0o700 and mode(a.config_path) == 0o600
    assert yaml.safe_load(a.config_path.read_text()) == {
        "version": "3", "agent": {"authtoken": TOKEN, "inspect_db_size": -1}}
    assert [p.name for p in a.config_path.parent.iterdir()] == ["agent.yml"]  # no temporary file left


def test_a_shared_folder_is_refused_and_left_as_it_was(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp
    with pytest.raises(PermissionError, match="other users may write to the folder"):
        agent(shared / "agent.yml").write_config(Secret(TOKEN), {})
    assert mode(shared) == 0o1777 and list(shared.iterdir()) == []


def test_a_linked_or_foreign_folder_is_refused(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(private)
    with pytest.raises(PermissionError, match="symbolic link"):
        agent(tmp_path / "link" / "agent.yml").write_config(Secret(TOKEN), {})
    if os.getuid() == 0:  # only root can give a folder away
        foreign = tmp_path / "foreign"
        foreign.mkdir(mode=0o700)
        os.chown(foreign, 65534, 65534)
        with pytest.raises(PermissionError, match="belongs to another user"):
            agent(foreign / "agent.yml").write_config(Secret(TOKEN), {})


def test_a_planted_link_at_the_temporary_name_is_not_written_through(tmp_path):
    folder = tmp_path / "conf"
    folder.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("")
    (folder / f"agent.yml.{os.getpid()}.tmp").symlink_to(elsewhere)
    agent(folder / "agent.yml").write_config(Secret(TOKEN), {})
    assert elsewhere.read_text() == "" and TOKEN in (folder / "agent.yml").read_text()
