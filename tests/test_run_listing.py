"""A pass's run listing stays current, with the engine's change tokens and without them."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from lobeflow.engine import EngineConfig, EngineServer
from lobeflow.run import QStashClient
from lobeflow.run.model import RunLog
from lobeflow.run.runner import _UrlRuns

from tests.run.conftest import park_run

URL = "http://127.0.0.1:9/wf"  # never delivered: every run is parked for a day


class NoTokenClient(QStashClient):
    """The engine's answers with the change token dropped, as Upstash answers."""

    def run_changes(
        self, *, url: str, from_date: int, token: str | None
    ) -> tuple[list[RunLog], str | None]:
        assert token is None
        runs, _ = super().run_changes(url=url, from_date=from_date, token=None)
        return runs, None


@pytest.fixture
def engine() -> Iterator[EngineServer]:
    server = EngineServer(EngineConfig(), host="127.0.0.1", port=0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _park(engine: EngineServer, run_id: str) -> None:
    """Open a workflow run whose start is delayed a day: it stays `RUN_STARTED`."""
    park_run(engine, URL, run_id)


def _cancel(engine: EngineServer, run_id: str) -> None:
    response = httpx.delete(
        f"{engine.url}/v2/workflows/runs/{run_id}?cancel=true",
        headers={"Authorization": f"Bearer {engine.config.token}"},
        trust_env=False,
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("client_class", [QStashClient, NoTokenClient], ids=["engine", "upstash"])
def test_refresh_sees_new_and_changed_runs(
    engine: EngineServer, client_class: type[QStashClient]
) -> None:
    client = client_class(engine.url, engine.config.token)
    try:
        for number in range(3):
            _park(engine, f"wfr_{number}")
        listing = _UrlRuns(since=0)
        assert listing.refresh(client, URL)
        assert sorted(listing.runs) == ["wfr_0", "wfr_1", "wfr_2"]
        assert (listing.token is not None) == (client_class is QStashClient)
        assert not listing.refresh(client, URL)  # nothing changed

        _cancel(engine, "wfr_1")
        _park(engine, "wfr_3")
        assert listing.refresh(client, URL)
        assert listing.runs["wfr_1"].state == "RUN_CANCELED"
        assert sorted(listing.runs) == ["wfr_0", "wfr_1", "wfr_2", "wfr_3"]

        # Once every run has ended, only a new run makes a refresh list again.
        for run_id in ("wfr_0", "wfr_2", "wfr_3"):
            _cancel(engine, run_id)
        assert listing.refresh(client, URL)
        assert {run.state for run in listing.runs.values()} == {"RUN_CANCELED"}
        assert not listing.refresh(client, URL)
        _park(engine, "wfr_4")
        assert listing.refresh(client, URL) and listing.runs["wfr_4"].state == "RUN_STARTED"
    finally:
        client.close()
