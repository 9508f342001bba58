"""Showing a deploy's progress as the build server reports it (stages and log lines of one job).

In a Jupyter kernel with ipywidgets installed: a progress bar and a list of the stages, updated in
place. Elsewhere: one line per finished stage (``[build] done in 1.2s``) on stdout; log lines are
kept, not shown, and reach the user only through the ``DeployError`` of a failed deploy.
This is display, not logging: nothing here goes through the ``logging`` module.

Durations are measured on the client, from the event that started a stage to the one that ended
it, so a client that connects late (and gets past events replayed at once) shows short times.
"""
from __future__ import annotations

import html
import sys
import time
from collections import deque
from typing import Any, Mapping, Protocol, TextIO

STAGES = ("check", "build", "push", "deploy", "sanity", "live")
_FINISHED = ("done", "failed", "skipped")


class Progress(Protocol):
    def start(self, name: str, version: int, job: str | None) -> None: ...

    def stage(self, stage: str, status: str, message: str = "") -> None: ...

    def log(self, stage: str, line: str) -> None: ...

    def finish(self, job: Mapping[str, Any]) -> None: ...


class _Stages:
    """What both displays need: each stage's status, message and duration, and recent log lines."""

    def __init__(self) -> None:
        self.status: dict[str, str] = {s: "pending" for s in STAGES}
        self.message: dict[str, str] = {}
        self.seconds: dict[str, float] = {}
        self.logs: deque[str] = deque(maxlen=200)
        self._started: dict[str, float] = {}
        self._mark = time.monotonic()

    def update(self, stage: str, status: str, message: str) -> bool:
        """Record an event; True if it changed anything."""
        if self.status.get(stage) == status and self.message.get(stage, "") == (message or ""):
            return False
        now = time.monotonic()
        self.status[stage] = status
        if message:
            self.message[stage] = message
        if status == "running":
            self._started[stage] = now
        elif status in _FINISHED and stage not in self.seconds:
            self.seconds[stage] = now - self._started.get(stage, self._mark)
        self._mark = now
        return True

    @property
    def finished(self) -> int:
        return sum(1 for s in self.status.values() if s in _FINISHED)


class TerminalProgress:
    """One line per stage as it ends; nothing while a stage runs."""

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out
        self._stages = _Stages()

    def _print(self, text: str) -> None:
        out = self._out or sys.stdout
        print(text, file=out, flush=True)

    def start(self, name: str, version: int, job: str | None) -> None:
        self._print(f"deploying {name} version {version}" + (f" (job {job})" if job else ""))

    def stage(self, stage: str, status: str, message: str = "") -> None:
        if not self._stages.update(stage, status, message) or status not in _FINISHED:
            return
        line = f"[{stage}] {status}"
        if status != "skipped":
            line += f" in {self._stages.seconds[stage]:.1f}s"
        if message and status != "failed":  # a failure's message is the DeployError's
            line += f": {message}"
        self._print(line)

    def log(self, stage: str, line: str) -> None:
        self._stages.logs.append(f"[{stage}] {line}")

    def finish(self, job: Mapping[str, Any]) -> None:
        if job.get("status") == "succeeded":
            url = job.get("url")
            self._print(f"live: {url} (version {job.get('version')})" if url else f"live: version {job.get('version')}")


class WidgetProgress:
    """An ``IntProgress`` bar over the stages and an HTML list of them, for a Jupyter kernel."""

    _ICONS = {"pending": "&#9675;", "running": "&#8987;", "done": "&#10004;", "failed": "&#10008;",
              "skipped": "&#8211;"}
    _COLOURS = {"done": "#2e7d32", "failed": "#c62828", "running": "#1565c0"}

    def __init__(self) -> None:
        import ipywidgets
        from IPython.display import display

        self._stages = _Stages()
        self._title = ""
        self._bar = ipywidgets.IntProgress(value=0, min=0, max=len(STAGES), description="deploying",
                                           bar_style="info")
        self._html = ipywidgets.HTML()
        display(ipywidgets.VBox([self._bar, self._html]))

    def start(self, name: str, version: int, job: str | None) -> None:
        self._title = f"{name} version {version}"
        self._render()

    def stage(self, stage: str, status: str, message: str = "") -> None:
        if self._stages.update(stage, status, message):
            self._bar.value = self._stages.finished
            if status == "failed":
                self._bar.bar_style = "danger"
            self._render()

    def log(self, stage: str, line: str) -> None:
        self._stages.logs.append(f"[{stage}] {line}")

    def finish(self, job: Mapping[str, Any]) -> None:
        ok = job.get("status") == "succeeded"
        self._bar.bar_style = "success" if ok else "danger"
        self._bar.description = "live" if ok else "failed"
        if ok:
            self._bar.value = len(STAGES)
        self._render(failed_logs=not ok, url=str(job.get("url") or "") if ok else "")

    def _render(self, *, failed_logs: bool = False, url: str = "") -> None:
        rows = []
        for stage in STAGES:
            status = self._stages.status[stage]
            took = (f"{self._stages.seconds[stage]:.1f}s"
                    if stage in self._stages.seconds and status != "skipped" else "")
            colour = self._COLOURS.get(status, "#757575")
            rows.append(
                f"<tr style='color:{colour}'><td>{self._ICONS.get(status, '')}</td><td><b>{stage}</b></td>"
                f"<td>{html.escape(status)}</td><td>{took}</td>"
                f"<td>{html.escape(self._stages.message.get(stage, ''))}</td></tr>")
        parts = [f"<div><b>{html.escape(self._title)}</b></div>",
                 "<table style='font-family:monospace'>" + "".join(rows) + "</table>"]
        if url:
            parts.append(f"<div>live at <a href='{html.escape(url)}/' target='_blank'>{html.escape(url)}</a></div>")
        if failed_logs and self._stages.logs:
            tail = "\n".join(list(self._stages.logs)[-20:])
            parts.append(f"<pre style='max-height:20em;overflow:auto'>{html.escape(tail)}</pre>")
        self._html.value = "".join(parts)


class NoProgress:
    """Shows nothing (``wait=False``, or a caller that prints its own output)."""

    def start(self, name: str, version: int, job: str | None) -> None:
        pass

    def stage(self, stage: str, status: str, message: str = "") -> None:
        pass

    def log(self, stage: str, line: str) -> None:
        pass

    def finish(self, job: Mapping[str, Any]) -> None:
        pass


def in_jupyter_kernel() -> bool:
    """True inside an IPython kernel (a notebook), not in a terminal IPython or a script."""
    ipython_module = sys.modules.get("IPython")
    if ipython_module is None:
        return False
    try:
        shell = ipython_module.get_ipython()
    except AttributeError:
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


def default_progress() -> Progress:
    """A widget in a Jupyter kernel where ipywidgets is installed, else terminal lines."""
    if in_jupyter_kernel():
        try:
            return WidgetProgress()
        except ImportError:
            pass
    return TerminalProgress()
