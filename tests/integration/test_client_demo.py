"""``make demo`` (``notebooks/demo.py``): starts a local server, deploys, prints what to share, keeps the
server up until Ctrl-C, then stops it and its model processes."""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

from gazelle.client.localserver import answers, free_port
from tests.integration._client import ROOT, kill_everything_of, runtime_pids

pytestmark = pytest.mark.integration


def test_demo_deploys_prints_the_endpoint_and_stops_cleanly_on_ctrl_c(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAZELLE_")}
    env.update(GAZELLE_SERVER=url, GAZELLE_DATA_DIR=str(tmp_path / "data"), PYTHONUNBUFFERED="1")
    demo = subprocess.Popen([sys.executable, str(ROOT / "notebooks" / "demo.py")], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line.rstrip("\n")) for line in demo.stdout], daemon=True).start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 300
        while not any(line.startswith("the server keeps running") for line in seen):
            assert demo.poll() is None, "\n".join(seen)
            assert time.monotonic() < deadline, "\n".join(seen)
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                pass
        assert f"endpoint:  {url}/m/accounts" in seen
        assert f"try it:    {url}/m/accounts/" in seen
        curl_at = next(i for i, line in enumerate(seen) if f"curl -X POST {url}/m/accounts/predict \\" in line)
        assert "'Taxi to conference' -> '2770 Travel expenses'" in seen
        assert answers(url)
        token = (tmp_path / "data" / "token").read_text().strip()
        assert token not in "\n".join(seen)
        # The curl an app team is handed works as printed, with the token only in the environment.
        snippet = "\n".join(line[2:] for line in seen[curl_at:curl_at + 4])
        done = subprocess.run(["bash", "-c", snippet], env={"PATH": os.environ["PATH"], "GAZELLE_TOKEN": token},
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert answer["model"] == "accounts" and len(answer["predictions"]) == 1, done.stdout
        assert answer["predictions"][0][:4].isdigit(), done.stdout   # a ledger account such as "2770 ..."

        demo.send_signal(signal.SIGINT)
        assert demo.wait(90) == 0
        assert not answers(url)
        assert runtime_pids(tmp_path / "data") == []
    finally:
        if demo.poll() is None:
            demo.send_signal(signal.SIGINT)
            try:
                demo.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(demo.pid, signal.SIGKILL)
                demo.wait(30)
        kill_everything_of(tmp_path / "data")   # the server runs in a session of its own
