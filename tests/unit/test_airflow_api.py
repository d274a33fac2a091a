"""The REST client's retry of SQLite's transient "Database error", against a real HTTP server on loopback that
behaves as Airflow's API server does under a burst: the first POST commits the run but answers 500."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from flywheel.airflow_api import AirflowAPI, AirflowAPIError

pytestmark = pytest.mark.unit


@pytest.fixture
def server():
    state: dict = {"runs": {}, "posts": 0, "fail_posts": 1, "fail_gets": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):   # quiet
            pass

        def _send(self, code: int, body: dict) -> None:
            raw = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path == "/auth/token":
                return self._send(201, {"access_token": "t"})
            state["posts"] += 1
            run_id = body["dag_run_id"]
            if run_id in state["runs"]:
                return self._send(409, {"detail": "already exists"})
            state["runs"][run_id] = {"dag_run_id": run_id, "state": "queued"}   # committed ...
            if state["fail_posts"]:
                state["fail_posts"] -= 1                                          # ... but the answer is lost
                return self._send(500, {"detail": {"reason": "Database error"}})
            return self._send(200, state["runs"][run_id])

        def do_GET(self):
            if state["fail_gets"]:
                state["fail_gets"] -= 1
                return self._send(500, {"detail": {"reason": "Database error"}})
            run_id = self.path.rsplit("/", 1)[-1]
            if run_id in state["runs"]:
                return self._send(200, state["runs"][run_id])
            return self._send(200, {"dags": [{"dag_id": "d"}]})

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    httpd.shutdown()


def test_a_trigger_whose_answer_was_a_database_error_is_neither_lost_nor_doubled(server):
    url, state = server
    run = AirflowAPI(url, "u", "p").trigger("train__m", run_id="manual__1")
    assert run["dag_run_id"] == "manual__1" and list(state["runs"]) == ["manual__1"] and state["posts"] == 2
    # a first-try 409 is a real conflict (the run id was used before): said, not hidden
    with pytest.raises(AirflowAPIError, match="409"):
        AirflowAPI(url, "u", "p").trigger("train__m", run_id="manual__1")


def test_reads_are_retried_and_a_lasting_error_is_raised(server):
    url, state = server
    state["fail_gets"] = 2   # two retries: 0.5 s + 1 s of real backoff
    assert AirflowAPI(url, "u", "p").dags() == [{"dag_id": "d"}]
    state["fail_gets"] = 99
    with pytest.raises(AirflowAPIError, match="500"):
        AirflowAPI(url, "u", "p", retries=1).dags()
    assert state["fail_gets"] == 99 - 2   # tried, retried once, then said so
