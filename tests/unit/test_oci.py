"""Images as values: deterministic layers, append/configure return new images, manifests and digests."""
from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from gazelle.server import oci

FILES = {"/opt/app/b.txt": b"bee", "/opt/app/a.txt": b"ay", "/opt/app/run.sh": (b"#!/bin/sh\n", 0o755)}


def _members(layer: oci.Layer) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer.read()))) as tar:
        return tar.getmembers()


def test_layer_tar_is_sorted_with_parents_mtime_zero_root_owner_and_fixed_modes() -> None:
    members = _members(oci.layer_from_files(FILES))
    assert [m.name for m in members] == ["opt", "opt/app", "opt/app/a.txt", "opt/app/b.txt", "opt/app/run.sh"]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}
    assert [oct(m.mode) for m in members] == ["0o755", "0o755", "0o644", "0o644", "0o755"]
    assert members[0].isdir() and members[2].isfile()


def test_gzip_header_carries_no_time_and_no_file_name() -> None:
    blob = oci.layer_from_files(FILES).read()
    assert blob[:4] == b"\x1f\x8b\x08\x00", "no FNAME flag"
    assert blob[4:8] == b"\x00\x00\x00\x00", "mtime 0"


def test_digests_describe_the_bytes() -> None:
    layer = oci.layer_from_files(FILES)
    assert layer.digest == oci.sha256(layer.read()) and layer.size == len(layer.read())
    assert layer.diff_id == oci.sha256(gzip.decompress(layer.read()))
    assert layer != oci.layer_from_files({**FILES, "/opt/app/a.txt": b"changed"})


def test_a_layer_written_to_a_file_is_the_same_layer_as_in_memory(tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(b"0123456789" * 100_000)
    in_memory = oci.layer_from_files({"/opt/big.bin": source.read_bytes()})
    on_disk = oci.layer_from_files({"/opt/big.bin": source}, out=tmp_path / "layer.tar.gz")
    assert on_disk == in_memory and on_disk.data is None and on_disk.path == tmp_path / "layer.tar.gz"
    assert on_disk.read() == in_memory.read()


def test_append_returns_a_new_image_and_leaves_the_base_as_it_was() -> None:
    base = oci.empty()
    layer = oci.layer_from_files(FILES, created_by="files")
    image = oci.append(base, layer)
    assert base.layers == () and json.loads(base.config_bytes)["rootfs"]["diff_ids"] == []
    assert image.layers == (layer,)
    assert image.config["rootfs"]["diff_ids"] == [layer.diff_id]
    assert image.config["history"] == [{"created": oci.EPOCH, "created_by": "files"}]
    assert image.digest != base.digest


def test_manifest_names_the_config_and_the_layers_with_oci_media_types() -> None:
    layer = oci.layer_from_files(FILES)
    image = oci.append(oci.empty(), layer)
    manifest = json.loads(image.manifest_bytes)
    assert manifest["mediaType"] == oci.OCI_MANIFEST and manifest["schemaVersion"] == 2
    assert manifest["config"] == {"mediaType": oci.OCI_CONFIG, "digest": oci.sha256(image.config_bytes),
                                  "size": len(image.config_bytes)}
    assert manifest["layers"] == [{"mediaType": oci.OCI_LAYER_GZIP, "digest": layer.digest, "size": layer.size}]
    assert image.digest == oci.sha256(image.manifest_bytes)


def test_configure_merges_env_and_labels_and_an_entrypoint_clears_the_base_cmd() -> None:
    base = oci.configure(oci.empty(), cmd=["python3"], env={"PATH": "/bin", "LANG": "C"}, labels={"a": "1"})
    image = oci.configure(base, entrypoint=["python3", "-m", "x"], env={"LANG": "C.UTF-8", "X": "1"},
                          labels={"b": "2"}, user="65532:65532", working_dir="/opt", exposed_ports=["8080/tcp"])
    run = image.config["config"]
    assert run["Entrypoint"] == ["python3", "-m", "x"] and "Cmd" not in run
    assert image.env == {"PATH": "/bin", "LANG": "C.UTF-8", "X": "1"}
    assert run["Labels"] == {"a": "1", "b": "2"}
    assert (run["User"], run["WorkingDir"], run["ExposedPorts"]) == ("65532:65532", "/opt", {"8080/tcp": {}})
    assert base.config["config"]["Cmd"] == ["python3"], "the base is unchanged"


def test_a_docker_base_keeps_its_layer_media_types_and_where_they_can_be_mounted_from() -> None:
    config = json.dumps({"architecture": "arm64", "os": "linux", "config": {"Env": ["PYTHON_VERSION=3.11.9"]},
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "1" * 64]}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": oci.DOCKER_MANIFEST,
                           "config": {"mediaType": oci.DOCKER_CONFIG, "digest": oci.sha256(config),
                                      "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                                       "digest": "sha256:" + "2" * 64, "size": 123}]}).encode()
    origin = oci.Origin("registry.example:5000", "library/python")
    base = oci.from_registry(manifest, config, origin)
    assert base.platform == ("linux", "arm64") and base.env["PYTHON_VERSION"] == "3.11.9"
    (layer,) = base.layers
    assert not layer.local and layer.origin == origin and layer.size == 123
    assert layer.media_type == "application/vnd.docker.image.rootfs.diff.tar.gzip"
    with pytest.raises(ValueError, match="descriptor only"):
        layer.read()
    image = oci.append(base, oci.layer_from_files(FILES))
    assert json.loads(image.manifest_bytes)["layers"][0]["mediaType"] == layer.media_type


def test_a_manifest_and_config_that_disagree_on_the_layer_count_are_refused() -> None:
    manifest = json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST, "layers": []}).encode()
    config = json.dumps({"rootfs": {"diff_ids": ["sha256:" + "1" * 64]}}).encode()
    with pytest.raises(ValueError, match="1 layers, the manifest 0"):
        oci.from_registry(manifest, config, oci.Origin("r", "x"))


@pytest.mark.parametrize("name", ["", "/", "/opt/../etc/passwd", "/opt//x", "/opt/./x"])
def test_file_paths_in_a_layer_must_be_clean(name: str) -> None:
    with pytest.raises(ValueError, match="not a clean absolute path"):
        oci.layer_from_files({name: b"x"})
