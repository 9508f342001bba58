import hashlib
import io
import json
import tarfile

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.naive_bayes import MultinomialNB
from sklearn.pipeline import make_pipeline

import gazelle
from gazelle import bundle as bundles
from gazelle.errors import BadRequest, BundleError, InvalidName, ModelError

TEXTS = ["taxi to conference", "hotel night in lyon", "lunch with client", "train ticket to paris",
         "office chairs", "printer paper", "dinner with team", "flight to berlin"]
LABELS = ["travel", "travel", "meals", "travel", "office", "office", "meals", "travel"]


@pytest.fixture(scope="module")
def text_model():
    return make_pipeline(TfidfVectorizer(), MultinomialNB()).fit(TEXTS, LABELS)


@pytest.fixture(scope="module")
def packed(text_model):
    return bundles.pack(text_model, name="accounts", sample=TEXTS[:3])


def _tar(members, *, kind=tarfile.REGTYPE, link=""):
    """A tar holding ``members`` (name -> bytes), written the way an attacker or a bug might."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.type = kind if name == "odd" else tarfile.REGTYPE
            info.linkname = link if name == "odd" else ""
            info.size = len(data) if info.type == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return buf.getvalue()


def _members(bundle):
    with tarfile.open(fileobj=io.BytesIO(bundle.data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def _with_manifest(bundle, **changes):
    members = _members(bundle)
    manifest = json.loads(members["gazelle.json"])
    manifest.update(changes)
    members["gazelle.json"] = json.dumps(manifest).encode()
    return _tar(members)


# -- writing ------------------------------------------------------------------------------------


def test_pack_twice_gives_the_same_digest(text_model, packed):
    again = bundles.pack(text_model, name="accounts", sample=TEXTS[:3])
    assert again.data == packed.data
    assert again.digest == packed.digest == "sha256:" + hashlib.sha256(packed.data).hexdigest()


def test_save_twice_writes_identical_files(text_model, tmp_path):
    first = gazelle.save(text_model, tmp_path / "a.tar", name="accounts", sample=TEXTS[:3])
    second = gazelle.save(text_model, tmp_path / "b.tar", name="accounts", sample=TEXTS[:3])
    assert first == tmp_path / "a.tar"
    assert first.read_bytes() == second.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar", "b.tar"]  # no temporary files left


def test_tar_is_deterministic_and_ordered(packed):
    with tarfile.open(fileobj=io.BytesIO(packed.data)) as tar:
        infos = tar.getmembers()
    assert [i.name for i in infos] == ["gazelle.json", "model.pkl"]
    assert all(i.mtime == 0 and i.uid == 0 and i.gid == 0 and i.uname == "" and i.gname == "" for i in infos)
    assert not any(i.pax_headers for i in infos)


def test_manifest_holds_every_key_and_what_the_model_answered(packed):
    m = packed.manifest
    assert set(m) == set(bundles.MANIFEST_KEYS) | set(bundles.OPTIONAL_MANIFEST_KEYS)
    assert m["format"] == 1 and m["name"] == "accounts" and m["gazelle"] == gazelle.__version__
    assert m["serializer"]["name"] == "cloudpickle" and m["serializer"]["protocol"] == 5
    assert m["method"] == "predict" and m["proba"] is True
    assert m["classes"] == ["meals", "office", "travel"]
    assert m["input_schema"] == {"type": "text"}
    assert m["output_schema"] == {"type": "labels", "dtype": "object"}
    assert m["sample"] == TEXTS[:3]
    assert m["expected"] == ["travel", "travel", "meals"]
    assert m["model_sha256"] == hashlib.sha256(packed.model_bytes()).hexdigest()
    assert any(r.startswith("scikit-learn==") for r in m["requirements"])
    assert m["requirements"] == sorted(m["requirements"])


def test_plain_function_is_called_directly():
    b = bundles.pack(lambda rows: [len(r) for r in rows], name="lengths", sample=["ab", "c"])
    assert b.manifest["method"] == "__call__" and b.manifest["proba"] is False
    assert b.manifest["expected"] == [2, 1]
    assert b.load_model()(["abc"]) == [3]


def test_tensor_sample_pins_numpy_for_the_runtime_codec():
    b = bundles.pack(lambda X: X.sum(axis=1), name="sums", sample=np.ones((2, 3)))
    assert b.manifest["expected"] == [3.0, 3.0]
    assert any(r.startswith("numpy==") for r in b.manifest["requirements"])


def test_no_sample_means_any_schema_and_no_expectation(text_model):
    m = bundles.pack(text_model, name="accounts").manifest
    assert m["input_schema"] == {"type": "any"} and m["sample"] is None and m["expected"] is None


def test_user_requirements_win(text_model):
    m = bundles.pack(text_model, name="accounts", requirements=["scipy==0.1"]).manifest
    assert "scipy==0.1" in m["requirements"]
    assert not any(r.startswith("scipy==1") for r in m["requirements"])


def test_model_that_raises_on_the_sample_says_so():
    def broken(rows):
        raise RuntimeError("no luck")

    with pytest.raises(ModelError, match="raised on the sample: RuntimeError: no luck"):
        bundles.pack(broken, name="broken", sample=["a"])


def test_unknown_method_and_invalid_name_are_refused(text_model):
    with pytest.raises(BadRequest, match="no method 'transform_all'"):
        bundles.pack(text_model, name="accounts", method="transform_all")
    with pytest.raises(InvalidName):
        bundles.pack(text_model, name="Not_Valid")


# -- reading ------------------------------------------------------------------------------------


def test_read_round_trip_from_bytes_and_path(packed, tmp_path):
    path = tmp_path / "b.tar"
    path.write_bytes(packed.data)
    for source in (packed.data, path, str(path)):
        b = bundles.read(source)
        assert b.digest == packed.digest and b.manifest == packed.manifest
    assert bundles.read_manifest(path) == packed.manifest
    assert list(bundles.read(path).load_model().predict(["taxi to the airport"])) == ["travel"]


def test_tampered_model_is_refused(packed):
    members = _members(packed)
    pickled = members["model.pkl"]
    middle = len(pickled) // 2
    members["model.pkl"] = pickled[:middle] + bytes([pickled[middle] ^ 1]) + pickled[middle + 1:]
    with pytest.raises(BundleError, match="does not match the model_sha256"):
        bundles.read(_tar(members))


def test_missing_member_is_refused(packed):
    members = _members(packed)
    del members["model.pkl"]
    with pytest.raises(BundleError, match="lacks model.pkl"):
        bundles.read(_tar(members))


def test_extra_member_is_refused(packed):
    members = _members(packed)
    members["notes.txt"] = b"hello"
    with pytest.raises(BundleError, match="unexpected member 'notes.txt'"):
        bundles.read(_tar(members))


def test_newer_format_asks_for_an_upgrade(packed):
    with pytest.raises(BundleError) as err:
        bundles.read(_with_manifest(packed, format=2))
    assert str(err.value) == "bundle format 2 is newer than this gazelle (reads 1): upgrade gazelle"


def test_unknown_format_is_refused(packed):
    with pytest.raises(BundleError, match="unknown format 'one'"):
        bundles.read(_with_manifest(packed, format="one"))


def test_bad_json_is_refused(packed):
    members = _members(packed)
    members["gazelle.json"] = b"{not json"
    with pytest.raises(BundleError, match="gazelle.json is not valid JSON"):
        bundles.read(_tar(members))


def test_manifest_missing_keys_is_refused(packed):
    members = _members(packed)
    manifest = json.loads(members["gazelle.json"])
    del manifest["requirements"]
    members["gazelle.json"] = json.dumps(manifest).encode()
    with pytest.raises(BundleError, match="lacks requirements"):
        bundles.read(_tar(members))


def test_deeply_nested_manifest_is_a_bundle_error_not_a_recursion_error(packed):
    members = _members(packed)
    members["gazelle.json"] = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(BundleError, match="nested too deeply"):
        bundles.read(_tar(members))


@pytest.mark.parametrize("changes, words", [
    ({"requirements": {"numpy": "1"}}, "field requirements must be a list, got an object"),
    ({"requirements": [1]}, "field requirements must list strings only"),
    ({"proba": "yes"}, "field proba must be true or false, got a string"),
    ({"sample": "abc"}, "field sample must be a list or null, got a string"),
    ({"input_schema": {"type": "matrix"}}, "field input_schema has an unknown type 'matrix'"),
    ({"input_schema": {"type": "tensor", "dtype": "float64", "shape": "4"}}, "input_schema.shape"),
    ({"input_schema": {"type": "table", "columns": [{"name": 3, "dtype": "int64"}]}}, "input_schema.columns"),
    ({"output_schema": []}, "field output_schema must be an object, got a list"),
])
def test_manifest_fields_of_the_wrong_type_are_bundle_errors_naming_the_field(packed, changes, words):
    with pytest.raises(BundleError) as caught:
        bundles.read(_with_manifest(packed, **changes))
    assert words in str(caught.value)


def test_invalid_name_in_manifest_is_a_bundle_error(packed):
    with pytest.raises(BundleError, match="invalid name"):
        bundles.read(_with_manifest(packed, name="../etc"))


@pytest.mark.parametrize("data", [b"", b"this is not a tar at all" * 40])
def test_not_a_tar_is_refused(data):
    with pytest.raises(BundleError, match="not a tar"):
        bundles.read(data)


def test_path_traversal_member_is_refused(packed):
    members = _members(packed)
    members["../model.pkl"] = members.pop("model.pkl")
    with pytest.raises(BundleError, match="unsafe path '../model.pkl'"):
        bundles.read(_tar(members))


def test_absolute_member_is_refused(packed):
    members = _members(packed)
    members["/etc/passwd"] = b"x"
    with pytest.raises(BundleError, match="unsafe path"):
        bundles.read(_tar(members))


def test_link_member_is_refused(packed):
    members = _members(packed)
    members["odd"] = b""
    with pytest.raises(BundleError, match="'odd' is a link"):
        bundles.read(_tar(members, kind=tarfile.SYMTYPE, link="/etc/passwd"))


def test_missing_file_is_a_bundle_error(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        bundles.read(tmp_path / "nothing.tar")


def test_load_model_rechecks_the_digest(packed):
    forged = bundles.Bundle(manifest={**packed.manifest, "model_sha256": "0" * 64}, data=packed.data)
    with pytest.raises(BundleError, match="does not match"):
        forged.load_model()


def test_read_manifest_of_a_file_makes_the_same_checks_as_read(packed, tmp_path):
    """The server checks stored bundles with read_manifest on the file, a member at a time."""
    tampered = _members(packed)
    pickled = tampered["model.pkl"]
    tampered["model.pkl"] = pickled[:-1] + bytes([pickled[-1] ^ 1])
    missing = _members(packed)
    del missing["model.pkl"]
    traversal = _members(packed)
    traversal["../model.pkl"] = traversal.pop("model.pkl")
    cases = {
        "tampered": (_tar(tampered), "does not match the model_sha256"),
        "missing": (_tar(missing), "lacks model.pkl"),
        "traversal": (_tar(traversal), "unsafe path"),
        "empty": (b"", "not a tar"),
        "garbage": (b"this is not a tar at all" * 40, "not a tar"),
        "truncated": (packed.data[:600], "truncated|damaged|not a tar"),   # inside the first member
    }
    for label, (data, words) in cases.items():
        path = tmp_path / f"{label}.tar"
        path.write_bytes(data)
        with pytest.raises(BundleError, match=words):
            bundles.read(data)
        with pytest.raises(BundleError, match=words):
            bundles.read_manifest(path)
        with open(path, "rb") as f, pytest.raises(BundleError, match=words):
            bundles.read_manifest(f)
    good = tmp_path / "good.tar"
    good.write_bytes(packed.data)
    with open(good, "rb") as f:
        assert bundles.read_manifest(f) == bundles.read_manifest(str(good)) == packed.manifest
    with pytest.raises(BundleError, match="is a directory"):
        bundles.read_manifest(tmp_path)
    with pytest.raises(BundleError, match="does not exist"):
        bundles.read_manifest(tmp_path / "nothing.tar")
