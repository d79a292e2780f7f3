"""The run report: built from a synthetic run directory, checked as HTML and in headless Chromium."""

from __future__ import annotations

import importlib.util
import json
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
from PIL import Image

from simfarm.farm.renderers import render_run
from simfarm.render.report import build_report
from simfarm.render.rundir import list_artifacts, read_manifest
from simfarm.render.samples import sample_run_dir

_CDP_PATH = Path(__file__).with_name("chromium_cdp.py")


def _cdp():
    spec = importlib.util.spec_from_file_location("simfarm_test_chromium_cdp", _CDP_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href", "srcset") and value and not value.startswith("#"):
                self.refs.append((tag, value))


@pytest.fixture(scope="module")
def rendered_run(tmp_path_factory):
    """A sample run rendered in this process, MP4s included."""
    run = sample_run_dir(tmp_path_factory.mktemp("report"), n_seeds=2, n_rounds=3, n_iterations=10)
    entries = render_run(run, workers=0, only="gif,mp4,curves,report", progress=None)
    return run, entries


def test_every_task_succeeds_and_every_artifact_is_linked(rendered_run):
    run, entries = rendered_run
    assert all(e["status"] == "done" for e in entries), [e for e in entries if e["error"]]
    assert entries[-1]["key"] == "report" and entries[-1]["outputs"] == ["report.html"]
    html = (run / "report.html").read_text()
    parser = _Refs()
    parser.feed(html)
    linked = {unquote(ref) for _, ref in parser.refs}
    for ref in linked:
        assert not ref.startswith(("/", "file:", "http")), ref  # relative links only
        assert (run / ref).is_file(), ref
    assert set(list_artifacts(run)) <= linked  # every artifact is on the page
    tags = {tag for tag, _ in parser.refs}
    assert {"img", "video", "source", "a"} <= tags


def test_report_shows_status_errors_and_tables_escaped(rendered_run):
    run, _ = rendered_run
    html = (run / "report.html").read_text()
    assert "RuntimeError: injected failure &lt;b&gt;not bold&lt;/b&gt; at step 3" in html
    assert "<b>not bold</b>" not in html
    assert "median across seeds, per config" in html and "captured episodes" in html
    assert "experiments[0] scenario=constant effect_scale=0.5" in html


def test_render_failures_appear_in_the_report():
    manifest = {"name": "x", "status": "done", "jobs": [{"job_id": "j", "config_id": "c", "status": "done"}],
                "renders": [{"key": "j/evolution", "kind": "evolution_gif", "job_id": "j", "status": "failed",
                             "error": "ValueError: boom <now>"}]}
    html = build_report(manifest, {}, [])
    assert html.count("ValueError: boom &lt;now&gt;") == 2  # in the failures table and in the job
    assert "simulation results are not affected" in html


def test_rerender_is_idempotent(rendered_run):
    run, _ = rendered_run
    before = {p: (run / p).read_bytes() for p in [*list_artifacts(run), "report.html"]}
    stamps = {p: (run / p).stat().st_mtime_ns for p in before}
    render_run(run, workers=0, only="gif,mp4,curves,report", progress=None)
    after = {p: (run / p).read_bytes() for p in [*list_artifacts(run), "report.html"]}
    assert after == before
    assert {p: (run / p).stat().st_mtime_ns for p in before} == stamps  # unchanged files are not rewritten
    assert read_manifest(run)["renders"] == []  # the manifest is the caller's to update


def test_report_in_headless_chromium(rendered_run, tmp_path):
    cdp = _cdp()
    binary = cdp.find_chromium()
    if binary is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    run, _ = rendered_run
    with cdp.Chromium(binary) as browser:
        page = browser.open_page(run / "report.html")
    probe = page["probe"]
    assert page["errors"] == []
    assert probe["title"] == "sample · simfarm report"
    assert len(probe["images"]) >= 10
    broken = [i["src"] for i in probe["images"] if not (i["complete"] and i["width"] > 0)]
    assert broken == []
    assert probe["videos"], "the MP4s should be embedded"
    bad_videos = [v for v in probe["videos"] if v["error"] is not None or v["readyState"] < 1 or v["width"] == 0]
    assert bad_videos == []
    shot = tmp_path / "report.png"
    shot.write_bytes(page["full_page"])
    with Image.open(shot) as im:
        assert im.format == "PNG" and im.size[0] >= 600 and im.size[1] > 1000
        # Not a blank page: the header is dark, the body light.
        assert im.convert("L").getextrema()[0] < 60
    (tmp_path / "probe.json").write_text(json.dumps(probe))
