"""Flow control read back through qstash-py as Upstash reports it, defaults included.

A message, DLQ entry or schedule published with flow control reports `period` (seconds, 1 by
default) always, and `parallelism` and `rate` only when they were given; the flow-control API
reports every field of the key.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import httpx
from lobeflow.engine import EngineServer
from qstash import QStash
from qstash.message import BatchJsonRequest, FlowControl

FAR = "1d"  # keeps the messages pending so they can be read back


def _client(server: EngineServer) -> QStash:
    return QStash(server.config.token, base_url=server.url)


def _closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/gone"


def test_messages_report_flow_control_defaults(make_engine: Callable[..., EngineServer]) -> None:
    server = make_engine(time_scale=1.0)
    client = _client(server)
    url = _closed_url()

    only_parallelism = client.message.publish_json(
        url=url, body={}, delay=FAR, flow_control=FlowControl(key="fc-p", parallelism=5)
    )
    everything = client.message.publish_json(
        url=url,
        body={},
        delay=FAR,
        flow_control=FlowControl(key="fc-all", parallelism=3, rate=4, period=2),
    )
    batch = client.message.batch_json(
        [
            BatchJsonRequest(
                url=url, body={}, delay=FAR, flow_control=FlowControl(key="fc-r", rate=1)
            ),
            BatchJsonRequest(
                url=url,
                body={},
                delay=FAR,
                flow_control=FlowControl(key="fc-rp", rate=23, period="1h30m3s"),
            ),
        ]
    )

    def read(message_id: str) -> tuple[str, int | None, int | None, int | None]:
        flow = client.message.get(message_id).flow_control
        assert flow is not None
        return flow.key, flow.parallelism, flow.rate, flow.period

    assert read(only_parallelism.message_id) == ("fc-p", 5, None, 1)
    assert read(everything.message_id) == ("fc-all", 3, 4, 2)
    assert read(batch[0].message_id) == ("fc-r", None, 1, 1)  # type: ignore[union-attr]
    assert read(batch[1].message_id) == ("fc-rp", None, 23, 5403)  # type: ignore[union-attr]
    raw = httpx.get(
        f"{server.url}/v2/messages/{only_parallelism.message_id}",
        headers={"Authorization": f"Bearer {server.config.token}"},
        trust_env=False,
    ).json()
    assert {k: raw[k] for k in raw if k in ("flowControlKey", "parallelism", "rate", "period")} == {
        "flowControlKey": "fc-p",
        "parallelism": 5,
        "period": 1,
    }


def test_a_queue_message_without_flow_control_reports_none(
    make_engine: Callable[..., EngineServer],
) -> None:
    server = make_engine(time_scale=1.0)
    client = _client(server)
    queued = client.message.enqueue_json(queue="jobs", url=_closed_url(), body={})

    assert client.message.get(queued.message_id).flow_control is None  # type: ignore[union-attr]


def test_schedules_report_flow_control_defaults(make_engine: Callable[..., EngineServer]) -> None:
    server = make_engine(time_scale=1.0)
    client = _client(server)
    schedule_id = client.schedule.create_json(
        cron="1 1 1 1 1",
        destination=_closed_url(),
        body={},
        flow_control=FlowControl(key="fc-sched", parallelism=2),
    )

    flow = client.schedule.get(schedule_id).flow_control

    assert flow is not None
    assert (flow.key, flow.parallelism, flow.rate, flow.period) == ("fc-sched", 2, None, 1)


def test_dlq_entries_report_flow_control(make_engine: Callable[..., EngineServer]) -> None:
    server = make_engine(time_scale=1.0)
    client = _client(server)
    published = client.message.publish_json(
        url=_closed_url(), body={}, retries=0, flow_control=FlowControl(key="fc-dlq", parallelism=5)
    )
    server.engine.wait_until_idle(10)

    (entry,) = [m for m in client.dlq.list().messages if m.message_id == published.message_id]

    assert entry.flow_control is not None
    flow = entry.flow_control
    assert (flow.key, flow.parallelism, flow.rate, flow.period) == ("fc-dlq", 5, None, 1)


def test_flow_control_api_reports_every_field(make_engine: Callable[..., EngineServer]) -> None:
    server = make_engine(time_scale=1.0)
    client = _client(server)
    client.message.publish_json(
        url=_closed_url(), body={}, delay=FAR, flow_control=FlowControl(key="fc-api", parallelism=5)
    )
    before = int(time.time())

    raw = httpx.get(
        f"{server.url}/v2/flowControl/fc-api",
        headers={"Authorization": f"Bearer {server.config.token}"},
        trust_env=False,
    ).json()
    info = client.flow_control.get("fc-api")

    assert set(raw) == {
        "flowControlKey",
        "waitListSize",
        "parallelismMax",
        "parallelismCount",
        "rateMax",
        "rateCount",
        "ratePeriod",
        "ratePeriodStart",
        "isPaused",
        "isPinnedParallelism",
        "isPinnedRate",
    }
    assert (info.key, info.parallelism_max, info.parallelism_count) == ("fc-api", 5, 0)
    assert (info.rate_max, info.rate_count, info.rate_period) == (0, 0, 1)
    assert info.wait_list_size == 0  # delayed, so not waiting for a slot yet
    assert (info.is_paused, info.is_pinned_parallelism, info.is_pinned_rate) == (False,) * 3
    assert 0 <= info.rate_period_start <= before + 1
    listed = httpx.get(
        f"{server.url}/v2/flowControl",
        headers={"Authorization": f"Bearer {server.config.token}"},
        trust_env=False,
    ).json()
    assert listed == [raw]
