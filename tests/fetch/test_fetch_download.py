"""`itersg fetch` of plain files against a real local HTTP server that misbehaves on request."""

from __future__ import annotations

import json
import socket

import pytest
from fetch_fixtures import file_entry, payload, run_fetch, sha256, write_manifest

from itersg.data.fetch import LOCK_NAME, FetchOptions, fetch, load_manifest
from itersg.errors import UserError

SIZE = 300_000  # several read chunks are not needed: half of it is enough to test resuming


def _one_file(tmp_path, server, body: bytes, served: bytes | None = None, pin: bool = True, **how):
    """A manifest with one entry `blob` at weights/blob.pth, served at /blob.pth."""
    url = server.add("/blob.pth", served if served is not None else body, **how)
    entry = file_entry("blob", url, "weights/blob.pth", body if pin else None)
    return write_manifest(tmp_path / "manifest.yaml", [entry]), tmp_path / "dest"


def _leftovers(dest):
    """Files under DEST/.partial that are not rejected downloads."""
    partial = dest / ".partial"
    return sorted(p.name for p in partial.iterdir() if p.suffix != ".bad") if partial.exists() else []


def test_download_places_the_verified_file(tmp_path, server, capsys):
    body = payload(SIZE)
    manifest, dest = _one_file(tmp_path, server, body)
    assert run_fetch(manifest, dest, "blob") == 0
    assert (dest / "weights/blob.pth").read_bytes() == body
    assert _leftovers(dest) == []
    assert f"blob: verified (sha256 {sha256(body)})" in capsys.readouterr().out
    lock = json.loads((dest / LOCK_NAME).read_text())["entries"]["blob"]
    assert lock == {"dest": "weights/blob.pth", "size": SIZE, "sha256": sha256(body)}


def test_resume_after_a_dropped_connection(tmp_path, server):
    body = payload(SIZE, seed=1)
    manifest, dest = _one_file(tmp_path, server, body, drop_first=True)
    assert run_fetch(manifest, dest, "blob") == 0
    assert (dest / "weights/blob.pth").read_bytes() == body
    first, second = server.requests_for("/blob.pth")
    assert (first.range, first.status) == (None, 200)
    assert (second.range, second.status) == (f"bytes={SIZE // 2}-", 206)


def test_server_ignoring_range_restarts_the_download(tmp_path, server, capsys):
    body = payload(SIZE, seed=2)
    manifest, dest = _one_file(tmp_path, server, body, drop_first=True, honour_range=False)
    assert run_fetch(manifest, dest, "blob") == 0
    assert (dest / "weights/blob.pth").read_bytes() == body
    second = server.requests_for("/blob.pth")[1]
    assert (second.range, second.status) == (f"bytes={SIZE // 2}-", 200)
    assert "does not resume downloads; starting over" in capsys.readouterr().out


def test_http_404_is_one_clear_error(tmp_path, server, capsys):
    manifest, dest = _one_file(tmp_path, server, payload(100), status=404)
    assert run_fetch(manifest, dest, "blob") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"itersg: error: blob: HTTP 404 from {server.url('/blob.pth')}")
    assert "\n" not in err and "Traceback" not in err
    assert not (dest / "weights/blob.pth").exists()
    assert len(server.requests_for("/blob.pth")) == 1  # a 404 is not retried


def test_http_500_is_retried_until_the_file_comes(tmp_path, server):
    body = payload(5000, seed=3)
    manifest, dest = _one_file(tmp_path, server, body, fail_first=2)
    assert run_fetch(manifest, dest, "blob") == 0
    assert [r.status for r in server.requests_for("/blob.pth")] == [500, 500, 200]
    assert (dest / "weights/blob.pth").read_bytes() == body


def test_http_500_without_end_gives_up_after_the_attempts(tmp_path, server, capsys):
    manifest, dest = _one_file(tmp_path, server, payload(5000), fail_first=99)
    assert run_fetch(manifest, dest, "blob") == 2
    err = capsys.readouterr().err
    assert "HTTP 500" in err and "gave up after 3 attempts" in err
    assert len(server.requests_for("/blob.pth")) == 3
    assert not (dest / "weights/blob.pth").exists()


def test_a_silent_server_times_out_and_is_retried(tmp_path, server, capsys):
    body = payload(5000, seed=13)
    manifest, dest = _one_file(tmp_path, server, body, stall_first=True)
    assert run_fetch(manifest, dest, "blob", "--timeout", "2") == 0
    assert (dest / "weights/blob.pth").read_bytes() == body
    assert len(server.requests_for("/blob.pth")) == 2
    assert "timed out" in capsys.readouterr().out


def test_connection_refused_is_retried_then_reported(tmp_path, capsys):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/blob.pth"
    manifest = write_manifest(tmp_path / "manifest.yaml", [file_entry("blob", url, "weights/blob.pth")])
    assert run_fetch(manifest, tmp_path / "dest", "blob") == 2
    err = capsys.readouterr().err
    assert "connection failed" in err and "gave up after 3 attempts" in err
    assert not (tmp_path / "dest/weights/blob.pth").exists()


def test_wrong_checksum_is_rejected_and_final_path_untouched(tmp_path, server, capsys):
    body = payload(SIZE, seed=4)
    wrong = payload(SIZE, seed=5)
    manifest, dest = _one_file(tmp_path, server, body, served=wrong)
    final = dest / "weights/blob.pth"
    assert run_fetch(manifest, dest, "blob") == 2
    err = capsys.readouterr().err
    assert f"its sha256 is {sha256(wrong)}, expected {sha256(body)}" in err
    assert not final.exists()
    assert (dest / ".partial/blob.bad").read_bytes() == wrong
    # An old copy at the final path that does not match is left alone when the new download is bad too.
    final.parent.mkdir(parents=True)
    final.write_bytes(b"old")
    assert run_fetch(manifest, dest, "blob") == 2
    assert final.read_bytes() == b"old"


def test_truncated_file_is_rejected(tmp_path, server, capsys):
    body = payload(SIZE, seed=6)
    manifest, dest = _one_file(tmp_path, server, body, served=body[: SIZE - 1000])
    assert run_fetch(manifest, dest, "blob") == 2
    assert f"serves {SIZE - 1000:,} bytes, expected {SIZE:,}" in capsys.readouterr().err
    assert not (dest / "weights/blob.pth").exists()


def test_truncated_file_without_known_size_fails_the_checksum(tmp_path, server, capsys):
    body = payload(SIZE, seed=6)
    url = server.add("/blob.pth", body[:1000])
    entry = file_entry("blob", url, "weights/blob.pth", sha256=sha256(body))
    manifest = write_manifest(tmp_path / "manifest.yaml", [entry])
    assert run_fetch(manifest, tmp_path / "dest", "blob") == 2
    assert "its sha256 is" in capsys.readouterr().err
    assert not (tmp_path / "dest/weights/blob.pth").exists()


def test_disk_space_shortfall_downloads_nothing(tmp_path, server, capsys):
    manifest, dest = _one_file(tmp_path, server, payload(SIZE))
    status = run_fetch(manifest, dest, "blob", "--reserve", "1000000T")
    assert status == 2
    assert "not enough free space" in capsys.readouterr().err
    assert server.requests == []
    assert not (dest / "weights/blob.pth").exists() and _leftovers(dest) == []


def test_disk_space_is_checked_from_content_length_when_size_is_unknown(tmp_path, server):
    url = server.add("/blob.pth", payload(SIZE))
    manifest = write_manifest(tmp_path / "manifest.yaml", [file_entry("blob", url, "weights/blob.pth")])
    options = FetchOptions(free_space=lambda path: SIZE - 1, reserve=0)
    with pytest.raises(UserError, match="not enough free space"):
        fetch(["blob"], tmp_path / "dest", manifest=load_manifest(manifest), options=options)
    assert not (tmp_path / "dest/weights/blob.pth").exists()
    assert not (tmp_path / "dest/.partial/blob.part").exists()


def test_rerun_on_a_verified_file_does_nothing(tmp_path, server, capsys):
    body = payload(SIZE, seed=7)
    manifest, dest = _one_file(tmp_path, server, body)
    assert run_fetch(manifest, dest, "blob") == 0
    capsys.readouterr()
    assert run_fetch(manifest, dest, "blob") == 0
    assert f"blob: already verified (sha256 {sha256(body)})" in capsys.readouterr().out
    assert len(server.requests_for("/blob.pth")) == 1


def test_trust_on_first_use_records_then_rejects_a_changed_file(tmp_path, server, capsys):
    body = payload(SIZE, seed=8)
    manifest, dest = _one_file(tmp_path, server, body, pin=False)
    assert run_fetch(manifest, dest, "blob") == 0
    assert "recorded" in capsys.readouterr().out
    lock = json.loads((dest / LOCK_NAME).read_text())["entries"]["blob"]
    assert (lock["sha256"], lock["size"]) == (sha256(body), SIZE)

    changed = payload(SIZE, seed=9)
    server.routes["/blob.pth"].body = changed
    (dest / "weights/blob.pth").unlink()
    assert run_fetch(manifest, dest, "blob") == 2
    err = capsys.readouterr().err
    assert f"its sha256 is {sha256(changed)}, expected {sha256(body)}" in err and LOCK_NAME in err
    assert not (dest / "weights/blob.pth").exists()


def test_web_page_instead_of_the_file(tmp_path, server, capsys):
    page = b"<!DOCTYPE html><html><body>Sign in to continue</body></html>"
    manifest, dest = _one_file(tmp_path, server, payload(SIZE), served=page, content_type="text/html")
    assert run_fetch(manifest, dest, "blob") == 2
    err = capsys.readouterr().err
    assert "the server returned a web page" in err
    url, final = server.url("/blob.pth"), dest / "weights/blob.pth"
    assert f"download it by hand from {url} and put it at {final}" in err
    assert not (dest / "weights/blob.pth").exists()


def test_web_page_without_html_content_type_is_noticed(tmp_path, server, capsys):
    page = b"\n  <html><body>quota exceeded</body></html>"
    manifest, dest = _one_file(tmp_path, server, payload(SIZE), served=page, pin=False)
    assert run_fetch(manifest, dest, "blob") == 2
    assert "the server returned a web page" in capsys.readouterr().err
    assert not (dest / "weights/blob.pth").exists()


def test_mirrors_are_tried_in_order(tmp_path, server):
    body = payload(SIZE, seed=10)
    dead = server.add("/dead.pth", status=404)
    good = server.add("/good.pth", body)
    entry = file_entry("blob", dead, "weights/blob.pth", body, urls=[dead, good])
    manifest = write_manifest(tmp_path / "manifest.yaml", [entry])
    assert run_fetch(manifest, tmp_path / "dest", "blob") == 0
    assert (tmp_path / "dest/weights/blob.pth").read_bytes() == body


def test_manual_input_absent_says_where_to_put_it(tmp_path, server, capsys):
    entry = file_entry("ckpt", "https://drive.example/folder", "weights/ckpt.pth", manual=True,
                       instructions="Download model.pth from the folder")
    manifest = write_manifest(tmp_path / "manifest.yaml", [entry])
    dest = tmp_path / "dest"
    assert run_fetch(manifest, dest, "ckpt") == 2
    err = capsys.readouterr().err
    assert "must be downloaded by hand from https://drive.example/folder" in err
    assert f"Put it at {dest / 'weights/ckpt.pth'}" in err
    assert run_fetch(manifest, dest, "ckpt", "--skip-manual") == 0
    assert "skipped: --skip-manual" in capsys.readouterr().out


def test_manual_input_present_is_verified(tmp_path, capsys):
    body = payload(1000, seed=11)
    entry = file_entry("ckpt", "https://drive.example/folder", "weights/ckpt.pth", manual=True,
                       instructions="Download it", size=1000)
    manifest = write_manifest(tmp_path / "manifest.yaml", [entry])
    dest = tmp_path / "dest"
    (dest / "weights").mkdir(parents=True)
    (dest / "weights/ckpt.pth").write_bytes(body[:999])
    assert run_fetch(manifest, dest, "ckpt") == 2
    assert "has 999 bytes, expected 1,000" in capsys.readouterr().err
    (dest / "weights/ckpt.pth").write_bytes(body)
    assert run_fetch(manifest, dest, "ckpt") == 0
    assert json.loads((dest / LOCK_NAME).read_text())["entries"]["ckpt"]["sha256"] == sha256(body)


def test_a_released_checkpoint_says_how_to_evaluate_it(tmp_path, capsys):
    """The catalogue names the manifest entry of a variant's released checkpoint; once it is in place,
    fetch gives the evaluation command for that variant."""
    body = payload(1000, seed=13)
    entry = file_entry("speaq-final", "https://drive.example/speaq", "weights/speaq.pth", manual=True,
                       instructions="Download it", size=1000)
    manifest = write_manifest(tmp_path / "manifest.yaml", [entry])
    dest = tmp_path / "dest"
    (dest / "weights").mkdir(parents=True)
    (dest / "weights/speaq.pth").write_bytes(body)
    assert run_fetch(manifest, dest, "speaq-final") == 0
    assert (f"evaluate it with `itersg evaluate --variant r101-detr-speaq --checkpoint {dest / 'weights/speaq.pth'}"
            in capsys.readouterr().out)


def test_several_failures_are_all_reported(tmp_path, server, capsys):
    good = payload(1000, seed=12)
    entries = [
        file_entry("gone", server.add("/gone.pth", status=404), "weights/gone.pth", group="g"),
        file_entry("good", server.add("/good.pth", good), "weights/good.pth", good, group="g"),
        file_entry("also-gone", server.add("/also.pth", status=403), "weights/also.pth", group="g"),
    ]
    manifest = write_manifest(tmp_path / "manifest.yaml", entries)
    assert run_fetch(manifest, tmp_path / "dest", "g") == 2
    err = capsys.readouterr().err
    assert "HTTP 404" in err and "HTTP 403" in err
    assert "2 inputs are missing or failed: gone, also-gone" in err
    assert (tmp_path / "dest/weights/good.pth").read_bytes() == good


def test_a_destination_that_cannot_be_a_folder_is_one_line(tmp_path, server, capsys):
    manifest, _ = _one_file(tmp_path, server, payload(SIZE))
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert run_fetch(manifest, a_file, "blob") == 2
    err = capsys.readouterr().err
    assert err == f"itersg: error: {a_file}: is a file; --dest must be a folder (default: resources)\n"
    assert run_fetch(manifest, a_file / "sub", "blob") == 2
    assert "cannot create the folder (Not a directory)" in capsys.readouterr().err
    assert a_file.read_text() == "x"
