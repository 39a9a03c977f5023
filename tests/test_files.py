"""Result files are written atomically; a failed write is one clear line and leaves nothing behind; no
command writes over its inputs, over a file it did not write or into a folder it does not own."""

from __future__ import annotations

import errno
import json

import h5py
import pytest
import torch
from PIL import Image

from itersg.cli import main
from itersg.errors import UserError
from itersg.files import (
    WriteError,
    atomic_output,
    check_output_file,
    check_output_folder,
    check_project_root,
    check_writable_folder,
    holds_only,
    output_mark,
    refuse_inputs,
    same_file,
    undo_on_failure,
    write_text_atomic,
)


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


# --- what a command may write over -------------------------------------------------------------------

def _marked_files(folder):
    """One file of each kind that carries a mark, with the mark."""
    files = {}
    files[folder / "a.json"] = "itersg-metrics"
    (folder / "a.json").write_text(json.dumps({"format": "itersg-metrics", "status": "ok"}))
    files[folder / "a.h5"] = "itersg-predictions"
    with h5py.File(folder / "a.h5", "w") as h5:
        h5.attrs["format"] = "itersg-predictions"
    files[folder / "a.pth"] = "itersg-replicated-decoder"
    torch.save({"format": "itersg-replicated-decoder", "model": {"w": torch.zeros(2)}}, folder / "a.pth")
    files[folder / "a.png"] = "itersg predict"
    from itersg.visualize.draw import encode

    (folder / "a.png").write_bytes(encode(Image.new("RGB", (4, 4)), "PNG", text={"Software": "itersg predict"}))
    files[folder / "a.html"] = "itersg report"
    (folder / "a.html").write_text('<!DOCTYPE html>\n<head><meta name="generator" content="itersg report">')
    files[folder / "a.md"] = "itersg docs"
    (folder / "a.md").write_text("<!-- GENERATED by `itersg docs`: do not edit -->\n# CLI\n")
    return files


def test_output_mark_reads_back_the_mark_of_every_kind_of_file(tmp_path):
    for path, mark in _marked_files(tmp_path).items():
        assert output_mark(path) == mark, path


def test_files_without_a_mark_have_none(tmp_path):
    (tmp_path / "plain.json").write_text('{"status": "ok"}')
    (tmp_path / "list.json").write_text('[{"format": "itersg-metrics"}]')
    (tmp_path / "broken.json").write_text('{"format": "itersg-metrics"')
    (tmp_path / "notes.md").write_text("# my notes about `itersg docs`\n")
    (tmp_path / "quote.md").write_text("# notes\nIt starts with <!-- GENERATED by `itersg docs` -->\n")
    torch.save({"model": {"w": torch.zeros(2)}}, tmp_path / "plain.pth")
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    with h5py.File(tmp_path / "plain.h5", "w") as h5:
        h5["x"] = [1, 2]
    Image.new("RGB", (4, 4)).save(tmp_path / "plain.png")
    (tmp_path / "random.bin").write_bytes(bytes(range(256)))
    (tmp_path / "folder").mkdir()
    for name in ("plain.json", "list.json", "broken.json", "notes.md", "quote.md", "plain.pth", "tensor.pth",
                 "plain.h5", "plain.png", "random.bin", "folder", "missing.json"):
        assert output_mark(tmp_path / name) is None, name


def test_same_file_sees_through_symbolic_and_hard_links(tmp_path):
    original = tmp_path / "a.h5"
    original.write_bytes(b"x")
    (tmp_path / "soft.h5").symlink_to(original)
    (tmp_path / "hard.h5").hardlink_to(original)
    (tmp_path / "copy.h5").write_bytes(b"x")
    assert same_file(original, tmp_path / "soft.h5") and same_file(tmp_path / "hard.h5", original)
    assert same_file(tmp_path / "sub" / ".." / "a.h5", original)
    assert not same_file(original, tmp_path / "copy.h5") and not same_file(original, tmp_path / "missing.h5")


def test_an_input_is_never_written_over(tmp_path):
    data = tmp_path / "vg"
    (data / "VG_100K").mkdir(parents=True)
    (data / "VG_100K" / "1.jpg").write_bytes(b"jpeg")
    (data / "a.h5").write_bytes(b"h5")
    (tmp_path / "link.h5").symlink_to(data / "a.h5")
    inputs = {"--data": [data / "a.h5", data / "VG_100K"], "--zero-shot": None}
    with pytest.raises(UserError, match=r"vg/a\.h5: is the --data input of this command; choose another --out "
                                         r"\(--force never writes over an input\)"):
        refuse_inputs([data / "a.h5"], inputs)
    with pytest.raises(UserError, match=r"link\.h5: would replace .*vg/a\.h5, the --data input"):
        refuse_inputs([tmp_path / "link.h5"], inputs)
    with pytest.raises(UserError, match=r"vg: would replace .*vg/a\.h5, the --data input"):
        refuse_inputs([data], inputs)  # a folder written whole
    refuse_inputs([data], inputs, inside=False)  # a folder written into: the images stay
    refuse_inputs([data / "b.h5", tmp_path / "a.h5"], inputs)


def test_an_output_file_is_refused_unless_the_command_wrote_it_or_force(tmp_path):
    own, other = tmp_path / "metrics.json", tmp_path / "notes.json"
    own.write_text(json.dumps({"format": "itersg-metrics"}))
    other.write_text(json.dumps({"format": "itersg-data-summary"}))
    check = {"marks": {"itersg-metrics"}, "what": "a metrics JSON written by itersg"}
    assert check_output_file(tmp_path / "new.json", **check) == tmp_path / "new.json"
    assert check_output_file(own, **check) == own
    with pytest.raises(UserError, match=r"notes\.json: exists and is not a metrics JSON written by itersg; choose "
                                         r"another --out, or pass --force to replace it"):
        check_output_file(other, **check)
    assert check_output_file(other, force=True, **check) == other
    with pytest.raises(UserError, match="is the --predictions input"):
        check_output_file(own, inputs={"--predictions": own}, force=True, **check)
    with pytest.raises(UserError, match="is a folder"):
        check_output_file(tmp_path, force=True, **check)


def test_an_output_folder_is_refused_unless_the_command_owns_it_or_force(tmp_path):
    def owned(folder):
        return holds_only(folder, ("run.log",))

    check = {"owned": owned, "what": "a run folder", "writes": ("run.log",)}
    assert check_output_folder(tmp_path / "new", **check) == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.log").write_text("earlier\n")
    (tmp_path / "run" / ".run.log.x1.tmp").write_text("another process writing\n")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "photo.jpg").write_bytes(b"jpeg")
    assert check_output_folder(tmp_path / "empty", **check) and check_output_folder(tmp_path / "run", **check)
    with pytest.raises(UserError, match=r"mine: is a non-empty folder that is not a run folder; choose another "
                                         r"--out, or pass --force to write into it"):
        check_output_folder(tmp_path / "mine", **check)
    with pytest.raises(UserError, match=r"mine: is a non-empty folder holding .*photo\.jpg, the IMAGE input of "
                                         r"this command, and not a run folder"):
        check_output_folder(tmp_path / "mine", inputs={"IMAGE": [tmp_path / "mine" / "photo.jpg"]}, **check)
    assert check_output_folder(tmp_path / "mine", force=True, **check) == tmp_path / "mine"
    with pytest.raises(UserError, match="mine: is the --data input"):
        check_output_folder(tmp_path / "mine", inputs={"--data": tmp_path / "mine"}, force=True, **check)
    with pytest.raises(UserError, match=r"run/run\.log: is the --init input"):
        check_output_folder(tmp_path / "run", inputs={"--init": tmp_path / "run" / "run.log"}, force=True, **check)


def test_holds_only_checks_names_and_marks(tmp_path):
    files = _marked_files(tmp_path)
    assert holds_only(tmp_path) and holds_only(tmp_path, ("a.*",))
    assert not holds_only(tmp_path, ("*.json", "*.h5"))
    assert holds_only(tmp_path, marks=set(files.values()))
    assert not holds_only(tmp_path, marks=set(files.values()) - {"itersg report"})
    (tmp_path / "sub").mkdir()
    assert not holds_only(tmp_path, marks=set(files.values()))  # a folder carries no mark


def test_only_a_checkout_of_the_project_is_a_project_root(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "other"\n')
    with pytest.raises(UserError, match="not a checkout of the itersg project"):
        check_project_root(tmp_path)
    with pytest.raises(UserError, match="not a checkout of the itersg project"):
        check_project_root(tmp_path / "missing")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "itersg"\n')
    assert check_project_root(tmp_path) == tmp_path

