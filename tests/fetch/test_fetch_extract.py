"""Safe unpacking of zip archives, alone and as part of `itersg fetch`."""

from __future__ import annotations

import json
import stat
import zipfile

import pytest
from fetch_fixtures import payload, run_fetch, sha256, write_manifest

from itersg.data.extract import extract_zip
from itersg.errors import UserError


def make_zip(path, files: dict[str, bytes], special: dict[str, int] | None = None):
    """A zip of regular ``files`` plus members whose unix mode is ``special[name]`` (e.g. a symlink)."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(zipfile.ZipInfo(name), data)
        for name, mode in (special or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = mode << 16
            archive.writestr(info, "/etc/passwd")
    return path


def _images(first: int, count: int, top: str) -> dict[str, bytes]:
    return {f"{top}/{i}.jpg": payload(100 + i, seed=i) for i in range(first, first + count)}


def test_unpacks_into_a_flat_folder(tmp_path):
    files = {"VG_100K/": b"", **_images(1, 3, "VG_100K")}
    archive = make_zip(tmp_path / "images.zip", files)
    folder = tmp_path / "dest/vg/VG_100K"
    assert extract_zip(archive, folder, strip_components=1, expect_files=3) == 3
    assert sorted(p.name for p in folder.iterdir()) == ["1.jpg", "2.jpg", "3.jpg"]
    assert (folder / "2.jpg").read_bytes() == files["VG_100K/2.jpg"]
    assert [p.name for p in folder.parent.iterdir()] == ["VG_100K"]  # no scratch folder left


def _escapes(tmp_path) -> dict[str, tuple[dict[str, bytes], dict[str, int]]]:
    """Archive contents (regular files, special members) that try to write outside the destination."""
    return {
        "parent": ({"../../../evil.txt": b"x"}, {}),
        "absolute": ({f"{tmp_path}/abs_evil.txt": b"x"}, {}),
        "symlink": ({}, {"link_evil": stat.S_IFLNK | 0o777}),
        "device": ({}, {"dev_evil": stat.S_IFCHR | 0o644}),
        "fifo": ({}, {"fifo_evil": stat.S_IFIFO | 0o644}),
    }


@pytest.mark.parametrize("kind", ["parent", "absolute", "symlink", "device", "fifo"])
def test_unsafe_members_are_refused_before_anything_is_written(tmp_path, kind):
    files, special = _escapes(tmp_path)[kind]
    archive = make_zip(tmp_path / "bad.zip", {"top/good.txt": b"good", **files}, special)
    folder = tmp_path / "a/dest/folder"
    with pytest.raises(UserError, match="unsafe archive member"):
        extract_zip(archive, folder)
    assert not folder.exists()
    assert list(tmp_path.rglob("*evil*")) == []


def test_a_symlinked_subfolder_cannot_lead_outside(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = tmp_path / "dest/folder"
    folder.mkdir(parents=True)
    (folder / "sub").symlink_to(outside)
    archive = make_zip(tmp_path / "a.zip", {"sub/x.txt": b"x"})
    with pytest.raises(UserError, match="outside"):
        extract_zip(archive, folder)
    assert list(outside.iterdir()) == []


def test_wrong_file_count_and_disk_shortfall_write_nothing(tmp_path):
    archive = make_zip(tmp_path / "a.zip", _images(1, 2, "top"))
    folder = tmp_path / "dest/folder"
    with pytest.raises(UserError, match="holds 2 files, expected 3"):
        extract_zip(archive, folder, strip_components=1, expect_files=3)
    with pytest.raises(UserError, match="not enough free space"):
        extract_zip(archive, folder, strip_components=1, free_space=lambda path: 200)
    assert not folder.exists()


def test_not_a_zip(tmp_path):
    (tmp_path / "a.zip").write_bytes(payload(1000))
    with pytest.raises(UserError, match="not a readable zip archive"):
        extract_zip(tmp_path / "a.zip", tmp_path / "folder")


def _image_manifest(tmp_path, server, expect_files: int):
    """Two archives (top folders VG_100K and VG_100K_2) that unpack into one folder."""
    entries = []
    for index, (top, first, count) in enumerate([("VG_100K", 1, 3), ("VG_100K_2", 4, 2)], start=1):
        path = make_zip(tmp_path / f"images{index}.zip", {f"{top}/": b"", **_images(first, count, top)})
        data = path.read_bytes()
        url = server.add(f"/images{index}.zip", data)
        entries.append({
            "name": f"images-{index}", "group": "vg", "kind": "zip", "urls": [url], "dest": "vg/VG_100K",
            "size": len(data), "sha256": sha256(data), "strip_components": 1, "unpacked_size": 10_000,
        })
    folders = [{"path": "vg/VG_100K", "expect_files": expect_files, "from": ["images-1", "images-2"]}]
    return write_manifest(tmp_path / "manifest.yaml", entries, folders)


def test_fetch_unpacks_both_archives_into_one_folder(tmp_path, server, capsys):
    manifest = _image_manifest(tmp_path, server, expect_files=5)
    dest = tmp_path / "dest"
    assert run_fetch(manifest, dest, "vg") == 0
    folder = dest / "vg/VG_100K"
    assert sorted(p.name for p in folder.iterdir()) == [f"{i}.jpg" for i in range(1, 6)]
    assert not (dest / "archives/images-1.zip").exists()
    out = capsys.readouterr().out
    assert "unpacked 3 files" in out and "unpacked 2 files" in out and "5 files, as expected" in out
    lock = json.loads((dest / "fetch.lock.json").read_text())["entries"]
    assert (lock["images-1"]["files"], lock["images-2"]["files"]) == (3, 2)

    assert run_fetch(manifest, dest, "vg") == 0
    assert "images-1: already verified" in capsys.readouterr().out
    assert len(server.requests) == 2

    (folder / "5.jpg").unlink()  # a lost image makes the next run unpack again
    assert run_fetch(manifest, dest, "images-2", "--keep-archives") == 0
    assert (folder / "5.jpg").exists() and (dest / "archives/images-2.zip").exists()
    assert run_fetch(manifest, dest, "images-1", "images-2") == 0
    assert len(server.requests) == 3  # the kept archive was reused, not downloaded again


def test_fetch_reports_a_wrong_image_count(tmp_path, server, capsys):
    manifest = _image_manifest(tmp_path, server, expect_files=6)
    assert run_fetch(manifest, tmp_path / "dest", "vg") == 2
    assert "holds 5 files after unpacking images-1, images-2; expected 6" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["parent", "absolute", "symlink"])
def test_fetch_refuses_an_unsafe_archive(tmp_path, server, capsys, kind):
    files, special = _escapes(tmp_path)[kind]
    data = make_zip(tmp_path / "bad.zip", {"top/good.txt": b"good", **files}, special).read_bytes()
    entry = {"name": "bad", "kind": "zip", "urls": [server.add("/bad.zip", data)], "dest": "stuff",
             "sha256": sha256(data)}
    manifest = write_manifest(tmp_path / "manifest.yaml", [entry])
    dest = tmp_path / "a/dest"
    assert run_fetch(manifest, dest, "bad") == 2
    assert "bad: unsafe archive member" in capsys.readouterr().err
    assert not (dest / "stuff").exists()
    assert list(tmp_path.rglob("*evil*")) == []
