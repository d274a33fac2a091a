"""The drift email through Airflow's SMTP connection to a real SMTP server on loopback, and SMTP down.

Starts `python -m flywheel.smtpd` (aiosmtpd, Maildir) on a free port, points the `flywheel_smtp`
connection at it through AIRFLOW_CONN_FLYWHEEL_SMTP (the JSON form flywheel/runtime.py writes), and
sends a composed drift email with flywheel.dagkit.send_email (a real SmtpHook's client). What arrives is
read as a mail client reads it: the picture inline, the page links, the Evidently report attached as
HTML. With no server on the port, the same path retries, fails in a controlled way and leaves every
report file on disk; through the outbox it is delivered later with its picture and report.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import io
import json
import re
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.mail import Email, Pages
from pipelines.spec import REPO_ROOT, load_spec

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 2, tzinfo=UTC)
END = datetime(2026, 3, 9, tzinfo=UTC)
LINKS = {
    "Airflow run": "http://127.0.0.1:8080/dags/monitor__fraud/runs/r1",
    "MLflow model": "http://127.0.0.1:5000/#/models/flywheel-fraud/versions/3",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def smtp_conn(port: int) -> str:
    return json.dumps(
        {
            "conn_type": "smtp",
            "host": "127.0.0.1",
            "port": port,
            "extra": {
                "disable_ssl": True,
                "disable_tls": True,
                "from_email": "flywheel@localhost",
                "timeout": 5,
                "retry_limit": 1,
            },
        }
    )


def frame(n: int, seed: int, factor: float = 1.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(3.5, 0.8, n) * factor
    channel = rng.choice(["pos", "online", "wallet"], n, p=[0.6, 0.3, 0.1] if factor == 1 else [0.3, 0.3, 0.4])
    return pd.DataFrame(
        {
            "amount": amount,
            "channel": channel,
            "country": rng.choice(["US", "GB", "DE"], n),
            "prediction": 1 / (1 + np.exp(-(-4 + 0.01 * amount))),
        }
    )


@pytest.fixture(scope="module")
def spec():
    return load_spec(REPO_ROOT / "models" / "fraud.yaml")


@pytest.fixture
def report(spec, tmp_path: Path):
    """A real drift report (Evidently) with its verdict and index line, under tmp_path/reports."""
    from pipelines.monitor import compute_drift, decide_retrain, record_verdict

    reports = tmp_path / "reports"
    result = compute_drift(
        frame(2000, 1),
        frame(2000, 2, factor=1.8),
        ["amount", "channel", "country"],
        ["channel", "country"],
        spec,
        reports,
        "2026-03-02",
        "3",
        START,
        END,
    )
    decision = decide_retrain(result, spec, None, END)
    record_verdict(reports, "2026-03-02", result, decision, spec)
    return result


def received_as_a_client_reads_it(msg, report_html: str, pages: Pages) -> None:
    """The picture is inline and shown by the HTML, the links are Flywheel's pages, the report opens as HTML."""
    from PIL import Image

    body = msg.get_body(preferencelist=("html",)).get_content()
    (cid,) = re.findall(r'<img src="cid:([^"]+)"', body)
    (image,) = [p for p in msg.walk() if p.get_content_type() == "image/png"]
    assert image["Content-ID"] == f"<{cid}>" and image.get_content_disposition() == "inline"
    png = image.get_payload(decode=True)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(png)) as img:
        assert img.format == "PNG"
    assert f'href="{pages.model("fraud")}"' in body and f'href="{pages.dataset("transactions")}"' in body
    assert f'href="{pages.file(report_html)}"' in body and "/flywheel/files/reports/fraud/2026-03-02.html" in body
    assert msg.get_body(preferencelist=("plain",)) is not None
    (attachment,) = list(msg.iter_attachments())
    assert attachment.get_filename() == "2026-03-02.html" and attachment.get_content_type() == "text/html"
    data = attachment.get_payload(decode=True)
    assert data == Path(report_html).read_bytes() and data.lstrip()[:100].lower().startswith((b"<!doctype", b"<html"))


@contextlib.contextmanager
def serving(port: int, mail: Path):
    """`python -m flywheel.smtpd` on `port`, until the block ends."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "flywheel.smtpd", "--port", str(port), "--dir", str(mail)],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"flywheel.smtpd exited: {proc.stderr.read().decode()[-2000:]}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError("flywheel.smtpd did not answer in 30 s") from None
                time.sleep(0.1)
        yield port, mail
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def smtp_server(tmp_path: Path):
    with serving(free_port(), tmp_path / "mail") as server:
        yield server


def test_an_email_sent_while_smtp_is_down_is_delivered_after_it_comes_back(spec, report, tmp_path, monkeypatch):
    """The drift email meets a dead SMTP server: it is kept in the outbox ("pending" in the verdict and the
    index), retried by deliver_pending while the server is down, and delivered once it is back (the index
    then says "sent"); a message that expires undelivered is listed in a digest to its recipients."""
    from functools import partial

    from flywheel import dagkit
    from pipelines import outbox
    from pipelines.monitor import list_reports, record_late_delivery, send_drift_report

    port, mail = free_port(), tmp_path / "mail"
    monkeypatch.setenv("AIRFLOW_CONN_FLYWHEEL_SMTP", smtp_conn(port))   # nothing listens there yet
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FLYWHEEL_DATA_URI", raising=False)
    box = str(tmp_path / "home" / "outbox")
    pages = Pages("http://127.0.0.1:8080/", ((str(tmp_path / "reports"), "reports/fraud"),))
    status = send_drift_report(spec, report.verdict_json, LINKS, dagkit.send_email, attempts=1, final_try=True,
                               queue=partial(dagkit.send_or_queue, expire_hours=1), sleep=lambda s: None, pages=pages)
    assert status["status"] == "pending" and status["outbox_id"]
    assert list_reports(report.verdict_json.rsplit("/", 1)[0])[0]["email"] == "pending"
    assert outbox.status(box)["pending"] == 1

    now = datetime.now(UTC)
    still = outbox.deliver_pending(box, dagkit.send_email, now=now)      # the server is still down
    assert still.sent == [] and len(still.pending) == 1 and still.pending[0]["attempts"] == 2
    assert "Connection refused" in still.pending[0]["last_error"] or still.pending[0]["last_error"]

    def late(msg):
        record_late_delivery(msg.on_sent["verdict_json"], msg.sent_at)

    with serving(port, mail):
        back = outbox.deliver_pending(box, dagkit.send_email, now=now + timedelta(minutes=5), notify_sent=late)
        assert back.sent == [status["outbox_id"]] and back.pending == []
        (received,) = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
                       for p in (mail / "new").glob("*")]
        assert received["Subject"] == status["subject"] and "drift" in received["Subject"].lower()
        received_as_a_client_reads_it(received, report.report_html, pages)   # kept whole in the outbox
        assert list_reports(report.verdict_json.rsplit("/", 1)[0])[0]["email"] == "sent"
        assert outbox.status(box) == {"pending": 0, "sent": 1, "expired": 0, "expired_not_digested": 0}

    # a message that never got through before its expiry is listed in a digest once the server answers
    monkeypatch.setenv("AIRFLOW_CONN_FLYWHEEL_SMTP", smtp_conn(port))
    lost = dagkit.send_or_queue(Email(("owner@example.com",), "[Flywheel] lost", "<p>x</p>"), expire_hours=1)
    assert lost["status"] == "pending"
    gone = outbox.deliver_pending(box, dagkit.send_email, now=datetime.now(UTC) + timedelta(hours=2))
    assert gone.expired == [lost["outbox_id"]] and gone.digests_sent == 0        # nobody to tell yet
    with serving(port, mail):
        later = outbox.deliver_pending(box, dagkit.send_email, now=datetime.now(UTC) + timedelta(hours=3))
        assert later.digests_sent == 1
        subjects = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)["Subject"]
                    for p in (mail / "new").glob("*")]
        assert any("undelivered" in s for s in subjects), subjects
    assert outbox.status(box)["expired_not_digested"] == 0


def test_drift_email_arrives_with_its_picture_its_links_and_the_report(spec, report, smtp_server, monkeypatch,
                                                                       tmp_path) -> None:
    from flywheel.dagkit import send_email
    from pipelines.monitor import list_reports, send_drift_report

    port, mail = smtp_server
    monkeypatch.setenv("AIRFLOW_CONN_FLYWHEEL_SMTP", smtp_conn(port))
    pages = Pages("http://127.0.0.1:8080/", ((str(tmp_path / "reports"), "reports/fraud"),))
    status = send_drift_report(spec, report.verdict_json, LINKS, send_email, attempts=2, retry_delay_s=0.5,
                               pages=pages)
    assert status["status"] == "sent" and status["attempts"] == 1

    files: list[Path] = []
    deadline = time.monotonic() + 10
    while not files and time.monotonic() < deadline:
        files = sorted((mail / "new").glob("*"))
        time.sleep(0.05)
    assert len(files) == 1, files
    msg = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert {a.strip() for a in msg["To"].split(",")} == set(spec.owners)
    assert msg["Subject"].startswith("[Flywheel] fraud: drift detected in ")
    body = msg.get_body(preferencelist=("html",)).get_content()
    assert "Retrain requested" in body and "amount" in body
    assert 'href="http://127.0.0.1:5000/#/models/flywheel-fraud/versions/3"' in body
    received_as_a_client_reads_it(msg, report.report_html, pages)
    # what it costs on the wire: the report base64-encoded (4/3) plus the picture and the HTML
    size, on_wire = Path(report.report_html).stat().st_size, files[0].stat().st_size
    print(f"report {size / 1e6:.2f} MB -> message {on_wire / 1e6:.2f} MB")
    assert on_wire < 1.45 * size + 500_000

    verdict = json.loads(Path(report.verdict_json).read_text())
    assert verdict["email"]["status"] == "sent" and verdict["email_failed"] is False
    assert verdict["email"]["inline"] == ["2026-03-02.png"]
    assert list_reports(Path(report.verdict_json).parent)[0]["email"] == "sent"


def test_smtp_down_retries_fails_in_a_controlled_way_and_keeps_the_report(spec, report, monkeypatch) -> None:
    from flywheel.dagkit import send_email
    from pipelines.monitor import EmailDeliveryError, list_reports, send_drift_report

    monkeypatch.setenv("AIRFLOW_CONN_FLYWHEEL_SMTP", smtp_conn(free_port()))  # nobody listens there
    calls: list[str] = []

    def counted(mail):
        calls.append(mail.subject)
        send_email(mail)

    # a non-final task try: retried in-process, then raised so that Airflow retries the task
    t0 = time.monotonic()
    with pytest.raises(EmailDeliveryError, match="not delivered after 2 attempt"):
        send_drift_report(spec, report.verdict_json, LINKS, counted, final_try=False, attempts=2, retry_delay_s=0.2)
    assert len(calls) == 2 and time.monotonic() - t0 >= 0.2
    # the final try: recorded, logged, returned; the monitor run stays green
    status = send_drift_report(spec, report.verdict_json, LINKS, counted, final_try=True, attempts=2, retry_delay_s=0.2)
    assert len(calls) == 4
    assert status["status"] == "failed" and status["final"] is True
    assert "Connection refused" in status["error"] or "Errno 111" in status["error"]

    reports = Path(report.verdict_json).parent
    for name in ("2026-03-02.html", "2026-03-02.png", "2026-03-02.json"):
        assert (reports / name).stat().st_size > 0, name  # no lost report
    verdict = json.loads(Path(report.verdict_json).read_text())
    assert verdict["email_failed"] is True and verdict["email"]["report_html"] == report.report_html
    assert verdict["drift_detected"] is True and verdict["decision"]["request"] is True
    assert list_reports(reports)[0]["email"] == "failed"
