"""The OpenAI-compatible narrator against a real HTTP server on 127.0.0.1 that records requests.

The run comes from pydicom's CT_small.dcm, which carries a patient name, patient IDs, dates,
UIDs and an institution: none of them may leave the machine.  Failures (refused connection,
timeout, HTTP 500) must give clear messages and keep every other output of the report.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from test_narrate_runs import DICOM_NAME, copy_run, dicom_run
from xaiseg.errors import InputError
from xaiseg.narrate import ReportOptions, build_report
from xaiseg.narrate.cli import add_report_parser
from xaiseg.narrate.openai_http import NarratorError, OpenAINarrator

#: identifying values in CT_small.dcm (PatientName, PatientID and other IDs, StudyID, dates, times,
#: institution, station, UID root) - checked below against the file itself
PRIVATE = ["CompressedSamples", "CT1", "1CT1", "ABCD1234", "1234ABCD", "20040119", "19970430", "2004-01-19",
           "1997-04-30", "072730", "112936", "JFK IMAGING", "CT01_OC0", "1.3.6.1.4.1.5962", "CT_small"]


class Recorder(BaseHTTPRequestHandler):
    """Records every request; answers by ``server.mode``: ok, error500, slow, garbage."""

    def do_POST(self):  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
        mode = self.server.mode
        if mode == "slow":
            time.sleep(3.0)
        if mode == "error500":
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": "model crashed"}')
            return
        payload = (b"<html>not json</html>" if mode == "garbage" else json.dumps({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "llava:7b",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": self.server.answer}}]}).encode())
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    srv.requests, srv.mode, srv.answer = [], "ok", ""
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _base(srv) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/v1"


def _png_text_chunks(data: bytes):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, kinds = 8, []
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        kinds.append(kind.decode("ascii"))
        pos += 12 + length
    return [k for k in kinds if k in ("tEXt", "iTXt", "zTXt", "eXIf")]


def test_private_values_are_in_the_dicom_file():
    """The forbidden strings are really in the input, so their absence below means something."""
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    assert str(ds.PatientName) == "CompressedSamples^CT1" and ds.PatientID == "1CT1"
    assert ds.StudyDate == "20040119" and ds.InstitutionName == "JFK IMAGING CENTER"


def test_request_holds_image_and_findings_and_no_patient_data(server, tmp_path):
    run = copy_run(dicom_run(), tmp_path / "run")
    server.answer = "ct_body: the mask is 9.99 mL, mostly in the liver."
    paths = build_report(run, ReportOptions(narrator="openai", openai_base_url=_base(server),
                                            openai_model="llava:7b", openai_api_key="sk-test", timeout=10))
    assert len(server.requests) == 1
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == "Bearer sk-test"
    body = json.loads(req["body"])
    assert body["model"] == "llava:7b"
    user = body["messages"][1]["content"]
    texts = [c["text"] for c in user if c["type"] == "text"]
    urls = [c["image_url"]["url"] for c in user if c["type"] == "image_url"]
    # the findings are in the request ...
    findings = json.loads(paths["findings"].read_text())
    context = json.loads(texts[0].split("FINDINGS (JSON):\n", 1)[1].split("\n\n", 1)[0])
    assert context["mask"]["volume_ml"] == findings["mask"]["volume_ml"]
    assert context["methods"]["occlusion"]["saliency_mass"] == findings["methods"]["occlusion"]["saliency_mass"]
    # ... and so is the overlay image, pixel for pixel, with no text chunks
    assert len(urls) == 1 and urls[0].startswith("data:image/png;base64,")
    sent = base64.b64decode(urls[0].split(",", 1)[1])
    assert _png_text_chunks(sent) == []
    k = findings["explained_slices"][0]
    original = np.asarray(Image.open(run / f"{DICOM_NAME}_occlusion_k{k:03d}.png").convert("RGB"))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(sent)).convert("RGB")), original)
    # nothing that identifies the patient, the study or the file travels with it
    without_images = req["body"].decode("utf-8")
    for url in urls:
        without_images = without_images.replace(url, "")
    for value in PRIVATE:
        assert value not in without_images, f"{value!r} was sent to the narrator endpoint"
    assert str(run) not in without_images and "/tmp" not in without_images

    def strings(v):
        if isinstance(v, dict):
            for x in v.values():
                yield from strings(x)
        elif isinstance(v, list):
            for x in v:
                yield from strings(x)
        elif isinstance(v, str):
            yield v

    assert not [s for s in strings(context) if s.startswith("/") or ":\\" in s], "no file path may be sent"
    # the answer is checked: the invented volume and organ are marked, the run's name is not
    report = json.loads(paths["report_json"].read_text())
    assert sorted(report["narrative"]["unsupported"]) == ["9.99", "liver"]
    assert report["narrative"]["model"]["served_model"] == "llava:7b"
    page = paths["html"].read_text()
    assert '<mark class="unsupported" title="not in findings: number">9.99</mark>' in page
    for value in PRIVATE[:-1]:
        assert value not in page and value not in paths["findings"].read_text()


def _assert_outputs_kept(run, message_part, exc):
    msg = str(exc.value)
    assert message_part in msg
    assert "template narrative" in msg
    for suffix in ("_findings.json", "_report.json", "_report.html"):
        assert (run / f"{DICOM_NAME}{suffix}").is_file(), f"{suffix} was not written"
    report = json.loads((run / f"{DICOM_NAME}_report.json").read_text())
    assert report["narrative"]["narrator"] == "template" and message_part in report["narrative"]["error"]
    page = (run / f"{DICOM_NAME}_report.html").read_text()
    assert "openai narrator failed" in page and DICOM_NAME in page
    # the run's own files are untouched
    for suffix in ("_mask.nrrd", "_metrics.json", "_occlusion_saliency.nrrd"):
        assert (run / f"{DICOM_NAME}{suffix}").is_file()


def test_refused_connection(tmp_path):
    run = copy_run(dicom_run(), tmp_path / "run")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(NarratorError) as exc:
        build_report(run, ReportOptions(narrator="openai", openai_base_url=f"http://127.0.0.1:{port}/v1",
                                        openai_model="llava", timeout=5))
    _assert_outputs_kept(run, "refused the connection", exc)
    assert f"127.0.0.1:{port}" in str(exc.value)


def test_timeout(server, tmp_path):
    run = copy_run(dicom_run(), tmp_path / "run")
    server.mode = "slow"
    t0 = time.perf_counter()
    with pytest.raises(NarratorError) as exc:
        build_report(run, ReportOptions(narrator="openai", openai_base_url=_base(server), openai_model="llava",
                                        timeout=0.5))
    assert time.perf_counter() - t0 < 2.9, "the client must give up after its timeout"
    _assert_outputs_kept(run, "no answer within 0.5 s (timeout)", exc)


def test_http_500(server, tmp_path):
    run = copy_run(dicom_run(), tmp_path / "run")
    server.mode = "error500"
    with pytest.raises(NarratorError) as exc:
        build_report(run, ReportOptions(narrator="openai", openai_base_url=_base(server), openai_model="llava"))
    _assert_outputs_kept(run, "HTTP 500", exc)
    assert "model crashed" in str(exc.value)


def test_not_a_chat_completion(server, tmp_path):
    run = copy_run(dicom_run(), tmp_path / "run")
    server.mode = "garbage"
    with pytest.raises(NarratorError) as exc:
        build_report(run, ReportOptions(narrator="openai", openai_base_url=_base(server), openai_model="llava"))
    _assert_outputs_kept(run, "not an OpenAI chat completion", exc)


def test_off_unless_configured(monkeypatch, tmp_path):
    for var in ("XAISEG_OPENAI_BASE_URL", "XAISEG_OPENAI_MODEL", "XAISEG_OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(InputError, match="off until configured.*--openai-base-url"):
        OpenAINarrator()
    with pytest.raises(InputError, match="'ftp://x' must be http"):
        OpenAINarrator("ftp://x", "llava")
    run = copy_run(dicom_run(), tmp_path / "run")
    with pytest.raises(InputError):
        build_report(run, ReportOptions(narrator="openai"))
    assert not (run / f"{DICOM_NAME}_findings.json").exists(), "a configuration error writes nothing"


def test_report_command_line(server, tmp_path, monkeypatch, capsys):
    """``xaiseg report`` wiring: env configuration, exit status and one-line error via XAISegError."""
    run = copy_run(dicom_run(), tmp_path / "run")
    monkeypatch.setenv("XAISEG_OPENAI_BASE_URL", _base(server))
    monkeypatch.setenv("XAISEG_OPENAI_MODEL", "llava")
    server.answer = "The mask of ct_body is shown."
    parser = argparse.ArgumentParser(prog="xaiseg")
    add_report_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", str(run), "--narrator", "openai"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert f"{DICOM_NAME}_report.html" in out
    assert json.loads((run / f"{DICOM_NAME}_report.json").read_text())["narrative"]["narrator"] == "openai"


def test_explain_report_hook(tmp_path):
    """What ``xaiseg explain --report`` does after the explanation is written: the report options become
    the request's report object and pipeline.write_report builds the report under the run's name."""
    import dataclasses

    from xaiseg.narrate.cli import add_explain_report_options, options_from_args
    from xaiseg.pipeline import write_report

    run = copy_run(dicom_run(), tmp_path / "run")
    (run / "other_run.json").write_text("{}")  # a second run in the folder: the name must be passed on
    parser = argparse.ArgumentParser(prog="xaiseg explain")
    parser.add_argument("--name")
    add_explain_report_options(parser)
    args = parser.parse_args(["--report"])
    assert args.report is True and args.narrator == "template"
    options = {k: v for k, v in dataclasses.asdict(options_from_args(args)).items() if k not in ("name", "output")}
    notes = []
    paths = write_report(run, DICOM_NAME, options, notes.append)
    assert notes == []
    assert sorted(paths) == ["report_findings", "report_html", "report_json"]
    assert json.loads(paths["report_findings"].read_text())["structure"]["name"] == DICOM_NAME
