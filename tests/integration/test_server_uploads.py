"""Uploads: a 300 MB bundle goes to disk through a real ``gazelle server`` (gunicorn) without the worker
holding it in memory; a full disk (a small tmpfs as the data directory, really full) answers 507 and
the CLI says so in one sentence."""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import threading
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from gazelle.bundle import MANIFEST, MODEL, pack
from tests.integration._server import kill_runtimes, start_server

pytestmark = pytest.mark.integration

MB = 1 << 20
RSS_ALLOWANCE = 64 * MB


def lengths(rows: list[str]) -> list[int]:
    return [len(r) for r in rows]


def write_bundle(path: Path, name: str, model_bytes: int) -> Path:
    """A bundle whose model.pkl is ``model_bytes`` long, written in chunks (never whole in memory).

    The manifest is a real one; model.pkl is zeros with the digest the manifest states. The server
    never unpickles, so every check it makes on an upload passes."""
    manifest = dict(pack(lengths, name=name, sample=["a", "bb"]).manifest)
    chunk = bytes(MB)
    hasher = hashlib.sha256()
    for _ in range(model_bytes // MB):
        hasher.update(chunk)
    manifest["model_sha256"] = hasher.hexdigest()
    raw = json.dumps(manifest).encode()

    class Zeros:
        def __init__(self, size: int) -> None:
            self.left = size

        def read(self, n: int = -1) -> bytes:
            n = self.left if n < 0 else min(n, self.left)
            self.left -= n
            return bytes(n)

    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
        info = tarfile.TarInfo(MODEL)
        info.size = model_bytes // MB * MB
        tar.addfile(info, Zeros(info.size))  # type: ignore[arg-type]
    return path


def test_a_300_mb_upload_keeps_the_worker_within_64_mb_of_idle(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "big.tar", "big", 300 * MB)
    # The check stage waits, so what is measured is the upload alone, not the job that follows it.
    server = start_server(tmp_path / "data", env={"GAZELLE_TEST_STAGE_DELAY": "check=600"})
    try:
        with server.client() as c:
            assert c.get("/api/v1/models").status_code == 200   # warm: imports and first request done
        [worker] = server.workers()
        idle = worker.memory_info().rss
        peak, done = idle, threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, worker.memory_info().rss)
                done.wait(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            with server.client() as c, bundle.open("rb") as body:
                answer = c.post("/api/v1/models/big/versions", content=body,
                                headers={"Content-Type": "application/x-tar"}, timeout=300)
        finally:
            done.set()
            sampler.join()
        assert answer.status_code == 202, answer.text
        stored = list((server.data_dir / "bundles").glob("sha256-*.tar"))
        assert [p.stat().st_size for p in stored] == [bundle.stat().st_size]
        print(f"worker RSS: idle {idle / MB:.0f} MB, peak {peak / MB:.0f} MB")
        assert peak - idle < RSS_ALLOWANCE, f"worker RSS grew by {(peak - idle) / MB:.0f} MB"
    finally:
        server.kill()
        kill_runtimes(server.data_dir)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 6 MB tmpfs: a disk that really fills up. Needs root (mount)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_answers_507_leaves_nothing_behind_and_the_cli_says_so(
        small_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from gazelle.cli import main as cli_main
    from gazelle.client import configure
    from gazelle.server.app import create_app
    from gazelle.server.settings import Settings

    app = create_app(Settings(data_dir=small_disk / "data", run_jobs=False))
    state = app.extensions["gazelle"]
    token = (small_disk / "data" / "token").read_text().strip()
    big = write_bundle(tmp_path / "big.tar", "big", 16 * MB)
    try:
        with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://gazelle") as c:
            answer = c.post("/api/v1/models/big/versions", content=big.read_bytes(),
                            headers={"Content-Type": "application/x-tar", "Authorization": f"Bearer {token}"})
        assert answer.status_code == 507
        error = answer.json()["error"]
        assert error["type"] == "insufficient_storage"
        assert error["message"].startswith("no space left on the server")
        assert os.listdir(state.bundles_dir) == []   # the partial upload is gone, the space is back

        for var in ("GAZELLE_SERVER", "GAZELLE_TOKEN"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("GAZELLE_DATA_DIR", str(small_disk / "data"))
        configure("http://127.0.0.1:8000", transport=httpx.WSGITransport(app=app))
        try:
            assert cli_main(["deploy", str(big), "--no-wait"]) == 1
            err = capsys.readouterr().err
            assert err.startswith("gazelle: no space left on the server") and err.count("\n") == 1
            small = tmp_path / "small.tar"
            small.write_bytes(pack(lengths, name="small", sample=["a"]).data)
            assert cli_main(["deploy", str(small), "--no-wait"]) == 0   # freed space serves the next one
        finally:
            configure()
    finally:
        state.shutdown()
