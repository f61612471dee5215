"""Schedules: the cron parser, the schedule API through qstash-py, firing and persistence."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from lobeflow.cron import Cron, CronError
from lobeflow.engine import EngineServer
from qstash import QStash
from qstash.schedule import ScheduleState

from tests.engine.conftest import Api, Endpoint


def _ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def _next(expression: str, after: str) -> str:
    due = Cron.parse(expression).next_after(_ts(after))
    assert due is not None
    return dt.datetime.fromtimestamp(due, dt.UTC).strftime("%Y-%m-%d %H:%M")


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("* * * * *", "2026-01-01 10:00:30", "2026-01-01 10:01"),
        ("*/15 * * * *", "2026-01-01 10:14:00", "2026-01-01 10:15"),
        ("0 9 * * *", "2026-01-01 09:00:00", "2026-01-02 09:00"),
        ("5-10/5 3 * * *", "2026-01-01 03:06:00", "2026-01-01 03:10"),
        ("0 0 1 JAN *", "2026-03-01 00:00:00", "2027-01-01 00:00"),
        ("30 8 * * MON-FRI", "2026-11-27 09:00:00", "2026-11-30 08:30"),
        ("0 12 * * 7", "2026-11-25 00:00:00", "2026-11-29 12:00"),
        # Both day fields restricted: either matches (the 13th, or any Friday).
        ("0 0 13 * 5", "2026-11-14 00:00:00", "2026-11-20 00:00"),
        ("0 0 29 2 *", "2026-03-01 00:00:00", "2028-02-29 00:00"),
        ("CRON_TZ=America/New_York 0 9 * * *", "2026-01-01 00:00:00", "2026-01-01 14:00"),
    ],
)
def test_cron_next_after(expression: str, after: str, expected: str) -> None:
    assert _next(expression, after) == expected


def test_cron_impossible_and_invalid() -> None:
    # A date no month has is refused when the schedule is created, not kept to never fire.
    with pytest.raises(CronError, match="bad day-of-month field"):
        Cron.parse("0 0 31 2 *")
    for bad in ("* * * *", "60 * * * *", "* * * * * *", "*/0 * * * *", "a b c d e", "5-1 * * * *"):
        with pytest.raises(CronError):
            Cron.parse(bad)
    with pytest.raises(CronError, match="unknown time zone 'Nowhere/Else'"):
        Cron.parse("CRON_TZ=Nowhere/Else * * * * *")


@pytest.mark.parametrize(
    "expression",
    # cronsim extensions that QStash does not document: last day, nth weekday, seconds.
    ["0 0 L * *", "0 0 LW * *", "0 0 * * MON#2", "0 0 * * 5L", "0 0 ? * *", "0 0 0 * * *"],
)
def test_cron_extensions_beyond_qstash_are_refused(expression: str) -> None:
    with pytest.raises(CronError):
        Cron.parse(expression)


@pytest.mark.parametrize(
    ("macro", "equivalent"),
    [
        ("@daily", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("CRON_TZ=Europe/Paris @weekly", "0 0 * * 0"),
    ],
)
def test_cron_macros_are_refused_with_the_five_field_equivalent(
    macro: str, equivalent: str
) -> None:
    with pytest.raises(CronError) as caught:
        Cron.parse(macro)
    assert caught.value.reason == (
        f"macros such as @daily are not part of QStash's cron syntax; write {equivalent!r}"
    )
    with pytest.raises(CronError, match="not part of QStash's cron syntax$"):
        Cron.parse("@every 5m")


def _times(expression: str, after: str, count: int) -> list[str]:
    cron = Cron.parse(expression)
    out: list[str] = []
    moment = _ts(after)
    for _ in range(count):
        due = cron.next_after(moment)
        assert due is not None
        out.append(dt.datetime.fromtimestamp(due, dt.UTC).strftime("%Y-%m-%d %H:%M"))
        moment = due
    return out


def test_cron_spring_forward_fires_a_skipped_time_once_at_the_end_of_the_gap() -> None:
    # New York, 2026-03-08: 02:00 EST jumps to 03:00 EDT, so 02:30 does not exist that day.
    assert _times("CRON_TZ=America/New_York 30 2 * * *", "2026-03-07 12:00:00", 3) == [
        "2026-03-08 07:00",  # 03:00 EDT, right after the gap
        "2026-03-09 06:30",  # 02:30 EDT
        "2026-03-10 06:30",
    ]


def test_cron_fall_back_fires_a_repeated_time_once() -> None:
    # New York, 2026-11-01: 02:00 EDT falls back to 01:00 EST, so 01:30 happens twice.
    assert _times("CRON_TZ=America/New_York 30 1 * * *", "2026-10-31 12:00:00", 2) == [
        "2026-11-01 05:30",  # 01:30 EDT, the first one
        "2026-11-02 06:30",  # 01:30 EST the next day; nothing at 06:30 UTC on the 1st
    ]
    # An expression with a wildcard minute fires by the clock, in both repeated hours.
    assert _times("CRON_TZ=America/New_York */30 1 * * *", "2026-10-31 12:00:00", 4) == [
        "2026-11-01 05:00",
        "2026-11-01 05:30",
        "2026-11-01 06:00",
        "2026-11-01 06:30",
    ]


def test_schedule_api_through_qstash_py(
    make_engine: Callable[..., EngineServer],
    endpoint: Endpoint,
    api_factory: Callable[[EngineServer], Api],
) -> None:
    recorder, app = endpoint
    server = make_engine(time_scale=0.01)
    client = QStash(server.config.token, base_url=server.url)
    url = f"{app.url}/nightly?batch=1"
    schedule_id = client.schedule.create(
        destination=url,
        cron="0 3 * * *",
        body='{"job":"nightly"}',
        content_type="application/json",
        headers={"X-Job": "nightly"},
        retries=1,
        delay="10s",
        timeout=30,
        label="batch",
        flow_control={"key": "nightly-fc", "parallelism": 2},
    )
    schedule = client.schedule.get(schedule_id)
    assert schedule.destination == url
    assert schedule.cron == "0 3 * * *"
    assert schedule.body == '{"job":"nightly"}'
    assert schedule.headers == {"X-Job": ["nightly"], "Content-Type": ["application/json"]}
    assert (schedule.retries, schedule.delay, schedule.timeout) == (1, 10, 30)
    assert schedule.label == "batch"
    assert schedule.flow_control is not None and schedule.flow_control.parallelism == 2
    assert schedule.paused is False
    assert schedule.next_schedule_time is not None
    assert schedule.next_schedule_time > time.time() * 1000
    assert [s.schedule_id for s in client.schedule.list()] == [schedule_id]

    # Fired by hand: the stored request, its headers and delay (scaled), and the schedule id.
    fired_at = time.monotonic()
    (message_id,) = server.engine.fire_schedule(schedule_id)
    server.engine.wait_until_idle(10)
    (hit,) = recorder.paths("/nightly")
    assert hit.started - fired_at >= 10 * 0.01
    assert hit.body == b'{"job":"nightly"}'
    assert hit.headers["x-job"] == "nightly"
    assert hit.headers["upstash-schedule-id"] == schedule_id
    assert hit.headers["upstash-message-id"] == message_id
    after = client.schedule.get(schedule_id)
    assert after.last_schedule_states == {message_id: ScheduleState.SUCCESS}
    assert after.last_schedule_time is not None

    # Update through Upstash-Schedule-Id, pause/resume (PATCH from the SDK, POST too), delete.
    assert client.schedule.create(destination=url, cron="*/5 * * * *", schedule_id=schedule_id) == (
        schedule_id
    )
    assert client.schedule.get(schedule_id).cron == "*/5 * * * *"
    client.schedule.pause(schedule_id)
    assert client.schedule.get(schedule_id).paused is True
    api = api_factory(server)
    assert api.client.post(f"/v2/schedules/{schedule_id}/resume").status_code == 200
    assert client.schedule.get(schedule_id).paused is False
    client.schedule.delete(schedule_id)
    missing = api.client.get(f"/v2/schedules/{schedule_id}")
    assert missing.status_code == 404
    assert missing.json() == {"error": f"schedule {schedule_id} not found"}
    bad = api.client.post(f"/v2/schedules/{url}", headers={"Upstash-Cron": "every minute"})
    assert bad.status_code == 400
    assert bad.json() == {
        "error": "invalid cron expression: every minute "
        "(expected five fields: minute hour day-of-month month day-of-week)"
    }
    daily = api.client.post(f"/v2/schedules/{url}", headers={"Upstash-Cron": "@daily"})
    assert daily.status_code == 400
    assert "write '0 0 * * *'" in daily.json()["error"]


@pytest.mark.slow
def test_schedule_fires_on_the_wall_clock_minute(
    make_engine: Callable[..., EngineServer], endpoint: Endpoint
) -> None:
    recorder, app = endpoint
    server = make_engine(time_scale=0.01)
    client = QStash(server.config.token, base_url=server.url)
    schedule_id = client.schedule.create(destination=f"{app.url}/tick", cron="* * * * *")
    next_time = client.schedule.get(schedule_id).next_schedule_time
    assert next_time is not None
    # The cron minute is real time, so wait for it (under a minute) and no longer.
    deadline = time.monotonic() + (next_time / 1000 - time.time()) + 10
    while not recorder.paths("/tick") and time.monotonic() < deadline:
        time.sleep(0.1)
    (hit,) = recorder.paths("/tick")
    assert hit.headers["upstash-schedule-id"] == schedule_id
    again = client.schedule.get(schedule_id)
    assert again.next_schedule_time == next_time + 60_000


def test_schedules_survive_a_restart(
    make_engine: Callable[..., EngineServer], endpoint: Endpoint, tmp_path: Path
) -> None:
    recorder, app = endpoint
    db = tmp_path / "engine.db"
    first = make_engine(db_path=db)
    client = QStash(first.config.token, base_url=first.url)
    schedule_id = client.schedule.create(
        destination=f"{app.url}/kept", cron="0 0 1 1 *", body="payload", queue="nightly"
    )
    client.schedule.pause(schedule_id)
    first.stop()
    second = make_engine(db_path=db)
    client = QStash(second.config.token, base_url=second.url)
    schedule = client.schedule.get(schedule_id)
    assert (schedule.paused, schedule.queue, schedule.body) == (True, "nightly", "payload")
    second.engine.fire_schedule(schedule_id)
    second.engine.wait_until_idle(10)
    assert [hit.body for hit in recorder.paths("/kept")] == [b"payload"]
