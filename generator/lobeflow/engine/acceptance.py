"""Accepting messages: publish, validation, deduplication, URL groups and queues.

A message accepted here is registered (`ledger`) and handed to the scheduler; for a workflow
message, its run is created or its history extended (`run_control`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lobeflow.engine import errors
from lobeflow.engine.config import EngineConfig
from lobeflow.engine.dedup import Dedup
from lobeflow.engine.errors import ApiError
from lobeflow.engine.flow_control import FlowControl
from lobeflow.engine.headers import lower_map, merge_missing
from lobeflow.engine.ledger import Ledger
from lobeflow.engine.message_building import (
    build_message,
    feature_set,
    normalize_url,
    step_identity,
)
from lobeflow.engine.model import (
    CREATED,
    FROM_CALLBACK,
    RUN_STARTED,
    STEP,
    TO_CALLBACK,
    Accepted,
    HistoryEntry,
    Run,
)
from lobeflow.engine.run_control import RunControl
from lobeflow.engine.scheduler import Scheduler
from lobeflow.engine.state import EngineState
from lobeflow.engine.url_groups import NAME as URL_GROUP_NAME
from lobeflow.engine.url_groups import UrlGroup, UrlGroups


class Acceptance:
    """Publishing: a request's messages checked, deduplicated and accepted."""

    def __init__(
        self,
        config: EngineConfig,
        state: EngineState,
        dedup: Dedup,
        ledger: Ledger,
        runs: RunControl,
        flow_control: FlowControl,
        url_groups: UrlGroups,
        scheduler: Scheduler,
    ) -> None:
        """Accept messages into `state`.

        Args:
            config: The publish limits and defaults a message is built with.
            state: Its runs, the counters and the store.
            dedup: The deduplication ids seen lately.
            ledger: Registers and logs each accepted message.
            runs: Creates a run at its first step and records the steps that follow.
            flow_control: Creates a queue the first time a message names it.
            url_groups: The URL groups a destination may name.
            scheduler: Takes each accepted message.
        """
        self._config = config
        self._runs = state.runs_by_id
        self._tally = state.tally
        self._store = state.store
        self.dedup = dedup
        self._ledger = ledger
        self._run_control = runs
        self._flow_control = flow_control
        self._url_groups = url_groups
        self._scheduler = scheduler

    async def publish(
        self, destination: str, headers: Mapping[str, str], body: bytes, queue: str | None = None
    ) -> tuple[str, bool]:
        """Accept one message and wait until it is durable.

        Returns:
            `(message_id, deduplicated)`.
        """
        result = self.accept(destination, headers, body, queue=queue)
        await self._store.commit()
        return result

    def accept(
        self,
        destination: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        queue: str | None = None,
        internal: bool = False,
        history_prefix: Sequence[HistoryEntry] = (),
        topic: tuple[str, str | None] | None = None,
        log_extra: Mapping[str, Any] | None = None,
    ) -> tuple[str, bool]:
        """Accept one message (durable at the next `store.commit()`).

        Args:
            destination: The destination URL.
            headers: The publish headers (`Upstash-*` control headers, forwards...).
            body: The raw body.
            queue: Queue name for `/v2/enqueue` and batch items.
            internal: The engine itself publishes it (callbacks); skips run-state checks.
            history_prefix: For a run start: steps the new run inherits before this message's
                own entry (resuming a dead-lettered run).
            topic: `(url group, endpoint name)` when the publish was to a URL group.
            log_extra: Fields the run log shows on this step (a wait's deadline).

        Returns:
            `(message_id, deduplicated)`.

        Raises:
            ApiError: Invalid destination or header, or a step for an ended run.
        """
        url = normalize_url(destination)
        lower = lower_map(headers)
        run_id = lower.get("upstash-workflow-runid") or None
        call_type: str | None = None
        run: Run | None = None
        step_key: tuple[int, int] | None = None
        is_start = False
        if run_id is not None:
            call_type = lower.get("upstash-workflow-calltype") or STEP
            if lower.get("upstash-workflow-init") == "true" and call_type == STEP:
                existing = self._runs.get(run_id)
                if existing is not None and existing.state == RUN_STARTED:
                    # As on QStash, a run id is reserved while its run is in progress...
                    return existing.start_message_id, True
                # ...and released once it has ended: the id starts a new run (below, once
                # the message has passed deduplication).
                is_start = True
            else:
                run = self._runs.get(run_id)
                if not internal:
                    self._refuse_closed_run(run_id, call_type)
                step_key = step_identity(body) if call_type == STEP else None
                if run is not None and step_key is not None:
                    duplicate = run.step_ids.get(step_key)
                    if duplicate is not None:
                        return duplicate, True
                if run is not None and call_type == STEP and run.config_headers and url == run.url:
                    headers = merge_missing(headers, run.config_headers)
                    lower = lower_map(headers)

        # On every publish, not only deduplicated ones: the table shrinks back on its own.
        self.dedup.purge()
        dedup_key = self.dedup.key(url, lower, body)
        if dedup_key is not None and topic is not None:
            dedup_key += "\0" + url  # one publish to a group is one message per endpoint
        if dedup_key is not None:
            hit = self.dedup.lookup(dedup_key)
            if hit is not None:
                return hit, True

        # Keep only what configures or is forwarded with the message: never the API request's
        # own Authorization, Host, User-Agent...
        kept = {
            name: value
            for name, value in headers.items()
            if name.lower().startswith("upstash-") or name.lower() == "content-type"
        }
        message = build_message(url, kept, lower, body, queue, self._config)
        if queue is not None and queue not in self._flow_control.queues:
            self._flow_control.upsert_queue(queue, 1, paused=False)
        message.run_id = run_id
        message.call_type = call_type
        message.dedup_id = dedup_key
        message.no_delete = "WF_NoDelete" in feature_set(lower)
        if topic is not None:
            message.topic, message.endpoint_name = topic
        if is_start:
            assert run_id is not None
            if run_id in self._runs:
                self._store.reset_run(run_id)
            run = self._run_control.create(run_id, message, lower, history_prefix)
        if run is not None and call_type in (STEP, TO_CALLBACK, FROM_CALLBACK):
            if not is_start:
                self._run_control.append_entry(run, message, body, call_type, log_extra)
                if step_key is not None:
                    run.step_ids[step_key] = message.id
            message.entry_index = len(run.history) - 1
        if dedup_key is not None:
            self.dedup.remember(dedup_key, message.id)

        tally = self._tally
        tally.published += 1
        tally.published_by_url[url] = tally.published_by_url.get(url, 0) + 1
        self._ledger.register(message)
        self._store.put_message(message)
        self._ledger.log(message, CREATED)
        self._scheduler.schedule(message)
        return message.id, False

    def check_accept(
        self,
        destination: str,
        headers: Mapping[str, str],
        queue: str | None,
        started: set[str],
    ) -> None:
        """Raise what `accept` would raise for this message, without accepting it.

        Lets a batch be checked whole before any of it is accepted.

        Args:
            destination: The destination URL.
            headers: The publish headers.
            queue: Queue name, if any.
            started: Run ids started by the messages checked before this one (updated):
                their steps may follow in the same batch.

        Raises:
            ApiError: Invalid destination or header, or a step for a run that is not running.
        """
        group = self._url_group(destination)
        if group is not None:  # checked as its first endpoint: the headers are shared
            destination = group.endpoints[0]["url"]
        url = normalize_url(destination)
        lower = lower_map(headers)
        run_id = lower.get("upstash-workflow-runid") or None
        if run_id is not None:
            call_type = lower.get("upstash-workflow-calltype") or STEP
            if lower.get("upstash-workflow-init") == "true" and call_type == STEP:
                started.add(run_id)
            elif run_id not in started:
                self._refuse_closed_run(run_id, call_type)
                run = self._runs.get(run_id)
                if run is not None and call_type == STEP and run.config_headers and url == run.url:
                    headers = merge_missing(headers, run.config_headers)
        self.check_publish(url, dict(headers), queue)

    def _refuse_closed_run(self, run_id: str, call_type: str) -> None:
        """A client may publish a step (or a call) only for a run in progress."""
        if call_type not in (STEP, TO_CALLBACK):
            return
        run = self._runs.get(run_id)
        if run is None:
            raise ApiError(400, errors.RUN_NOT_FOUND.format(id=run_id))
        if run.state != RUN_STARTED:
            raise ApiError(400, errors.RUN_ENDED.format(id=run_id, state=run.state))

    def accept_destination(
        self,
        destination: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        queue: str | None = None,
    ) -> Accepted | list[Accepted]:
        """Accept a publish to a URL, or to a URL group: one message per endpoint.

        Returns:
            The message accepted for a URL; for a group, one per endpoint, in its order.

        Raises:
            ApiError: Invalid destination or header (nothing accepted), unknown group (404).
        """
        group = self._url_group(destination)
        if group is None:
            message_id, deduplicated = self.accept(destination, headers, body, queue=queue)
            return Accepted(message_id, normalize_url(destination), deduplicated)
        # Checked once for all endpoints, so a bad header accepts none of them.
        build_message(
            group.endpoints[0]["url"], dict(headers), lower_map(headers), b"", queue, self._config
        )
        accepted = []
        for endpoint in group.endpoints:
            message_id, deduplicated = self.accept(
                endpoint["url"],
                headers,
                body,
                queue=queue,
                topic=(group.name, endpoint.get("name")),
            )
            accepted.append(Accepted(message_id, endpoint["url"], deduplicated))
        return accepted

    def _url_group(self, destination: str) -> UrlGroup | None:
        """The group a destination names (`None` for a URL).

        Raises:
            ApiError: 404 when it has a group name's shape but no such group exists, 501 for
                an Upstash API destination (`api/llm`).
        """
        if destination.startswith("api/"):
            what = f"publishing to {destination.split('?', 1)[0]}"
            raise ApiError(
                501,
                errors.NOT_SUPPORTED.format(what=what)
                + ": LLM provider APIs make no sense locally; publish to the provider's URL",
            )
        if destination.startswith(("http:", "https:")) or not URL_GROUP_NAME.match(destination):
            return None
        group = self._url_groups.by_name.get(destination)
        if group is None or not group.endpoints:
            raise ApiError(404, errors.URL_GROUP_NOT_FOUND.format(name=destination))
        return group

    def check_publish(self, destination: str, headers: dict[str, str], queue: str | None) -> str:
        """Validate a publish request without accepting it.

        Returns:
            The normalised destination URL, or the URL group name.

        Raises:
            ApiError: Invalid destination or header, unknown URL group.
        """
        group = self._url_group(destination)
        url = normalize_url(destination) if group is None else group.endpoints[0]["url"]
        build_message(url, headers, lower_map(headers), b"", queue, self._config)
        return url if group is None else group.name
