"""``gazelle.runtime.bind``: options over their ``GAZELLE_RUNTIME_*`` twins over defaults, and the CPU
count under cgroup quotas (read from cgroup trees written into tmp_path: a stand-in for
/sys/fs/cgroup, whose limits a test cannot set)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from gazelle.errors import ConfigError
from gazelle.runtime.bind import available_cpus, resolve


def test_command_line_wins_over_variables_which_win_over_defaults():
    env = {"GAZELLE_RUNTIME_BUNDLE": "env.tar", "GAZELLE_RUNTIME_PORT": "9000",
           "GAZELLE_RUNTIME_HOST": "0.0.0.0", "GAZELLE_RUNTIME_WORKERS": "3"}
    assert resolve(None, environ=env).address == "0.0.0.0:9000"
    assert resolve(None, environ=env).workers == 3 and str(resolve(None, environ=env).bundle) == "env.tar"
    given = resolve("cli.tar", host="::1", port=8001, workers=1, environ=env)
    assert (str(given.bundle), given.address, given.workers) == ("cli.tar", "[::1]:8001", 1)
    default = resolve("b.tar", environ={}, cpus=5)
    assert (default.address, default.workers, default.url) == ("127.0.0.1:8080", 5, "http://127.0.0.1:8080/")


def test_socket_replaces_tcp_from_the_option_or_the_variable(tmp_path):
    sock = tmp_path / "rt.sock"
    assert resolve("b.tar", socket=str(sock), port=9000, environ={}, cpus=1).address == f"unix:{sock}"
    assert resolve("b.tar", environ={"GAZELLE_RUNTIME_SOCKET": str(sock)}, cpus=1).url == f"unix:{sock}"


@pytest.mark.parametrize("env, words", [
    ({}, ["BUNDLE", "GAZELLE_RUNTIME_BUNDLE"]),
    ({"GAZELLE_RUNTIME_BUNDLE": "b.tar", "GAZELLE_RUNTIME_PORT": "http"}, ["--port", "GAZELLE_RUNTIME_PORT", "'http'"]),
    ({"GAZELLE_RUNTIME_BUNDLE": "b.tar", "GAZELLE_RUNTIME_PORT": "70000"}, ["GAZELLE_RUNTIME_PORT", "65535"]),
    ({"GAZELLE_RUNTIME_BUNDLE": "b.tar", "GAZELLE_RUNTIME_WORKERS": "0"}, ["GAZELLE_RUNTIME_WORKERS", "got 0"]),
    ({"GAZELLE_RUNTIME_BUNDLE": "b.tar", "GAZELLE_RUNTIME_SOCKET": "/nonexistent-dir/rt.sock"},
     ["GAZELLE_RUNTIME_SOCKET", "'/nonexistent-dir'", "does not exist"]),
    ({"GAZELLE_RUNTIME_BUNDLE": "b.tar", "GAZELLE_RUNTIME_SOCKET": "/tmp/" + "s" * 120}, ["at most 107"]),
])
def test_unusable_values_name_the_option_and_variable(env, words):
    with pytest.raises(ConfigError) as caught:
        resolve(None, environ=env, cpus=1)
    for word in words:
        assert word in str(caught.value)


def test_socket_path_taken_by_a_regular_file_is_refused(tmp_path):
    taken = tmp_path / "rt.sock"
    taken.write_text("not a socket")
    with pytest.raises(ConfigError, match="exists and is not a socket"):
        resolve("b.tar", socket=str(taken), environ={}, cpus=1)


def _tree(tmp_path: Path, proc: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (tmp_path / "proc-cgroup").write_text(proc)
    return tmp_path / "proc-cgroup", root


def test_cgroup_v2_quota_lowers_the_affinity_count_rounding_up(tmp_path):
    proc, root = _tree(tmp_path, "0::/kubepods/pod1/ctr\n", {
        "kubepods/cpu.max": "max 100000\n", "kubepods/pod1/cpu.max": "150000 100000\n",
        "kubepods/pod1/ctr/cpu.max": "max 100000\n"})
    assert available_cpus(proc, root) == min(len(os.sched_getaffinity(0)), 2)


def test_cgroup_v2_quota_below_one_cpu_still_gives_one_worker(tmp_path):
    proc, root = _tree(tmp_path, "0::/\n", {"cpu.max": "10000 100000\n"})
    assert available_cpus(proc, root) == 1


def test_cgroup_v1_quota_counts_and_no_quota_leaves_the_affinity(tmp_path):
    proc, root = _tree(tmp_path, "4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n", {
        "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "100000\n",
        "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n"})
    assert available_cpus(proc, root) == 1
    unlimited, root2 = _tree(tmp_path / "u", "0::/\n", {"cpu.max": "max 100000\n"})
    assert available_cpus(unlimited, root2) == len(os.sched_getaffinity(0))
    assert available_cpus(tmp_path / "no-such-file", root2) == len(os.sched_getaffinity(0))
