"""Watching one version's rollout until its pods are ready, or until a failure that explains itself.

Read from the pods' own status, polled (a watch would hold a connection per deploy for little gain):

- unschedulable (``PodScheduled`` false): the scheduler's message ("0/1 nodes are available: 1
  Insufficient memory.");
- ``ErrImagePull`` / ``ImagePullBackOff`` / ``InvalidImageName``: the registry's message, via the kubelet;
- a container that exited before the version was ready (the model raised while loading, an environment
  mismatch, a crash loop, the OOM killer): the sentence ``_logs.exit_cause`` reads from its last lines;
- ``CreateContainerConfigError`` (a missing Secret the environment refers to);
- failing probes: a container the kubelet restarts because its startup or liveness probe failed (a
  model slower to load than the startup budget, ``GAZELLE_K8S_STARTUP_SECONDS``), and the target's own
  ready timeout while the readiness probe fails; the message quotes the probe's last failure from the
  pod's events ("Startup probe failed: ... connection refused"). Once a container has been seen
  unready for longer than its probe's budget, its events are read on each poll: a ``Killing`` event
  for a probe, or as many startup probe failures as its ``failureThreshold`` (counted in the events,
  or from the time that many attempts take), fail the rollout at once, not when the container has stopped (a 1.20 kubelet kills for a failed startup probe only at
  its next pod sync, and a container may take its whole termination grace period to go);
- the Deployment's progress deadline.

Each is a ``TargetError`` whose ``detail`` holds the pods' events and the container's last log lines.
Progress (scheduled, pulling, started, ready 1/2) goes to ``log``, each line once.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from gazelle.errors import TargetError
from gazelle.server.targets import Log
from gazelle.server.targets import _logs

POLL_SECONDS = 0.5
_PULL_FAILURES = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
_CONFIG_FAILURES = ("CreateContainerConfigError", "CreateContainerError")
_TAIL = 40


class Rollout:
    """One watch: ``wait()`` returns once ``replicas`` pods of the Deployment are ready."""

    def __init__(self, core: Any, apps: Any, namespace: str, deployment: str, label_selector: str,
                 replicas: int, log: Log, *, timeout: float, subject: str) -> None:
        self.core, self.apps = core, apps
        self.namespace, self.deployment, self.selector = namespace, deployment, label_selector
        self.replicas, self.log, self.timeout, self.subject = replicas, log, timeout, subject
        self._said: set[str] = set()
        self._running_since: dict[tuple[str, str, int], float] = {}

    def wait(self) -> list[str]:
        """The names of the ready pods, once there are ``replicas`` of them."""
        deadline = time.monotonic() + self.timeout
        owner = self.apps.read_namespaced_deployment(self.deployment, self.namespace).metadata.uid
        while True:
            pods = self._pods(owner)
            for pod in pods:
                self._check(pod)
            ready = [pod.metadata.name for pod in pods if _ready(pod)]
            if ready:
                self._say(f"ready {min(len(ready), self.replicas)}/{self.replicas}")
            if len(ready) >= self.replicas:
                return ready
            self._check_deadline()
            if time.monotonic() > deadline:
                events = pod_events(self.core, self.namespace, [p.metadata.name for p in pods])
                probe = _probe_failure(events)
                raise self._failure(f"{self.subject} was not ready after {self.timeout:g}s "
                                    f"({len(ready)}/{self.replicas} pods ready)"
                                    + (f": {probe}" if probe else ""), pods, events=events)
            time.sleep(POLL_SECONDS)

    def _pods(self, owner: str) -> list[Any]:
        """This Deployment's pods that are not on their way out: pods of a Deployment of the same name
        deleted a moment ago, or of a scale-down just before a rollback scaled up again, tell nothing."""
        sets = self.apps.list_namespaced_replica_set(self.namespace, label_selector=self.selector).items
        mine = {rs.metadata.uid for rs in sets if any(o.uid == owner for o in rs.metadata.owner_references or [])}
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=self.selector).items
        return [pod for pod in pods if pod.metadata.deletion_timestamp is None
                and any(o.uid in mine for o in pod.metadata.owner_references or [])]

    def _say(self, line: str) -> None:
        if line not in self._said:
            self._said.add(line)
            self.log(line)

    def _check(self, pod: Any) -> None:
        name = pod.metadata.name
        for condition in pod.status.conditions or []:
            if condition.type == "PodScheduled":
                if condition.status == "True":
                    self._say(f"pod {name} scheduled on {pod.spec.node_name}")
                elif condition.reason == "Unschedulable":
                    raise self._failure(f"no node can run {self.subject}: {condition.message}", [pod])
        for status in pod.status.container_statuses or []:
            waiting = status.state.waiting if status.state else None
            if waiting is not None and waiting.reason in _PULL_FAILURES:
                raise self._failure(f"the image of {self.subject} cannot be pulled: "
                                    f"{waiting.message or waiting.reason}", [pod])
            if waiting is not None and waiting.reason in _CONFIG_FAILURES:
                raise self._failure(f"{self.subject} cannot start its container: "
                                    f"{waiting.message or waiting.reason}", [pod])
            if waiting is not None and waiting.reason == "ContainerCreating":
                self._say(f"pod {name}: pulling the image and creating the container")
            if status.state and status.state.running is not None:
                self._say(f"pod {name}: started, loading the model")
                if not status.ready:
                    self._check_probe_kill(pod, status)
            ended = (status.state.terminated if status.state else None) or (
                status.last_state.terminated if status.last_state else None)
            if ended is not None and not status.ready:
                raise self._exited(pod, status, ended)

    def _check_probe_kill(self, pod: Any, status: Any) -> None:
        """A running container that is not ready, seen for longer than its probes allow: its events tell
        at once that the kubelet restarts it. Either its ``Killing`` event is there, or (first run,
        never started) the startup probe has failed its ``failureThreshold`` times: the kubelet kills
        it for that, though a 1.20 kubelet does so only at its next pod sync, up to a minute later.
        Failures are counted from the events, else from the time: an attempt every period (or every
        timeout, when that is longer), after the initial delay and one period of the kubelet's jitter."""
        key = (pod.metadata.uid or pod.metadata.name, status.name, int(status.restart_count or 0))
        since = self._running_since.setdefault(key, time.monotonic())
        if time.monotonic() - since < _probe_budget(pod, status.name):
            return
        raw = _raw_events(self.core, self.namespace, pod.metadata.name)
        events = _event_lines([(pod.metadata.name, event) for event in raw])
        killed = _probe_kill(events, 0)
        probe = _startup_probe(pod, status.name)
        if killed is None and probe is not None and not status.started and not status.restart_count:
            # Never started: every probe so far failed (or has yet to answer). Enough of them, counted
            # in the events (which the kubelet stops sending after a burst) or by the time they took.
            failures = sum(e.count or 1 for e in raw if e.reason == "Unhealthy"
                           and "Startup probe failed" in str(e.message or ""))
            threshold = probe.failure_threshold or 3
            attempts = ((probe.initial_delay_seconds or 0) + (probe.period_seconds or 10)
                        + max(probe.period_seconds or 10, probe.timeout_seconds or 1) * threshold)
            if failures >= threshold or (failures and time.monotonic() - since >= attempts):
                killed = "startup"
        if killed is not None:
            raise self._probe_killed(pod, killed, self._pod_log(pod.metadata.name, previous=False), events)

    def _probe_killed(self, pod: Any, killed: str, lines: list[str], events: list[str]) -> TargetError:
        hint = ("; a model that needs longer to load needs a larger GAZELLE_K8S_STARTUP_SECONDS"
                if killed == "startup" else "")
        return self._failure(f"{self.subject} failed its {killed} probe and was restarted: "
                             f"{_probe_failure(events, killed) or 'no answer'}{hint}", [pod], lines, events)

    def _exited(self, pod: Any, status: Any, ended: Any) -> TargetError:
        previous = status.state.terminated is None   # already restarted: the log of the run that ended
        lines = self._pod_log(pod.metadata.name, previous=previous)
        events = pod_events(self.core, self.namespace, [pod.metadata.name])
        killed = _probe_kill(events, int(ended.exit_code or 0))
        if killed is not None and ended.reason != "OOMKilled":
            return self._probe_killed(pod, killed, lines, events)
        if ended.reason == "OOMKilled":
            limits = [(c.resources.limits or {}).get("memory") for c in pod.spec.containers
                      if c.name == status.name and c.resources is not None]
            limit = f" ({limits[0]})" if limits and limits[0] else ""
            cause = (f"the runtime was killed for using more memory than its limit{limit}; "
                     "deploy it with more memory (resources={'memory': ...})")
        else:
            cause = _logs.exit_cause(int(ended.exit_code), lines)
        return self._failure(f"{self.subject} exited while starting: {cause}", [pod], lines)

    def _check_deadline(self) -> None:
        status = self.apps.read_namespaced_deployment_status(self.deployment, self.namespace).status
        for condition in status.conditions or []:
            if condition.type == "Progressing" and condition.reason == "ProgressDeadlineExceeded":
                pods = self.core.list_namespaced_pod(self.namespace, label_selector=self.selector).items
                raise self._failure(f"{self.subject} made no progress before its deadline: {condition.message}",
                                    pods)

    def _pod_log(self, pod: str, *, previous: bool) -> list[str]:
        try:
            text = self.core.read_namespaced_pod_log(pod, self.namespace, tail_lines=_TAIL, previous=previous)
        except Exception:   # the container may be gone already; the events still explain
            return []
        return str(text).splitlines()

    def _failure(self, message: str, pods: list[Any], lines: list[str] | None = None,
                 events: list[str] | None = None) -> TargetError:
        if events is None:
            events = pod_events(self.core, self.namespace, [p.metadata.name for p in pods])
        detail = ["events:", *events] if events else []
        if lines:
            detail += ["last log lines:", *lines[-_TAIL:]]
        return TargetError(message, detail="\n".join(detail) or None)


def _ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def _probe_budget(pod: Any, container: str) -> float:
    """Seconds a started container may stay unready before a probe can have it killed: its startup
    probe's budget (liveness probes only begin after it), else its liveness probe's; the kubelet's
    defaults for what the spec leaves out. No kill probe: never."""
    for spec in pod.spec.containers or []:
        if spec.name != container:
            continue
        probe = spec.startup_probe or spec.liveness_probe
        if probe is None:
            return float("inf")
        return float((probe.initial_delay_seconds or 0) + (probe.period_seconds or 10) * (probe.failure_threshold or 3))
    return float("inf")


def _startup_probe(pod: Any, container: str) -> Any:
    """The container's startup probe, or None."""
    for spec in pod.spec.containers or []:
        if spec.name == container:
            return spec.startup_probe
    return None


def _probe_failure(events: list[str], kind: str | None = None) -> str | None:
    """The last "<Kind> probe failed: ..." among ``pod_events`` lines (of ``kind`` when given)."""
    kinds = (kind.capitalize(),) if kind else ("Startup", "Liveness", "Readiness")
    for line in reversed(events):
        for name in kinds:
            at = line.find(f"{name} probe failed: ")
            if at >= 0:
                return line[at:]
    return None


def _probe_kill(events: list[str], exit_code: int) -> str | None:
    """"startup" or "liveness" when the kubelet restarted a container for failing that probe: its
    "Killing" event says so, or the container ended by SIGTERM or SIGKILL after that probe failed (the
    event may not be listed yet when the status shows the exit)."""
    for line in reversed(events):
        for kind in ("startup", "liveness"):
            if f"failed {kind} probe" in line:
                return kind
    if exit_code in (128 + 9, 128 + 15):
        last = _probe_failure(events)
        for kind in ("startup", "liveness"):
            if last is not None and last.startswith(f"{kind.capitalize()} probe failed"):
                return kind
    return None


def pod_events(core: Any, namespace: str, pods: list[str]) -> list[str]:
    """``pod: Reason: message`` of each pod's events, oldest first."""
    return _event_lines([(pod, event) for pod in pods for event in _raw_events(core, namespace, pod)])


def _raw_events(core: Any, namespace: str, pod: str) -> list[Any]:
    try:
        return list(core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={pod}").items)
    except Exception:   # events are the explanation's extra, never the reason to fail differently
        return []


def _event_lines(events: list[tuple[str, Any]]) -> list[str]:
    out = [(event.last_timestamp or event.event_time or event.metadata.creation_timestamp,
            f"{pod}: {event.reason}: {event.message}") for pod, event in events]
    out.sort(key=lambda item: (item[0] is None, item[0] or 0))
    return [line for _, line in out]


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` until it returns something truthy; TargetError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TargetError(f"{what} after {timeout:g}s")
        time.sleep(POLL_SECONDS)
