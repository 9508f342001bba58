"""Which probe a failed rollout blames, read from pod event lines as ``pod_events`` writes them
(the startup probe's line as the 1.20 test cluster's kubelet wrote it), and from when on a rollout
looks for a probe's kill."""
from __future__ import annotations

from kubernetes.client import V1Container, V1Pod, V1PodSpec, V1Probe

from gazelle.server.targets._k8s_rollout import _probe_budget, _probe_failure, _probe_kill, _startup_probe

POD = "gazelle-lengths-v5-6d9c-x2x"
STARTUP = (f'{POD}: Unhealthy: Startup probe failed: Get "http://127.0.0.1:22344/v2/health/live": '
           "dial tcp 127.0.0.1:22344: connect: connection refused")
EVENTS = [f"{POD}: Scheduled: Successfully assigned t-ns/{POD} to node", f"{POD}: Pulled: Container image "
          '"127.0.0.1:5000/m@sha256:ab" already present on machine', f"{POD}: Started: Started container runtime",
          STARTUP]


def test_the_kubelets_killing_event_names_the_probe() -> None:
    killing = f"{POD}: Killing: Container runtime failed startup probe, will be restarted"
    assert _probe_kill([*EVENTS, killing], 0) == "startup"
    assert _probe_failure([*EVENTS, killing]) == STARTUP.split(": Unhealthy: ", 1)[1]


def test_a_signal_after_a_failing_probe_blames_that_probe_before_its_event_is_listed() -> None:
    assert _probe_kill(EVENTS, 137) == "startup"
    liveness = f"{POD}: Unhealthy: Liveness probe failed: Get \"http://127.0.0.1:22344/v2/health/live\": timeout"
    assert _probe_kill([*EVENTS, liveness], 143) == "liveness"


def test_an_exit_of_its_own_blames_no_probe() -> None:
    assert _probe_kill(EVENTS, 1) is None
    assert _probe_kill(EVENTS[:3], 137) is None


def test_a_readiness_failure_is_quoted_but_never_a_kill() -> None:
    readiness = f"{POD}: Unhealthy: Readiness probe failed: HTTP probe failed with statuscode: 503"
    assert _probe_failure([*EVENTS, readiness]) == "Readiness probe failed: HTTP probe failed with statuscode: 503"
    assert _probe_kill(EVENTS[:3] + [readiness], 137) is None


def _pod(**probes: V1Probe) -> V1Pod:
    return V1Pod(spec=V1PodSpec(containers=[V1Container(name="sidecar"), V1Container(name="runtime", **probes)]))


def test_the_startup_probes_budget_comes_first_then_livenesss_with_the_kubelets_defaults() -> None:
    startup = V1Probe(period_seconds=1, failure_threshold=45)
    liveness = V1Probe(period_seconds=10, failure_threshold=3, initial_delay_seconds=5)
    assert _probe_budget(_pod(startup_probe=startup, liveness_probe=liveness), "runtime") == 45
    assert _probe_budget(_pod(liveness_probe=liveness), "runtime") == 35
    assert _probe_budget(_pod(liveness_probe=V1Probe()), "runtime") == 30
    assert _probe_budget(_pod(), "runtime") == float("inf")
    assert _probe_budget(_pod(startup_probe=startup), "gone") == float("inf")
    assert _startup_probe(_pod(startup_probe=startup), "runtime") is startup
    assert _startup_probe(_pod(liveness_probe=liveness), "runtime") is None
