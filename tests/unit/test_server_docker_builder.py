"""What DockerBuilder hands the engine, read without an engine: the Dockerfile, the context, the labels."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from gazelle import bundle
from gazelle.errors import ConfigError
from gazelle.server.builders.docker import DockerBuilder, apt_packages, base_image


class Upper:
    def predict(self, rows):
        return [str(r).upper() for r in rows]


def never_called():
    raise AssertionError("the constructor and plan() must not talk to an engine")


@pytest.fixture(scope="module")
def packed() -> bundle.Bundle:
    return bundle.pack(Upper(), name="upper", sample=["a", "b"])


def make(tmp_path: Path, **kw) -> DockerBuilder:
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nnot a real one\n-----END CERTIFICATE-----\n")
    return DockerBuilder(never_called, "registry.example:5000/models",
                         base_images={"3.11": "registry.example:5000/python:3.11"}, ca_bundle=ca, **kw)


def stages(dockerfile: str) -> list[list[str]]:
    found: list[list[str]] = []
    for line in dockerfile.splitlines():
        if line.startswith("FROM "):
            found.append([])
        if line.strip():
            found[-1].append(line)
    return found


def test_the_dockerfile_installs_the_pins_in_a_stage_the_final_image_only_copies_from(tmp_path, packed):
    plan = make(tmp_path).plan(packed.data, packed.manifest, version=2)
    deps, final = stages(plan.dockerfile)
    assert deps[0] == "FROM registry.example:5000/python:3.11 AS deps"
    assert any("COPY gazelle-build/ca-certificates.crt" in line for line in deps)
    assert any("pip install --no-cache-dir" in line and "PIP_CERT=" in line for line in deps)
    assert final[0] == "FROM registry.example:5000/python:3.11"
    assert not any("ca-certificates" in line or "PIP_CERT" in line for line in final)
    assert "COPY --from=deps /opt/gazelle/site /opt/gazelle/site" in final
    assert "USER 10001:10001" in final
    assert final[-1] == 'ENTRYPOINT ["python3", "-m", "gazelle.runtime"]'


def test_the_requirements_are_the_exact_pins_and_the_runtimes_own(tmp_path, packed):
    plan = make(tmp_path).plan(packed.data, packed.manifest)
    requirements = plan.files["gazelle-build/requirements.txt"].decode().split()
    assert set(packed.manifest["requirements"]) <= set(requirements)
    assert all("==" in line for line in requirements)
    names = {line.split("==")[0].lower() for line in requirements}
    assert {"flask", "gunicorn", "orjson"} <= names


def test_the_labels_name_the_model_version_and_bundle(tmp_path, packed):
    labels = make(tmp_path).plan(packed.data, packed.manifest, version=7).labels
    assert labels["gazelle.model"] == "upper"
    assert labels["gazelle.version"] == "7"
    assert labels["gazelle.bundle-digest"] == packed.digest
    assert labels["org.opencontainers.image.version"] == "v7"


def test_the_context_holds_the_runtime_and_nothing_of_client_or_server(tmp_path, packed):
    names = tarfile.open(fileobj=make(tmp_path).plan(packed.data, packed.manifest).context()).getnames()
    assert "runtime/gazelle/runtime/serve.py" in names and "bundle.tar" in names and "Dockerfile" in names
    assert not [n for n in names if n.startswith(("runtime/gazelle/client", "runtime/gazelle/server"))]


def test_the_same_bundle_gives_the_same_context_bytes(tmp_path, packed):
    builder = make(tmp_path)
    first = builder.plan(packed.data, packed.manifest).context().getvalue()
    again = builder.plan(packed.data, packed.manifest).context().getvalue()
    assert first == again
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        assert {(m.mtime, m.uid, m.gid) for m in tar.getmembers()} == {(0, 0, 0)}


def test_apt_packages_go_into_both_stages(tmp_path, packed):
    plan = make(tmp_path, apt=["libgomp1", "libpq5"]).plan(packed.data, packed.manifest)
    for stage in stages(plan.dockerfile):
        assert any("apt-get install" in line and "libgomp1 libpq5" in line for line in stage)


def test_no_ca_bundle_leaves_pip_to_the_bases_trust(packed):
    plan = DockerBuilder(never_called, "r.example/m", base_images={"3.11": "b:3.11"},
                         ca_bundle=False).plan(packed.data, packed.manifest)
    assert "PIP_CERT" not in plan.dockerfile and "gazelle-build/ca-certificates.crt" not in plan.files


@pytest.mark.parametrize("raw, expected", [("libgomp1, libpq5", ("libgomp1", "libpq5")),
                                           ("libpq5=15.5-0+deb12u1 g++", ("libpq5=15.5-0+deb12u1", "g++")),
                                           ("", ())])
def test_apt_packages_read_a_comma_or_space_list(raw, expected):
    assert apt_packages(raw) == expected


@pytest.mark.parametrize("raw", ["libpq5; rm -rf /", "Lib", "$(id)"])
def test_an_apt_package_that_is_no_debian_name_is_refused_naming_the_setting(raw):
    with pytest.raises(ConfigError) as err:
        apt_packages(raw)
    assert "GAZELLE_DOCKER_APT_PACKAGES" in str(err.value)


def test_a_python_without_a_base_image_names_the_python_and_the_setting(packed):
    with pytest.raises(ConfigError) as err:
        base_image({**packed.manifest, "python": "3.9.18"}, {"3.11": "b:3.11"})
    assert "3.9" in str(err.value) and "GAZELLE_BASE_IMAGES" in str(err.value)


def test_without_base_images_the_default_is_the_slim_python_image(packed):
    assert base_image({**packed.manifest, "python": "3.12.1"}, {}) == "python:3.12-slim"
