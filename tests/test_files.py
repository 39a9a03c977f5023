"""Result files are written atomically; a failed write is one clear line and leaves nothing behind."""

from __future__ import annotations

import pytest

from itersg.cli import main
from itersg.errors import UserError
from itersg.files import write_text_atomic


def test_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = write_text_atomic(tmp_path / "sub" / "a.json", "{}\n")
    write_text_atomic(path, '{"b": 1}\n')
    assert path.read_text() == '{"b": 1}\n' and [p.name for p in path.parent.iterdir()] == ["a.json"]
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_folder_given_for_the_file(tmp_path):
    with pytest.raises(UserError, match="is a folder; give the path of the file to write"):
        write_text_atomic(tmp_path, "x")


def test_an_unwritable_place_is_one_line_and_keeps_the_old_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="file is a file, not a folder; choose another output path"):
        write_text_atomic(blocker / "a.json", "x")
    assert blocker.read_text() == "not a folder" and sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize("command", [
    ["replicate-decoder", "--detr", "{missing}", "--out", "{folder}"],
    ["metrics", "--data", "{folder}", "--predictions", "{missing}", "--out", "{folder}"],
])
def test_commands_refuse_a_folder_as_their_output_file(tmp_path, capsys, command):
    args = [a.format(folder=tmp_path, missing=tmp_path / "missing.pth") for a in command]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err == f"itersg: error: {tmp_path}: is a folder; give the path of the file to write\n"
    assert list(tmp_path.iterdir()) == []
