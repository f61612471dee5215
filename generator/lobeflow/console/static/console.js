// lobeflow console: plain JS, no build step. Views are re-rendered from JSON polled every
// second; the DOM is only replaced when the data changed, so clicks are not lost.
"use strict";

const POLL_MS = 1000;
const CSRF = document.querySelector('meta[name="lobeflow-csrf"]').content;
const view = document.getElementById("view");
const state = { open: new Set(), offsets: new Map(), selected: new Set(), last: "", timer: 0 };

// ---------------------------------------------------------------- DOM helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "style") el.style.cssText = value; // CSSOM: allowed by the page's CSP
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const link = (href, text, attrs) => h("a", { href, ...(attrs || {}) }, text);
const stateTag = (s) => h("span", { class: `state s-${s}` }, String(s || "-").replace(/^RUN_|^CALLBACK_/, "").toLowerCase());
const time = (ms) => (ms ? new Date(ms).toLocaleTimeString() : "-");

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  if (seconds < 1) return `${Math.round(seconds * 1000)}ms`;
  if (seconds < 60) return `${seconds.toFixed(1)}s`;
  const m = Math.floor(seconds / 60);
  return m < 60 ? `${m}m${String(Math.floor(seconds % 60)).padStart(2, "0")}s` : `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}m`;
}

function bar(counts, total) {
  const whole = Math.max(total || 0, 1);
  const part = (name) => h("span", { class: name, style: `width:${(100 * (counts[name] || 0)) / whole}%` });
  return h("div", { class: "bar", title: `${counts.processed || 0} processed, ${counts.skipped || 0} skipped, ${counts.failed || 0} failed of ${total ?? "?"}` },
    part("processed"), part("skipped"), part("failed"), part("canceled"));
}

function countsLine(counts, extra) {
  return h("span", { class: "counts" },
    ["processed", "skipped", "failed", "running", "canceled"].filter((k) => counts[k]).map((k) => h("span", { class: `s-${k}` }, `${counts[k]} ${k}`)),
    extra ? h("span", { class: "muted" }, extra) : null);
}

function notice(text, bad) {
  const box = document.getElementById("notice");
  box.replaceChildren(h("div", { class: bad ? "msg bad" : "msg", "data-testid": "notice" }, text));
  setTimeout(() => { if (box.firstChild && box.firstChild.textContent === text) box.replaceChildren(); }, 6000);
}

// ---------------------------------------------------------------- HTTP

async function get(path) {
  const response = await fetch(`api/${path}`, { headers: { Accept: "application/json" } });
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

async function act(path, body, done) {
  try {
    const response = await fetch(`api/actions/${path}`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Lobeflow-Csrf": CSRF },
      body: JSON.stringify(body),
    });
    const data = await response.json();
    if (!response.ok) throw new Error(data.error || response.statusText);
    notice(done(data));
    state.last = "";
    refresh();
  } catch (error) {
    notice(error.message, true);
  }
}

// ---------------------------------------------------------------- views

function passesView(data) {
  if (!data.passes.length) return [h("h1", {}, "Passes"), h("p", { class: "muted" }, "No pass yet: start one from ", link("#/start", "Start"), " or with `lobeflow run`.")];
  return [h("h1", {}, "Passes"), h("table", { "data-testid": "passes" },
    h("tr", {}, ["workflow", "pass", "app", "started", "progress", "processed", "skipped", "failed", "messages", "duration", "state"].map((c) => h("th", {}, c))),
    data.passes.map((p) => h("tr", { "data-pass": p.runId },
      h("td", {}, p.workflow, p.force ? h("span", { class: "tag" }, " force") : null),
      h("td", { class: "mono" }, link(`#/pass/${p.workflow}/${p.runId}`, p.runId.replace(/^wfr_/, ""))),
      h("td", { class: "mono muted", "data-col": "app" }, p.appUrl),
      h("td", {}, time(p.createdAt)),
      h("td", {}, bar(p, p.toProcess), h("span", { class: "muted" }, `${p.done}/${p.toProcess ?? "?"}`)),
      h("td", { class: "num s-processed", "data-col": "processed" }, p.processed),
      h("td", { class: "num" }, p.skipped),
      h("td", { class: "num s-failed", "data-col": "failed" }, p.failed),
      h("td", { class: "num" }, p.messages),
      h("td", { class: "num" }, duration(p.elapsedSeconds)),
      h("td", {}, p.finished ? stateTag(p.failed || p.canceled ? "RUN_FAILED" : "RUN_SUCCESS") : stateTag("RUN_STARTED")))))];
}

function itemsTable(workflow, passId, list) {
  const offset = list.offset;
  return h("div", { class: "items", "data-node-items": list.node },
    h("table", {},
      h("tr", {}, ["item", "run", "state", "steps", "duration", "error"].map((c) => h("th", {}, c))),
      list.items.map((r) => h("tr", { "data-item": r.item },
        h("td", { class: "mono" }, r.item),
        h("td", { class: "mono" }, link(`#/run/${r.runId}?pass=${passId}&workflow=${workflow}`, r.runId.replace(/^wfr_/, ""))),
        h("td", {}, stateTag(r.status)),
        h("td", { class: "num" }, r.steps),
        h("td", { class: "num" }, r.durationMs === null ? "-" : duration(r.durationMs / 1000)),
        h("td", { class: "error" }, r.error)))),
    list.total > list.items.length ? h("div", { class: "pager" },
      h("button", { disabled: offset === 0, onclick: () => { state.offsets.set(list.node, Math.max(0, offset - 50)); refresh(true); } }, "‹ previous"),
      h("span", { class: "muted" }, `${offset + 1}–${offset + list.items.length} of ${list.total}`),
      h("button", { disabled: offset + list.items.length >= list.total, onclick: () => { state.offsets.set(list.node, offset + 50); refresh(true); } }, "next ›")) : null);
}

function node(workflow, passId, n, items) {
  const open = state.open.has(n.runId);
  const details = h("details", { open, "data-node": n.runId, "data-kind": n.kind },
    h("summary", {},
      h("b", {}, n.kind === "pass" ? "Pass (Layer 1)" : n.kind === "page" ? `Page: ${n.label}` : `Chunk: ${n.label}`),
      stateTag(n.state),
      countsLine(n.counts, n.notStarted ? `${n.notStarted} not started` : ""),
      h("span", { class: "muted" }, `${n.items} items`),
      link(`#/run/${n.runId}?pass=${passId}&workflow=${workflow}`, "run")),
    n.error ? h("div", { class: "error" }, n.error) : null,
    (n.children || []).map((child) => node(workflow, passId, child, items)),
    items.get(n.runId) ? itemsTable(workflow, passId, items.get(n.runId)) : null);
  details.addEventListener("toggle", () => {
    if (details.open === state.open.has(n.runId)) return;
    if (details.open) state.open.add(n.runId); else state.open.delete(n.runId);
    refresh(true);
  });
  return details;
}

async function passData(workflow, passId) {
  const detail = await get(`passes/${workflow}/${passId}`);
  const items = new Map();
  for (const id of state.open) {
    const offset = state.offsets.get(id) || 0;
    items.set(id, await get(`passes/${workflow}/${passId}/items?node=${encodeURIComponent(id)}&offset=${offset}`));
  }
  return { detail, items: Object.fromEntries(items) };
}

function passView({ detail, items }, workflow, passId) {
  const p = detail.progress;
  const map = new Map(Object.entries(items));
  const running = !p.finished;
  return [
    h("h1", {}, `Pass of ${workflow} `, h("span", { class: "mono muted" }, passId)),
    h("p", { class: "muted" }, "Ran against the app at ", h("span", { class: "mono", "data-testid": "pass-app" }, detail.appUrl)),
    h("div", { class: "cards", "data-testid": "pass-counts" },
      ["toProcess", "processed", "skipped", "failed", "canceled", "messages"].map((k) =>
        h("div", { class: "card" }, h("b", { "data-count": k, class: `s-${k}` }, p[k] ?? "?"), k)),
      h("div", { class: "card" }, h("b", {}, duration(p.elapsedSeconds)), p.finished ? "finished" : "running")),
    bar(p, p.toProcess),
    h("div", { class: "actions" },
      h("button", { class: "primary", disabled: !p.failed, onclick: () => act("retry-pass", { workflow, passRunId: passId, mode: "resume" }, (d) => `Resumed ${d.retried} failed run(s).`) }, "Retry failed (resume)"),
      h("button", { disabled: !p.failed, onclick: () => act("retry-pass", { workflow, passRunId: passId, mode: "restart" }, (d) => `Restarted ${d.retried} failed run(s).`) }, "Restart failed"),
      h("button", { class: "danger", disabled: !running, onclick: () => act("cancel", { workflow, passRunId: passId }, (d) => `Cancelled ${d.cancelled} run(s).`) }, "Cancel pass"),
      link(`#/failures?workflow=${workflow}&pass=${passId}`, "DLQ entries of this pass")),
    p.errors.length ? h("div", {}, h("h2", {}, "First errors"), h("table", {},
      p.errors.map((e) => h("tr", {}, h("td", {}, e.layer), h("td", { class: "mono" }, e.item),
        h("td", { class: "mono" }, link(`#/run/${e.runId}?pass=${passId}&workflow=${workflow}`, e.runId.replace(/^wfr_/, ""))),
        h("td", { class: "error" }, e.error))))) : null,
    h("h2", {}, "Fan-out"),
    node(workflow, passId, detail.tree, map),
  ];
}

function runView(run, query) {
  const passId = query.get("pass") || run.passRunId;
  const workflow = query.get("workflow") || run.workflow;
  return [
    h("h1", {}, "Run ", h("span", { class: "mono" }, run.runId)),
    h("div", { class: "cards" },
      h("div", { class: "card" }, h("b", {}, stateTag(run.state)), "state"),
      h("div", { class: "card" }, h("b", {}, run.layer || "-"), "layer"),
      h("div", { class: "card" }, h("b", { class: "mono" }, run.item || "-"), "item"),
      h("div", { class: "card" }, h("b", {}, run.durationMs === null ? "-" : duration(run.durationMs / 1000)), "duration")),
    h("p", {}, run.workflow ? `Workflow ${run.workflow} · ` : "", h("span", { class: "mono" }, run.url), " · ",
      passId && workflow ? link(`#/pass/${workflow}/${passId}`, "parent pass") : "pass unknown"),
    run.errors.length ? h("div", { "data-testid": "run-errors" }, h("h2", {}, "Errors"), run.errors.map((e) => h("div", { class: "error" }, e))) : null,
    h("h2", {}, "Payload"),
    h("pre", { "data-testid": "payload" }, JSON.stringify(run.payload, null, 2)),
    h("h2", {}, "Steps"),
    h("table", { "data-testid": "steps" },
      h("tr", {}, ["#", "name", "type", "state", "at", "duration", "output"].map((c) => h("th", {}, c))),
      run.steps.map((s) => h("tr", {},
        h("td", { class: "num" }, s.stepId), h("td", { class: "mono" }, s.name), h("td", {}, s.type),
        h("td", {}, s.state), h("td", {}, time(s.createdAt)),
        h("td", { class: "num" }, s.durationMs === null ? "-" : duration(s.durationMs / 1000)),
        h("td", { class: "mono" }, s.out.length > 300 ? `${s.out.slice(0, 300)}…` : s.out))),
      run.nextSteps.map((s) => h("tr", { "data-next-step": s.state },
        h("td", { class: "num" }, "→"), h("td", { class: "mono" }, s.name || "(next step)"), h("td", {}, "delivery"),
        h("td", {}, stateTag(s.state === "STEP_FAILED" ? "RUN_FAILED" : "RUN_STARTED"), ` ${s.state}`),
        h("td", {}, time(s.time)), h("td", { class: "num" }, `${s.retries} retries`),
        h("td", { class: "error" }, s.error)))),
    run.retrying ? h("p", { class: "s-running" }, "A delivery is waiting to be retried.") : null,
  ];
}

function failuresView(data, query) {
  const entries = data.entries;
  const ids = entries.map((e) => e.dlqId);
  for (const id of [...state.selected]) if (!ids.includes(id)) state.selected.delete(id);
  const bulk = (action, label, cls) => h("button", {
    class: cls, disabled: !state.selected.size, "data-bulk": action,
    onclick: () => act("dlq", { action, dlqIds: [...state.selected] }, (d) => (action === "delete" ? `Deleted ${d.deleted} entries.` : `${label}: ${d.retried} run(s).`)),
  }, `${label} selected`);
  const filter = query.get("pass") ? `of pass ${query.get("pass")}` : query.get("workflow") ? `of ${query.get("workflow")}` : "";
  return [
    h("h1", {}, `Failures (DLQ) ${filter}`),
    h("div", { class: "actions" },
      h("label", {}, h("input", { type: "checkbox", "data-select-all": true, checked: entries.length > 0 && state.selected.size === entries.length,
        onchange: (ev) => { state.selected = new Set(ev.target.checked ? ids : []); refresh(true); } }), " all"),
      bulk("resume", "Resume", "primary"), bulk("restart", "Restart"), bulk("delete", "Delete", "danger"),
      filter ? link("#/failures", "all entries") : null),
    entries.length ? h("table", { "data-testid": "dlq" },
      h("tr", {}, ["", "created", "workflow / url", "run", "status", "attempts", "failure callback", "error", ""].map((c) => h("th", {}, c))),
      entries.map((e) => h("tr", { "data-dlq": e.dlqId },
        h("td", {}, h("input", { type: "checkbox", checked: state.selected.has(e.dlqId), onchange: (ev) => { if (ev.target.checked) state.selected.add(e.dlqId); else state.selected.delete(e.dlqId); refresh(true); } })),
        h("td", {}, time(e.createdAt)),
        h("td", {}, e.workflow || e.workflowUrl || e.url),
        h("td", { class: "mono" }, e.workflowRunId ? link(`#/run/${e.workflowRunId}`, e.workflowRunId.replace(/^wfr_/, "")) : "-"),
        h("td", { class: "num" }, e.responseStatus || "-"),
        h("td", { class: "num" }, e.maxRetries === null || e.maxRetries === undefined ? "-" : e.maxRetries + 1),
        h("td", {}, e.failureCallbackState ? stateTag(e.failureCallbackState) : "-"),
        h("td", { class: "error" }, e.error),
        h("td", {}, h("div", { class: "actions" },
          e.workflowRunId ? h("button", { onclick: () => act("dlq", { action: "resume", dlqIds: [e.dlqId] }, () => "Resumed 1 run.") }, "resume") : null,
          e.workflowRunId ? h("button", { onclick: () => act("dlq", { action: "restart", dlqIds: [e.dlqId] }, () => "Restarted 1 run.") }, "restart") : h("button", { onclick: () => act("dlq", { action: "retry", dlqIds: [e.dlqId] }, () => "Published again.") }, "retry"),
          h("button", { class: "danger", onclick: () => act("dlq", { action: "delete", dlqIds: [e.dlqId] }, () => "Deleted 1 entry.") }, "delete")))))) :
      h("p", { class: "muted" }, "The DLQ has no entries here."),
  ];
}

// The limits to show: QStash's live ones, else what the project declares (marked so).
function limits(k) {
  if (k.live || !k.declared) return { parallelism: k.parallelismMax, rate: k.rateMax, period: k.ratePeriod, declared: false };
  return { ...k.declared, declared: true };
}

function flowView(data) {
  const declaredTag = () => h("span", { class: "tag", title: "declared by the project (flow_control.py and its environment); QStash reports no live value while the key is idle" }, "declared");
  return [
    h("h1", {}, "Flow control"),
    (data.errors || []).map((e) => h("p", { class: "error", "data-testid": "flow-error" }, e)),
    data.keys.length ? h("table", { "data-testid": "flow" },
      h("tr", {}, ["key", "parallelism", "in flight", "rate / period", "waiting", "state", ""].map((c) => h("th", {}, c))),
      data.keys.map((k) => { const lim = limits(k); return h("tr", { "data-key": k.flowControlKey, "data-limits": lim.declared ? "declared" : "live" },
        h("td", { class: "mono" }, k.flowControlKey, k.declared ? h("span", { class: "muted" }, ` ${k.declared.workflow} · ${k.declared.layer}`) : null),
        h("td", { class: "num", "data-col": "parallelism" }, lim.parallelism || "-", lim.declared ? declaredTag() : null),
        h("td", { class: "num", "data-col": "inflight" }, k.parallelismCount),
        h("td", { class: "num", "data-col": "rate" }, lim.rate ? `${lim.rate} / ${lim.period}s` : lim.declared ? "no limit" : "-", lim.declared ? declaredTag() : null),
        h("td", { class: "num", "data-col": "waiting" }, k.waitListSize),
        h("td", {}, k.isPaused ? h("span", { class: "state s-canceled" }, "paused") : h("span", { class: "state s-processed" }, "active")),
        h("td", {}, k.isPaused
          ? h("button", { onclick: () => act("flow-control", { key: k.flowControlKey, action: "resume" }, () => `Resumed ${k.flowControlKey}.`) }, "resume")
          : h("button", { onclick: () => act("flow-control", { key: k.flowControlKey, action: "pause" }, () => `Paused ${k.flowControlKey}.`) }, "pause"))); })) :
      h("p", { class: "muted" }, "No flow-control key has been used yet."),
    data.listed ? h("p", { class: "muted" }, h("span", { class: "tag" }, "local engine"), " every key that holds work, a pause or a pin, and the project's own keys (the engine forgets idle keys, as QStash does).")
      : h("p", { class: "muted" }, "The project's own keys (listing the other active keys is a local-engine extra)."),
  ];
}

const utc = (ms) => `${new Date(ms).toISOString().slice(0, 16).replace("T", " ")} UTC`;
const local = (ms) => new Date(ms).toLocaleString([], { dateStyle: "short", timeStyle: "short" });

function lastPassCell(s) {
  const p = s.lastPass;
  if (!p) return h("td", { class: "muted", "data-col": "last-pass" }, s.cron ? "none yet" : "-");
  const state = p.finished === false ? "RUN_STARTED" : p.failed ? "RUN_FAILED" : "RUN_SUCCESS";
  return h("td", { "data-col": "last-pass" },
    link(`#/pass/${s.workflow}/${p.runId}`, p.runId.replace(/^wfr_/, ""), { class: "mono" }),
    h("div", { class: "muted" }, `${local(p.createdAt)} · `, stateTag(state),
      p.processed === null ? "" : ` ${p.processed} processed, ${p.failed} failed`));
}

const STATUS_HINT = {
  "not synced": "declared, not in QStash yet: `lobeflow schedules sync` creates it",
  differs: "QStash has another cron or destination: `lobeflow schedules sync` updates it",
  "not declared": "in QStash, declared no more: `lobeflow schedules sync` deletes it",
};

function schedulesView(data) {
  const rows = data.schedules;
  return [
    h("h1", {}, "Schedules"),
    rows.length ? h("table", { "data-testid": "schedules" },
      h("tr", {}, ["workflow", "cron", "state", "next fire (local / UTC)", "last fired", "last pass started", ""].map((c) => h("th", {}, c))),
      rows.map((s) => h("tr", { "data-workflow": s.workflow, "data-status": s.status },
        h("td", { title: s.scheduleId }, s.workflow, s.source ? h("div", { class: "muted mono" }, s.source) : null),
        h("td", { class: "mono", "data-col": "cron" }, s.cron || s.declaredCron || "-",
          s.status !== "synced" && s.status !== "none" ? h("div", { class: "s-canceled", title: STATUS_HINT[s.status] || "" }, s.status, s.declaredCron && s.cron && s.declaredCron !== s.cron ? `: ${s.declaredCron}` : "") : null),
        h("td", { "data-col": "state" }, s.paused === null ? "-" : s.paused ? h("span", { class: "state s-canceled" }, "paused") : h("span", { class: "state s-processed" }, "active")),
        h("td", { "data-col": "next" }, s.nextFireAt ? [h("div", {}, local(s.nextFireAt)), h("div", { class: "muted" }, utc(s.nextFireAt))] : "-"),
        h("td", {}, s.lastFiredAt ? local(s.lastFiredAt) : "-"),
        lastPassCell(s),
        h("td", {}, s.paused === null ? null : s.paused
          ? h("button", { onclick: () => act("schedule", { workflow: s.workflow, action: "resume" }, () => `Resumed the schedule of ${s.workflow}.`) }, "resume")
          : h("button", { onclick: () => act("schedule", { workflow: s.workflow, action: "pause" }, () => `Paused the schedule of ${s.workflow}.`) }, "pause"))))) :
      h("p", { class: "muted" }, "No workflow: start the console inside a project."),
    h("p", { class: "muted" }, "Each workflow's SCHEDULE (its __init__.py, or <WORKFLOW>_SCHEDULE) as QStash has it; `lobeflow schedules sync` makes QStash match, `lobeflow dev` syncs on start. A firing starts no pass while one of the workflow is still running."),
  ];
}

function startView({ info, passes }) {
  return [
    h("h1", {}, "Start a pass"),
    info.workflows.length ? h("table", { "data-testid": "start" },
      h("tr", {}, ["workflow", "eligible", "to process", "already processed", ""].map((c) => h("th", {}, c))),
      info.workflows.map((w) => h("tr", { "data-workflow": w.workflow },
        h("td", {}, w.workflow),
        w.statistics ? [h("td", { class: "num" }, w.statistics.totalEligible), h("td", { class: "num" }, w.statistics.toProcess), h("td", { class: "num" }, w.statistics.alreadyProcessed)]
          : h("td", { colspan: 3, class: "error" }, w.error),
        h("td", {}, h("div", { class: "actions" },
          h("button", { class: "primary", onclick: () => act("start", { workflow: w.workflow, force: false }, (d) => { location.hash = `#/pass/${w.workflow}/${d.runId}`; return `Started ${d.runId}.`; }) }, "Start pass"),
          h("button", { onclick: () => act("start", { workflow: w.workflow, force: true }, (d) => { location.hash = `#/pass/${w.workflow}/${d.runId}`; return `Started ${d.runId} (force).`; }) }, "Start with force")))))) :
      h("p", { class: "muted" }, "No workflow: start the console inside a project."),
    h("h2", {}, "Running passes"),
    passes.filter((p) => !p.finished).length ? h("table", {}, passes.filter((p) => !p.finished).map((p) => h("tr", {},
      h("td", {}, p.workflow), h("td", { class: "mono" }, link(`#/pass/${p.workflow}/${p.runId}`, p.runId)),
      h("td", {}, `${p.done}/${p.toProcess ?? "?"}`),
      h("td", {}, h("button", { class: "danger", onclick: () => act("cancel", { workflow: p.workflow, passRunId: p.runId }, (d) => `Cancelled ${d.cancelled} run(s).`) }, "Cancel"))))) :
      h("p", { class: "muted" }, "None."),
  ];
}

// ---------------------------------------------------------------- router

function route() {
  const [path, search] = (location.hash.slice(1) || "/passes").split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(search || "") };
}

async function load() {
  const { parts, query } = route();
  switch (parts[0]) {
    case "pass": return { data: await passData(parts[1], parts[2]), render: (d) => passView(d, parts[1], parts[2]), name: "passes" };
    case "run": return { data: await get(`runs/${encodeURIComponent(parts[1])}`), render: (d) => runView(d, query), name: "passes" };
    case "failures": {
      const params = new URLSearchParams();
      for (const key of ["workflow", "pass"]) if (query.get(key)) params.set(key, query.get(key));
      return { data: await get(`failures?${params}`), render: (d) => failuresView(d, query), name: "failures" };
    }
    case "flow": return { data: await get("flow-control"), render: flowView, name: "flow" };
    case "schedules": return { data: await get("schedules"), render: schedulesView, name: "schedules" };
    case "start": return { data: { info: await get("start"), passes: (await get("passes")).passes }, render: startView, name: "start" };
    default: return { data: await get("passes"), render: passesView, name: "passes" };
  }
}

async function refresh(force) {
  clearTimeout(state.timer);
  const key = location.hash;
  try {
    const { data, render, name } = await load();
    if (key !== location.hash) return;
    const text = JSON.stringify(data) + JSON.stringify([...state.selected]);
    if (force || text !== state.last) {
      state.last = text;
      view.replaceChildren(...render(data).filter(Boolean));
    }
    for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("active", a.dataset.view === name);
    document.getElementById("live").className = "live";
  } catch (error) {
    document.getElementById("live").className = "live stale";
    view.replaceChildren(h("p", { class: "error", "data-testid": "load-error" }, error.message));
    state.last = "";
  }
  state.timer = setTimeout(refresh, POLL_MS);
}

function resetView() {
  state.last = "";
  state.open.clear();
  state.offsets.clear();
  const { parts } = route();
  if (parts[0] === "pass" && parts[2]) state.open.add(parts[2]); // the pass's own node starts open
}

window.addEventListener("hashchange", () => { resetView(); refresh(true); });
resetView();
get("overview").then((o) => {
  document.getElementById("source").textContent = `${o.localEngine ? "local engine" : "QStash"} ${o.qstashUrl} · app ${o.appUrl}`;
}).catch(() => {});
refresh(true);
