"""Result files are written atomically; a failed write is one clear line and leaves nothing behind."""

from __future__ import annotations

import errno

import pytest

from itersg.cli import main
from itersg.errors import UserError
from itersg.files import WriteError, atomic_output, check_writable_folder, undo_on_failure, write_text_atomic


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


def test_a_failed_write_removes_the_temporary_and_the_folders_made_for_it(tmp_path):
    with pytest.raises(WriteError, match=r"a/b/c\.bin: the disk is full"), \
            atomic_output(tmp_path / "a" / "b" / "c.bin") as handle:
        handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_a_write_larger_than_the_free_space_is_refused_before_it_starts(tmp_path):
    needed = r"big\.bin: the disk is full \(1000000\.0 GB needed, .* free\)"
    with pytest.raises(WriteError, match=needed), atomic_output(tmp_path / "big.bin", size_hint=10**15):
        raise AssertionError("not reached")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_block_of_appends_is_cut_back_to_where_it_started(tmp_path):
    log, curves = tmp_path / "log.jsonl", tmp_path / "curves"
    log.write_text("a\n")
    curves.mkdir()
    (curves / "loss.tsv").write_text("step\tloss\n1\t2.0\n")
    write_text_atomic(curves / "metrics.json", "{}\n")
    with pytest.raises(WriteError, match=r"curves/plots/lr\.tsv: the disk is full"), undo_on_failure(log, curves):
        with log.open("a") as handle:
            handle.write('{"iteration": 2}\n')
        with (curves / "loss.tsv").open("a") as handle:
            handle.write("2\t1.")
        write_text_atomic(curves / "metrics.json", '{"step": 2}\n')  # replaced whole: kept
        (curves / "plots").mkdir()
        (curves / "plots" / "lr.tsv").touch()
        raise OSError(errno.ENOSPC, "No space left on device")
    assert log.read_text() == "a\n" and (curves / "loss.tsv").read_text() == "step\tloss\n1\t2.0\n"
    assert (curves / "metrics.json").read_text() == '{"step": 2}\n'
    assert sorted(p.name for p in curves.iterdir()) == ["loss.tsv", "metrics.json"]


def test_a_read_only_folder_is_named_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr("itersg.files._is_read_only", lambda folder: folder == tmp_path)
    with pytest.raises(WriteError) as raised:
        check_writable_folder(tmp_path / "run")
    assert str(raised.value) == (f"{tmp_path / 'run'}: cannot write there: {tmp_path} is not writable (read-only "
                                 "file system); choose another output folder or make it writable, then run again")
    assert list(tmp_path.iterdir()) == []
