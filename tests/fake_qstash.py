"""A stand-in QStash (and app) on 127.0.0.1 with canned answers, for CLI tests that are
about what the commands print or refuse, not about passes: every request is recorded."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

WORKFLOW = "welcome-placeholder"


class FakeQStash:
    """Answers the logs and DLQ endpoints from `runs` and `dlq`; `fixed` overrides a
    `(method, path)` with `(status, body)`, the body JSON or raw bytes; anything else is
    a 404."""

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []
        self.dlq: dict[str, dict[str, Any]] = {}
        self.fixed: dict[tuple[str, str], tuple[int, Any]] = {}
        self.requests: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        # A short poll interval: `shutdown` waits for the loop's next turn.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def cli_args(self, project: Path | None = None) -> list[str]:
        """Options pointing a command at this server (as QStash and as the app)."""
        where = ["--project", str(project)] if project is not None else []
        return [*where, "--qstash-url", self.url, "--token", "t", "--app-url", self.url]

    def answer(self, method: str, target: str) -> tuple[int, Any]:
        """The status and JSON body for one request."""
        parts = urlsplit(target)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        if (method, parts.path) in self.fixed:
            return self.fixed[method, parts.path]
        if method == "GET" and parts.path == "/v2/workflows/logs":
            runs = [
                run
                for run in self.runs
                if query.get("workflowRunId", run["workflowRunId"]) == run["workflowRunId"]
                and query.get("workflowUrl", run["workflowUrl"]) == run["workflowUrl"]
            ]
            return 200, {"runs": runs}
        if method == "GET" and parts.path == "/v2/dlq":
            return 200, {"messages": list(self.dlq.values())}
        if method == "GET" and parts.path.startswith("/v2/dlq/"):
            entry = self.dlq.get(parts.path.removeprefix("/v2/dlq/"))
            return (200, entry) if entry is not None else (404, {"error": "dlq not found"})
        return 404, {"error": "not found"}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                fake.requests.append(f"{self.command} {self.path}")
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                status, body = fake.answer(self.command, self.path)
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                """Quiet."""

        return Handler

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@contextmanager
def fake_qstash() -> Iterator[FakeQStash]:
    """A started FakeQStash, stopped on exit."""
    fake = FakeQStash()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def make_project(root: Path) -> Path:
    """The smallest lobeflow project: one workflow's answers file, no code."""
    answers = root / ".lobeflow" / f"{WORKFLOW}.yml"
    answers.parent.mkdir(parents=True)
    answers.write_text(
        f"entity: user\nentity_plural: users\nworkflow_name: {WORKFLOW}\nverb: generate\n",
        encoding="utf-8",
    )
    return root
