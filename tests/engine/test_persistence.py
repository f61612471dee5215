"""SQLite persistence: `kill -9` of the engine process loses no accepted message or run."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from lobeflow.engine import DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY, DEV_TOKEN
from lobeflow.testing import AppServer, serve_app
from upstash_workflow import AsyncWorkflowContext
from upstash_workflow.fastapi import Serve

from tests.engine.conftest import Recorder, recording_app

TIME_SCALE = "0.1"
AUTH = {"Authorization": f"Bearer {DEV_TOKEN}"}


class EngineProcess:
    """`python -m lobeflow dev` as a subprocess."""

    def __init__(self, db: Path, port: int = 0) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lobeflow",
                "dev",
                "--port",
                str(port),
                "--db",
                str(db),
                "--time-scale",
                TIME_SCALE,
                "--quiet",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.url = self._wait_banner()
        self.port = int(self.url.rsplit(":", 1)[1])

    def _wait_banner(self) -> str:
        lines: queue.Queue[str] = queue.Queue()
        # A reader thread drains stdout for the whole life of the process (never blocks it).
        threading.Thread(target=self._pump, args=(lines,), daemon=True).start()
        deadline = time.monotonic() + 30
        seen: list[str] = []
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            seen.append(line)
            if "lobeflow engine running at " in line:
                return line.rsplit(" ", 1)[1].strip()
        self.kill()
        raise AssertionError("engine did not start:\n" + "".join(seen))

    def _pump(self, lines: queue.Queue[str]) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            lines.put(line)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def make_workflow_app(done: list[str]) -> FastAPI:
    app = FastAPI()
    serve = Serve(app)

    @serve.post("/wf")
    async def wf(context: AsyncWorkflowContext[dict[str, int]]) -> None:
        async def one() -> int:
            return context.request_payload["i"]

        value: int = await context.run("one", one)
        await context.sleep("nap", 3)

        async def two() -> None:
            done.append(f"{context.workflow_run_id}:{value}")

        await context.run("two", two)

    return app


@pytest.fixture
def apps() -> Iterator[list[AppServer]]:
    started: list[AppServer] = []
    try:
        yield started
    finally:
        for app in started:
            app.stop()


@pytest.mark.slow
def test_kill_9_and_restart_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, apps: list[AppServer]
) -> None:
    db = tmp_path / "engine.sqlite3"
    first = EngineProcess(db)
    processes = [first]
    try:
        monkeypatch.setenv("QSTASH_URL", first.url)
        monkeypatch.setenv("QSTASH_TOKEN", DEV_TOKEN)
        monkeypatch.setenv("QSTASH_CURRENT_SIGNING_KEY", DEV_CURRENT_SIGNING_KEY)
        monkeypatch.setenv("QSTASH_NEXT_SIGNING_KEY", DEV_NEXT_SIGNING_KEY)
        recorder = Recorder(hold=0.05)
        sink = serve_app(recording_app(recorder))
        apps.append(sink)
        done: list[str] = []
        workflows = serve_app(make_workflow_app(done))
        apps.append(workflows)

        with httpx.Client(base_url=first.url, headers=AUTH, trust_env=False, timeout=10) as client:
            items = [
                {
                    "destination": f"{sink.url}/m/{i}",
                    "headers": {
                        "Upstash-Flow-Control-Key": "slow",
                        "Upstash-Flow-Control-Value": "parallelism=2",
                    },
                    "body": str(i),
                }
                for i in range(40)
            ]
            assert client.post("/v2/batch", json=items).status_code == 201
            runs = 5
            # Deterministic run ids (as lobeflow's generated triggers use): a re-delivered
            # start can then never fork a second run.
            starts = [
                {
                    "destination": f"{workflows.url}/wf",
                    "headers": {
                        "Content-Type": "application/json",
                        "Upstash-Workflow-Init": "true",
                        "Upstash-Workflow-RunId": f"wfr_persist_{i}",
                        "Upstash-Workflow-Url": f"{workflows.url}/wf",
                        "Upstash-Feature-Set": "LazyFetch,InitialBody,WF_DetectTrigger",
                        "Upstash-Forward-Upstash-Workflow-Sdk-Version": "1",
                    },
                    "body": json.dumps({"i": i}),
                }
                for i in range(runs)
            ]
            assert client.post("/v2/batch", json=starts).status_code == 201
            # Let some deliveries and run steps happen, then kill mid-flight.
            deadline = time.monotonic() + 10
            while len(recorder.hits) < 6 and time.monotonic() < deadline:
                time.sleep(0.01)
        first.kill()
        delivered_before = len(recorder.hits)
        assert delivered_before < 40

        second = EngineProcess(db, port=first.port)
        processes.append(second)
        with httpx.Client(base_url=second.url, headers=AUTH, trust_env=False, timeout=10) as client:
            deadline = time.monotonic() + 40
            states: list[Any] = []
            while time.monotonic() < deadline:
                delivered = {hit.path for hit in recorder.hits}
                states = [
                    r["workflowState"]
                    for r in client.get("/v2/workflows/logs?count=50").json()["runs"]
                ]
                if len(delivered) == 40 and len(states) == runs and set(states) == {"RUN_SUCCESS"}:
                    break
                time.sleep(0.05)
            assert {hit.path for hit in recorder.hits} == {f"/m/{i}" for i in range(40)}
            assert states == ["RUN_SUCCESS"] * runs
            assert sorted(entry.split(":")[1] for entry in set(done)) == [
                str(i) for i in range(runs)
            ]
    finally:
        for process in processes:
            process.terminate()
        os.environ.pop("APP_URL", None)
