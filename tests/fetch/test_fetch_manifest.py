"""The packaged manifest is complete and its pins match the verified shared files; bad manifests are named."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from fetch_fixtures import run_fetch, sha256, write_manifest

from itersg.catalog import VARIANTS
from itersg.cli import main
from itersg.data.fetch import MANIFEST, load_manifest
from itersg.errors import UserError
from itersg.workflow import paths

ROOT = Path(__file__).resolve().parents[2]
SHARED_VG = ROOT.parent / "shared" / "data" / "vg"
needs_shared_vg = pytest.mark.skipif(not SHARED_VG.is_dir(), reason="no shared/data/vg next to this checkout")


def test_packaged_manifest_is_complete():
    manifest = load_manifest()
    assert manifest.path == MANIFEST
    for entry in manifest.entries.values():
        assert entry.name and entry.kind in ("file", "zip") and entry.dest and entry.group
        assert all(url.startswith("https://") for url in entry.urls)
        if entry.manual:
            assert entry.instructions and entry.sha256 is None
        if entry.kind == "zip":
            assert entry.strip_components == 1 and entry.size and entry.sha256
    assert set(manifest.groups) == {"vg", "weights", "iterativesg", "egtr"}
    (folder,) = manifest.folders
    assert (folder.path, folder.expect_files) == ("vg/VG_100K", 108_249)


def test_packaged_manifest_places_what_the_pipeline_reads():
    manifest = load_manifest()
    params = {"data": {"root": "resources/vg"}}
    vg_dests = {f"resources/{e.dest}" for e in manifest.select(["vg"])}
    assert set(paths.vg_files(params).values()) | {paths.image_dir(params)} == vg_dests
    released = manifest.entries["iterativesg-detr-vg"]
    assert f"resources/{released.dest}" == paths.released_detr(params)
    assert f"resources/{manifest.entries['egtr-detr-vg'].dest}" == paths.released_deformable_detr(params)
    speaq = manifest.entries["speaq-final"]  # the released SpeaQ checkpoint, placed by hand
    assert speaq.manual and speaq.dest == "weights/speaq_final.pth" and speaq.group == "iterativesg"


def test_each_released_checkpoint_of_the_catalogue_is_a_manual_entry():
    manifest = load_manifest()
    released = {name: variant.released for name, variant in VARIANTS.items() if variant.released}
    assert released == {"r101-detr": "iterativesg-final", "r101-detr-speaq": "speaq-final",
                        "egtr-r50": "egtr-final"}
    assert all(manifest.entries[entry].manual for entry in released.values())


@needs_shared_vg
@pytest.mark.parametrize("name, file", [
    ("vg-dicts", "VG-SGG-dicts-with-attri.json"),
    ("vg-zeroshot", "zeroshot_triplet.pytorch"),
])
def test_pinned_checksums_match_the_verified_shared_files(name, file):
    entry = load_manifest().entries[name]
    data = (SHARED_VG / file).read_bytes()
    assert (entry.sha256, entry.size) == (sha256(data), len(data))
    assert entry.dest == f"vg/{file}"


@needs_shared_vg
def test_packaged_entry_verifies_the_shared_file_served_locally(tmp_path, server):
    entry = dataclasses.asdict(load_manifest().entries["vg-dicts"])
    entry["urls"] = [server.add("/dicts.json", (SHARED_VG / "VG-SGG-dicts-with-attri.json").read_bytes())]
    manifest = write_manifest(tmp_path / "manifest.yaml", [entry])
    assert run_fetch(manifest, tmp_path / "dest", "vg-dicts") == 0
    assert (tmp_path / "dest/vg/VG-SGG-dicts-with-attri.json").stat().st_size == 18_482


GOOD = {"name": "a", "kind": "file", "urls": ["https://example.org/a"], "dest": "x/a.bin"}


@pytest.mark.parametrize("change, field", [
    ({"colour": "red"}, "colour"),
    ({"kind": "tar"}, "kind"),
    ({"urls": []}, "urls"),
    ({"urls": ["ftp://example.org/a"]}, "urls"),
    ({"dest": "../a.bin"}, "dest"),
    ({"dest": "/a.bin"}, "dest"),
    ({"sha256": "ABC"}, "sha256"),
    ({"size": -1}, "size"),
    ({"manual": True}, "instructions"),
    ({"expect_files": 3}, "kind"),
    ({"name": "Has Space"}, "name"),
])
def test_bad_manifest_field_is_named(tmp_path, change, field):
    path = write_manifest(tmp_path / "m.yaml", [{**GOOD, **change}])
    with pytest.raises(UserError, match=f"`{field}`"):
        load_manifest(path)


def test_bad_manifest_structure(tmp_path):
    path = write_manifest(tmp_path / "m.yaml", [GOOD, GOOD])
    with pytest.raises(UserError, match="used twice"):
        load_manifest(path)
    path = write_manifest(tmp_path / "m.yaml", [GOOD], [{"path": "x", "expect_files": 1, "from": ["a"]}])
    with pytest.raises(UserError, match="`from`"):
        load_manifest(path)
    (tmp_path / "m.yaml").write_text("entries: [")
    with pytest.raises(UserError, match="not valid YAML"):
        load_manifest(tmp_path / "m.yaml")
    with pytest.raises(UserError, match="cannot read"):
        load_manifest(tmp_path / "missing.yaml")


def test_unknown_name_lists_the_inputs(capsys):
    assert main(["fetch", "vg-imgs", "--dest", "unused"]) == 2
    err = capsys.readouterr().err
    assert "unknown input 'vg-imgs'" in err and "vg-images-1" in err and "groups: vg, weights" in err


def test_list_shows_every_input(tmp_path, capsys):
    assert main(["fetch", "--list", "--dest", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in load_manifest().entries:
        assert name in out
    assert not list(tmp_path.iterdir())  # listing writes nothing


def test_names_or_all_are_required(capsys):
    assert main(["fetch", "--dest", "unused"]) == 2
    assert "name the inputs to fetch or pass --all" in capsys.readouterr().err


def test_manifest_yaml_is_plain_data():
    raw = yaml.safe_load(MANIFEST.read_text())
    assert raw["version"] == 1 and len(raw["entries"]) == len(load_manifest().entries)
