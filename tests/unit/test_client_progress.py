"""What a deploy shows in a terminal, and how server-sent events are read."""
from __future__ import annotations

import io

from gazelle.client.http import Event, parse_events
from gazelle.client.progress import TerminalProgress, default_progress


def run_stages(progress, failed_at=None):
    progress.start("accounts", 3, "job1")
    for stage in ("check", "build", "push", "deploy", "sanity", "live"):
        if stage == "push":
            progress.stage(stage, "skipped", "no registry")
            continue
        progress.stage(stage, "running", "")
        progress.log(stage, f"{stage} working")
        if stage == failed_at:
            progress.stage(stage, "failed", "row 0: expected 'a', got 'b'")
            progress.finish({"status": "failed"})
            return
        progress.stage(stage, "done", "")
    progress.finish({"status": "succeeded", "url": "http://127.0.0.1:8000/m/accounts", "version": 3})


def test_terminal_shows_one_line_per_stage_and_the_url():
    out = io.StringIO()
    run_stages(TerminalProgress(out))
    lines = out.getvalue().splitlines()
    assert lines[0] == "deploying accounts version 3 (job job1)"
    assert [line.split()[0] for line in lines[1:-1]] == [
        "[check]", "[build]", "[push]", "[deploy]", "[sanity]", "[live]"]
    assert lines[1].startswith("[check] done in ") and lines[1].endswith("s")
    assert lines[3] == "[push] skipped: no registry"
    assert lines[-1] == "live: http://127.0.0.1:8000/m/accounts (version 3)"


def test_terminal_keeps_log_lines_out_of_a_successful_deploy():
    out = io.StringIO()
    run_stages(TerminalProgress(out))
    assert "working" not in out.getvalue()


def test_terminal_names_the_failed_stage_and_stops_there():
    out = io.StringIO()
    run_stages(TerminalProgress(out), failed_at="sanity")
    lines = out.getvalue().splitlines()
    assert lines[-1].startswith("[sanity] failed in ")
    assert not any(line.startswith(("[live]", "live:")) for line in lines)


def test_repeated_events_print_once():
    out = io.StringIO()
    progress = TerminalProgress(out)
    for _ in range(3):
        progress.stage("check", "done", "")
    assert out.getvalue().count("[check]") == 1


def test_outside_a_kernel_progress_is_plain_text():
    assert isinstance(default_progress(), TerminalProgress)


def test_events_are_parsed_with_ids_json_data_and_comments_skipped():
    text = ("retry: 1000\n\n"
            "id: 1\nevent: stage\ndata: {\"stage\": \"check\", \"status\": \"running\"}\n\n"
            ": keep-alive\n\n"
            "id: 2\nevent: log\ndata: {\"stage\": \"check\",\ndata:  \"line\": \"ok\"}\n\n"
            "event: note\ndata: plain text\n\n"
            "id: 3\nevent: end\ndata: {\"status\": \"succ")
    events = list(parse_events(iter(text.split("\n"))))
    assert events == [
        Event("stage", {"stage": "check", "status": "running"}, "1"),
        Event("log", {"stage": "check", "line": "ok"}, "2"),
        Event("note", "plain text", "2"),
    ]


def test_widget_shows_the_stage_list_bar_and_escaped_logs_of_a_failure(capsys):
    from gazelle.client.progress import WidgetProgress

    widget = WidgetProgress()
    widget.start("accounts", 2, "job1")
    widget.stage("check", "running")
    widget.stage("check", "done", "bundle <ok>")
    widget.stage("build", "running")
    widget.log("build", "ERROR: no <such> dist")
    widget.stage("build", "failed", "pip could not install x")
    widget.finish({"status": "failed"})
    assert (widget._bar.value, widget._bar.bar_style, widget._bar.description) == (2, "danger", "failed")
    page = widget._html.value
    assert "<b>accounts version 2</b>" in page
    assert page.index("<b>check</b>") < page.index("<b>build</b>") < page.index("<b>live</b>")
    assert "bundle &lt;ok&gt;" in page and "ERROR: no &lt;such&gt; dist" in page


def test_widget_of_a_live_deploy_links_the_endpoint(capsys):
    from gazelle.client.progress import WidgetProgress

    widget = WidgetProgress()
    widget.start("accounts", 1, None)
    widget.finish({"status": "succeeded", "url": "http://127.0.0.1:8000/m/accounts", "version": 1})
    assert widget._bar.value == 6 and widget._bar.bar_style == "success"
    assert "href='http://127.0.0.1:8000/m/accounts/'" in widget._html.value
