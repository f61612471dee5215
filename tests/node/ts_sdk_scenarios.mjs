// Drives a QStash-compatible server with the official TypeScript SDKs, unchanged.
//
// Env: QSTASH_URL, QSTASH_TOKEN, QSTASH_CURRENT_SIGNING_KEY, QSTASH_NEXT_SIGNING_KEY (required);
//      SCENARIOS (comma-separated subset, default all), SCENARIO_TIMEOUT_MS, TOTAL_TIMEOUT_MS,
//      TIME_SCALE (the server's delay multiplier; when given, sleeps are checked to last that long).
//
// Workflows are served by `serve` from "@upstash/workflow" behind a node:http server on
// 127.0.0.1 (ephemeral port), with signature verification on. Each scenario prints one JSON
// line on stdout: {"scenario", "ok", "durationMs", "details", "failures": [{check, expected, got}]}.
// Diagnostics go to stderr. The exit code is non-zero if any scenario failed.

import { createHash, createHmac, randomUUID } from "node:crypto";
import http from "node:http";
import { isDeepStrictEqual } from "node:util";
import { Client as QStashClient, Receiver } from "@upstash/qstash";
import { Client as WorkflowClient, serve } from "@upstash/workflow";

const env = (name) => {
  const value = process.env[name];
  if (!value) {
    console.error(`missing required environment variable ${name}`);
    process.exit(2);
  }
  return value;
};

const QSTASH_URL = env("QSTASH_URL");
const QSTASH_TOKEN = env("QSTASH_TOKEN");
const CURRENT_KEY = env("QSTASH_CURRENT_SIGNING_KEY");
const NEXT_KEY = env("QSTASH_NEXT_SIGNING_KEY");
const SCENARIO_TIMEOUT_MS = Number(process.env.SCENARIO_TIMEOUT_MS ?? 20_000);
const TOTAL_TIMEOUT_MS = Number(process.env.TOTAL_TIMEOUT_MS ?? 50_000);
const TIME_SCALE = process.env.TIME_SCALE ? Number(process.env.TIME_SCALE) : null;

const sleepMs = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const log = (...args) => console.error("[ts-sdk]", ...args);

const workflowClient = new WorkflowClient({ baseUrl: QSTASH_URL, token: QSTASH_TOKEN });
const qstashClient = new QStashClient({ baseUrl: QSTASH_URL, token: QSTASH_TOKEN });
const receiver = new Receiver({ currentSigningKey: CURRENT_KEY, nextSigningKey: NEXT_KEY });

// ---------------------------------------------------------------------------------------------
// Observations made by the app side, keyed by route path / run id.

const routeStats = new Map(); // path -> {requests, inflight, maxInflight, statuses, error counts}
const deliveriesByRun = new Map(); // run id -> completed deliveries (any route)
const stepExecutions = new Map(); // `${runId}:${stepName}` -> [timestamps]
const returned = new Map(); // run id -> value the route function returned
const headersSeen = new Map(); // run id -> a trigger header as the route saw it
const failureCalls = new Map(); // run id -> what the failure function saw
const stubHits = []; // requests received by the context.call stub
const errorStepNames = new Map(); // run id -> `Upstash-Error-Step-Name` values the SDK answered with
const flakyFailing = new Set(); // payload keys whose /wf/flaky run still fails its second step
const flakyExecutions = new Map(); // `${key}:${stepName}` -> executions, across runs
// A failure URL: answers `status` once `gate` resolves; `hits` records each request's body.
const failureSink = { status: 500, gate: Promise.resolve(), hits: [] };
const groupHits = []; // requests received under /stub/group/
const scenarioRuns = new Map(); // scenario name -> the workflowRunId its details name

const statsFor = (path) => {
  if (!routeStats.has(path)) {
    routeStats.set(path, {
      requests: 0,
      inflight: 0,
      maxInflight: 0,
      statuses: {},
      signatureRejections: 0,
      unexpectedErrors: 0,
      errorBodies: [],
    });
  }
  return routeStats.get(path);
};

const recordStep = (context, stepName) => {
  const key = `${context.workflowRunId}:${stepName}`;
  if (!stepExecutions.has(key)) stepExecutions.set(key, []);
  stepExecutions.get(key).push(Date.now());
};

const executions = (runId, stepName) => stepExecutions.get(`${runId}:${stepName}`) ?? [];

// ---------------------------------------------------------------------------------------------
// Workflows.

const SEQUENTIAL_SLEEP_S = 30;
const PARALLEL_SLEEP_S = 30;
const CANCEL_SLEEP = "1d";
const FAILURE_MARKER = "ts-sdk-boom";
// Routes whose error answers are part of the scenario; any other one means the SDK choked on a delivery.
const EXPECTED_ERROR_ROUTES = new Set(["/wf/failing", "/wf/flaky"]);
const PLAIN_STUB_BODY = "a plain endpoint, not a workflow";
const NON_WORKFLOW_ERROR =
  "detected a non-workflow destination for trigger/invoke. make sure you are sending the request to the correct endpoint";

const workflows = {
  "/wf/sequential": serve(
    async (context) => {
      const { n } = context.requestPayload;
      const doubled = await context.run("double", () => {
        recordStep(context, "double");
        headersSeen.set(context.workflowRunId, context.headers.get("x-trace-id"));
        return n * 2;
      });
      await context.sleep("pause", SEQUENTIAL_SLEEP_S);
      const plusOne = await context.run("add-one", () => {
        recordStep(context, "add-one");
        return doubled + 1;
      });
      const result = { doubled, plusOne };
      returned.set(context.workflowRunId, result);
      return result;
    },
    { receiver },
  ),

  "/wf/parallel": serve(
    async (context) => {
      const branch = (name, value, delayMs) =>
        context.run(name, async () => {
          recordStep(context, name);
          await sleepMs(delayMs);
          return value;
        });
      const [a, b, c] = await Promise.all([
        branch("par-a", "A", 60),
        branch("par-b", "B", 10),
        branch("par-c", "C", 30),
        context.sleep("par-sleep", PARALLEL_SLEEP_S),
      ]);
      const joined = await context.run("join", () => {
        recordStep(context, "join");
        return [a, b, c].join("");
      });
      const result = { joined, parts: [a, b, c] };
      returned.set(context.workflowRunId, result);
      return result;
    },
    { receiver },
  ),

  "/wf/flow": serve(
    async (context) => {
      const { i } = context.requestPayload;
      const first = await context.run("fc-first", async () => {
        recordStep(context, "fc-first");
        await sleepMs(120);
        return i * 10;
      });
      const second = await context.run("fc-second", async () => {
        recordStep(context, "fc-second");
        await sleepMs(120);
        return first + 1;
      });
      const result = { i, second };
      returned.set(context.workflowRunId, result);
      return result;
    },
    { receiver },
  ),

  "/wf/cancel": serve(
    async (context) => {
      await context.run("before-sleep", () => {
        recordStep(context, "before-sleep");
        return "ready";
      });
      await context.sleep("long-sleep", CANCEL_SLEEP);
      await context.run("after-sleep", () => {
        recordStep(context, "after-sleep");
        return "too late";
      });
      return "not expected";
    },
    { receiver },
  ),

  "/wf/call": serve(
    async (context) => {
      const { ping, stubUrl } = context.requestPayload;
      const response = await context.call("call-stub", {
        url: stubUrl,
        method: "POST",
        body: JSON.stringify({ ping }),
        headers: { "content-type": "application/json", "x-stub-token": "stub-secret" },
      });
      const checked = await context.run("after-call", () => {
        recordStep(context, "after-call");
        return response.status;
      });
      const result = { status: response.status, body: response.body, checked };
      returned.set(context.workflowRunId, result);
      return result;
    },
    { receiver },
  ),

  "/wf/failing": serve(
    async (context) => {
      // The failing step is the second one: its message carries no retries or failure-callback
      // headers of its own, so both must come from the trigger's config (WF_TriggerOnConfig).
      await context.run("fine", () => "ok");
      await context.run("will-fail", () => {
        recordStep(context, "will-fail");
        throw new Error(`${FAILURE_MARKER}: step failed on purpose`);
      });
      return "unreachable";
    },
    {
      receiver,
      failureFunction: async ({ context, failStatus, failResponse, failHeaders }) => {
        failureCalls.set(context.workflowRunId, {
          payload: context.requestPayload,
          failStatus,
          failResponse,
          failHeaderNames: Object.keys(failHeaders ?? {}),
          url: context.url,
        });
        return "failure handled";
      },
    },
  ),

  // Fails its second step while its payload key is in `flakyFailing` (for the DLQ scenario).
  "/wf/flaky": serve(
    async (context) => {
      const { key } = context.requestPayload;
      const count = (step) => flakyExecutions.set(`${key}:${step}`, (flakyExecutions.get(`${key}:${step}`) ?? 0) + 1);
      const one = await context.run("flaky-first", () => {
        count("flaky-first");
        return 1;
      });
      const two = await context.run("flaky-second", () => {
        count("flaky-second");
        if (flakyFailing.has(key)) throw new Error(`${FAILURE_MARKER}: not yet`);
        return one + 1;
      });
      return { key, two };
    },
    {
      receiver,
      failureFunction: async ({ context }) => {
        failureCalls.set(context.workflowRunId, { payload: context.requestPayload });
        return "flaky failure handled";
      },
    },
  ),

  // Waits for an event that `Client.notify` sends, or for its timeout.
  "/wf/wait": serve(
    async (context) => {
      const { eventId, timeout } = context.requestPayload;
      const { eventData, timeout: timedOut } = await context.waitForEvent("wait-event", eventId, { timeout });
      return await context.run("after-wait", () => ({ eventData: eventData ?? null, timedOut }));
    },
    { receiver },
  ),

  // Calls its own webhook before waiting for it: the engine keeps the call until the run waits.
  "/wf/webhook": serve(
    async (context) => {
      const webhook = await context.createWebhook("create-webhook");
      await context.run("call-webhook", async () => {
        const response = await fetch(`${webhook.webhookUrl}?source=scenario`, {
          method: "POST",
          body: "hook-body",
          headers: { "x-hook": "yes" },
        });
        return response.status;
      });
      const { request, timeout } = await context.waitForWebhook("wait-webhook", webhook, "1d");
      return {
        timeout,
        method: request?.method ?? null,
        body: request ? await request.text() : null,
        hookHeader: request?.headers.get("x-hook") ?? null,
        source: request ? new URL(request.url).searchParams.get("source") : null,
      };
    },
    { receiver },
  ),
};

// ---------------------------------------------------------------------------------------------
// node:http <-> Fetch adapter.

const HOP_BY_HOP = new Set(["host", "connection", "content-length", "transfer-encoding", "keep-alive"]);

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks);
}

function toFetchRequest(req, body, baseUrl) {
  const headers = new Headers();
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    const name = req.rawHeaders[i];
    if (!HOP_BY_HOP.has(name.toLowerCase())) headers.append(name, req.rawHeaders[i + 1]);
  }
  const withBody = req.method !== "GET" && req.method !== "HEAD" && body.length > 0;
  return new Request(new URL(req.url, baseUrl), {
    method: req.method,
    headers,
    body: withBody ? body : undefined,
  });
}

async function writeFetchResponse(res, response) {
  const payload = Buffer.from(await response.arrayBuffer());
  const headers = {};
  response.headers.forEach((value, name) => {
    headers[name] = value;
  });
  res.writeHead(response.status, headers);
  res.end(payload);
  return payload;
}

function handleStub(req, body, res) {
  let parsed = null;
  try {
    parsed = JSON.parse(body.toString("utf8"));
  } catch {
    // recorded as null
  }
  stubHits.push({
    method: req.method,
    headers: req.headers,
    body: body.toString("utf8"),
  });
  res.writeHead(200, { "content-type": "application/json" });
  res.end(JSON.stringify({ pong: parsed?.ping ?? null, method: req.method }));
}

function startAppServer() {
  let baseUrl;
  const server = http.createServer(async (req, res) => {
    const path = new URL(req.url, "http://x").pathname;
    try {
      const body = await readBody(req);
      if (path === "/stub/echo") return handleStub(req, body, res);
      if (path.startsWith("/stub/group/")) {
        groupHits.push({ path, body: body.toString("utf8"), headers: req.headers });
        res.writeHead(200, { "content-type": "text/plain" }).end("ok");
        return;
      }
      if (path === "/stub/failure-sink") {
        failureSink.hits.push(body.toString("utf8"));
        await failureSink.gate;
        res.writeHead(failureSink.status, { "content-type": "text/plain", "x-sink": "yes" });
        res.end(`failure sink answered ${failureSink.status}`);
        return;
      }
      if (path === "/stub/plain") {
        res.writeHead(200, { "content-type": "text/plain" });
        res.end(PLAIN_STUB_BODY);
        return;
      }
      const workflow = workflows[path];
      if (!workflow) {
        res.writeHead(404).end("no such route");
        return;
      }
      const stats = statsFor(path);
      stats.requests += 1;
      stats.inflight += 1;
      stats.maxInflight = Math.max(stats.maxInflight, stats.inflight);
      try {
        const response = await workflow.handler(toFetchRequest(req, body, baseUrl));
        const payload = await writeFetchResponse(res, response);
        stats.statuses[response.status] = (stats.statuses[response.status] ?? 0) + 1;
        const text = payload.toString("utf8");
        if (response.status >= 400) {
          const forged = req.headers["x-ts-sdk-forged"] === "1";
          if (text.includes("Failed to verify") && !forged) stats.signatureRejections += 1;
          if (!forged && !EXPECTED_ERROR_ROUTES.has(path)) stats.unexpectedErrors += 1;
          if (stats.errorBodies.length < 5) stats.errorBodies.push(text.slice(0, 300));
        }
        const runId = req.headers["upstash-workflow-runid"];
        if (runId) deliveriesByRun.set(runId, (deliveriesByRun.get(runId) ?? 0) + 1);
        const failedStep = response.headers.get("upstash-error-step-name");
        if (runId && failedStep) errorStepNames.set(runId, [...(errorStepNames.get(runId) ?? []), failedStep]);
      } finally {
        stats.inflight -= 1;
      }
    } catch (error) {
      log("adapter error", path, error);
      if (!res.headersSent) res.writeHead(500).end(String(error));
    }
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      baseUrl = `http://127.0.0.1:${server.address().port}`;
      resolve({ server, baseUrl });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Helpers.

// JSON drops `undefined`; a failure report must still show that nothing was there.
const shown = (value) => (value === undefined ? "<undefined>" : value);

class Checks {
  constructor() {
    this.failures = [];
  }
  equal(check, got, expected) {
    if (!isDeepStrictEqual(got, expected)) this.failures.push({ check, expected, got: shown(got) });
  }
  that(check, condition, got, expected = true) {
    if (!condition) this.failures.push({ check, expected, got: shown(got) });
  }
}

async function waitFor(what, probe, timeoutMs = SCENARIO_TIMEOUT_MS, intervalMs = 100) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await probe();
    if (last.done) return last.value;
    await sleepMs(intervalMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last seen: ${JSON.stringify(last?.value)}`);
}

async function runLog(runId) {
  const { runs } = await workflowClient.logs({ workflowRunId: runId });
  return (runs ?? []).find((run) => run.workflowRunId === runId);
}

async function waitForFinalState(runId, timeoutMs = SCENARIO_TIMEOUT_MS) {
  return await waitFor(`a final state of ${runId}`, async () => {
    const run = await runLog(runId);
    return { done: Boolean(run) && run.workflowState !== "RUN_STARTED", value: run };
  }, timeoutMs);
}

const stepNames = (run) =>
  (run?.steps ?? []).flatMap((group) => (group.steps ?? []).map((step) => step.stepName));

const summarizeRun = (run) =>
  run && {
    workflowRunId: run.workflowRunId,
    workflowUrl: run.workflowUrl,
    workflowState: run.workflowState,
    workflowRunResponse: run.workflowRunResponse,
    groups: (run.steps ?? []).map((group) => ({
      type: group.type,
      steps: (group.steps ?? []).map((step) => `${step.stepName}:${step.state}`),
    })),
  };

// A well-formed QStash signature (HS256 JWT over the body hash) made with an arbitrary key.
function signWith(key, url, body) {
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    iss: "Upstash",
    sub: url,
    iat: now,
    nbf: now,
    exp: now + 300,
    jti: `jwt_${randomUUID()}`,
    body: createHash("sha256").update(body).digest("base64url"),
  };
  const unsigned = `${encode({ alg: "HS256", typ: "JWT" })}.${encode(claims)}`;
  return `${unsigned}.${createHmac("sha256", key).update(unsigned).digest("base64url")}`;
}

async function unusedPort() {
  const probe = http.createServer();
  await new Promise((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const { port } = probe.address();
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

function parseMaybeJson(value) {
  if (typeof value !== "string") return value;
  try {
    return JSON.parse(value);
  } catch {
    return value;
  }
}

// ---------------------------------------------------------------------------------------------
// Scenarios. Each returns details and records failed checks; thrown errors fail the scenario.

const scenarios = {
  // The receiver really rejects requests that are not signed with the configured keys.
  async signature_check({ baseUrl }, checks) {
    const url = `${baseUrl}/wf/sequential`;
    const body = JSON.stringify([]);
    const response = await fetch(url, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "upstash-workflow-sdk-version": "1",
        "upstash-workflow-runid": "wfr_forged",
        "upstash-signature": signWith("sig_not_a_configured_key", url, body),
        "x-ts-sdk-forged": "1",
      },
      body,
      signal: AbortSignal.timeout(5_000),
    });
    const text = await response.text();
    checks.equal("forged signature is rejected with 500", response.status, 500);
    checks.that("rejection names the signature check", text.includes("Failed to verify"), text.slice(0, 200));
    return { status: response.status };
  },

  async sequential({ baseUrl }, checks) {
    const { workflowRunId } = await workflowClient.trigger({
      url: `${baseUrl}/wf/sequential`,
      body: { n: 21 },
      headers: { "x-trace-id": "trace-1" },
    });
    const run = await waitForFinalState(workflowRunId);
    const expected = { doubled: 42, plusOne: 43 };
    checks.equal("trigger header reaches the route", headersSeen.get(workflowRunId), "trace-1");
    const initial = run.steps?.[0]?.steps?.[0];
    checks.equal(
      "first log group is the Initial step with the raw payload",
      { stepName: initial?.stepName, stepType: initial?.stepType, callType: initial?.callType, out: initial?.out },
      { stepName: "init", stepType: "Initial", callType: "step", out: JSON.stringify({ n: 21 }) },
    );
    const initialHeaders = Object.fromEntries(
      Object.entries(initial?.headers ?? {}).map(([name, value]) => [name.toLowerCase(), value]),
    );
    checks.equal("Initial step headers hold the trigger header", initialHeaders["x-trace-id"], ["trace-1"]);
    const doubleLog = (run.steps ?? []).flatMap((g) => g.steps ?? []).find((step) => step.stepName === "double");
    checks.equal("logged out of step double", parseMaybeJson(doubleLog?.out), 42);
    checks.equal("workflowState", run.workflowState, "RUN_SUCCESS");
    checks.equal("route return value", returned.get(workflowRunId), expected);
    checks.equal("workflowRunResponse", parseMaybeJson(run.workflowRunResponse), expected);
    checks.equal("workflowUrl in logs", run.workflowUrl, `${baseUrl}/wf/sequential`);
    const names = stepNames(run);
    for (const name of ["init", "double", "pause", "add-one"]) {
      checks.that(`logs contain step ${name}`, names.includes(name), names);
    }
    const first = executions(workflowRunId, "double");
    const second = executions(workflowRunId, "add-one");
    checks.equal("step double executed once", first.length, 1);
    checks.equal("step add-one executed once", second.length, 1);
    const sleepGapMs = first.length && second.length ? second[0] - first[0] : null;
    if (TIME_SCALE !== null) {
      const minimum = SEQUENTIAL_SLEEP_S * 1000 * TIME_SCALE;
      checks.that("the sleep lasted its scaled duration", sleepGapMs >= minimum, sleepGapMs, `>= ${minimum} ms`);
    }
    return {
      workflowRunId,
      sleepGapMs,
      sleepSeconds: SEQUENTIAL_SLEEP_S,
      run: summarizeRun(run),
    };
  },

  async parallel({ baseUrl }, checks) {
    const { workflowRunId } = await workflowClient.trigger({ url: `${baseUrl}/wf/parallel`, body: {} });
    const run = await waitForFinalState(workflowRunId);
    const expected = { joined: "ABC", parts: ["A", "B", "C"] };
    checks.equal("workflowState", run.workflowState, "RUN_SUCCESS");
    checks.equal("route return value", returned.get(workflowRunId), expected);
    checks.equal("workflowRunResponse", parseMaybeJson(run.workflowRunResponse), expected);
    const counts = Object.fromEntries(
      ["par-a", "par-b", "par-c", "join"].map((name) => [name, executions(workflowRunId, name).length]),
    );
    checks.equal("each branch and the join executed once", counts, { "par-a": 1, "par-b": 1, "par-c": 1, join: 1 });
    const firstBranch = Math.min(...["par-a", "par-b", "par-c"].map((name) => executions(workflowRunId, name)[0]));
    const joinGapMs = executions(workflowRunId, "join")[0] - firstBranch;
    if (TIME_SCALE !== null) {
      // The sleep starts when its plan step is accepted, a little before the first branch runs.
      const minimum = 0.8 * PARALLEL_SLEEP_S * 1000 * TIME_SCALE;
      checks.that("the join waited for the parallel sleep", joinGapMs >= minimum, joinGapMs, `>= ${minimum} ms`);
    }
    const parallelGroup = (run.steps ?? []).find((group) => group.type === "parallel");
    const parallelNames = (parallelGroup?.steps ?? []).map((step) => step.stepName).sort();
    checks.equal("logs have one parallel group with the 4 branches", parallelNames, [
      "par-a",
      "par-b",
      "par-c",
      "par-sleep",
    ]);
    return { workflowRunId, executions: counts, joinGapMs, run: summarizeRun(run) };
  },

  async trigger_flow_control({ baseUrl }, checks) {
    const flowControl = { key: `ts-sdk-fc-${Date.now().toString(36)}`, parallelism: 2, rate: 50, period: "1s" };
    const retries = 2;
    const inputs = [1, 2, 3, 4, 5];
    const triggered = await workflowClient.trigger(
      inputs.map((i) => ({ url: `${baseUrl}/wf/flow`, body: { i }, flowControl, retries })),
    );
    checks.equal("trigger returns one id per run", triggered.length, inputs.length);
    const runIds = triggered.map((entry) => entry.workflowRunId);
    checks.that("run ids carry the wfr_ prefix", runIds.every((id) => id.startsWith("wfr_")), runIds);
    const runs = [];
    for (const runId of runIds) runs.push(await waitForFinalState(runId));
    runs.forEach((run, index) => {
      const expected = { i: inputs[index], second: inputs[index] * 10 + 1 };
      checks.equal(`run ${index} workflowState`, run.workflowState, "RUN_SUCCESS");
      checks.equal(`run ${index} workflowRunResponse`, run.workflowRunResponse, JSON.stringify(expected));
      checks.equal(`run ${index} route return value`, returned.get(run.workflowRunId), expected);
    });
    const stats = statsFor("/wf/flow");
    checks.that(
      `deliveries in flight at once <= parallelism (${flowControl.parallelism})`,
      stats.maxInflight <= flowControl.parallelism,
      stats.maxInflight,
      `<= ${flowControl.parallelism}`,
    );
    return {
      flowControl,
      retries,
      runIds,
      appMaxInflight: stats.maxInflight,
      deliveries: stats.requests,
      states: runs.map((run) => run.workflowState),
      responses: runs.map((run) => run.workflowRunResponse),
      flowControlKeysInLogs: runs.map((run) => run.flowControlKey ?? null),
    };
  },

  async cancel({ baseUrl }, checks) {
    const url = `${baseUrl}/wf/cancel`;
    const suffix = Date.now().toString(36);
    const runIds = [];
    for (const name of ["a", "b", "c"]) {
      const { workflowRunId } = await workflowClient.trigger({ url, body: {}, workflowRunId: `ts-cancel-${name}-${suffix}` });
      runIds.push(workflowRunId);
    }
    const [target, ...others] = runIds;
    checks.equal("a given run id gets the wfr_ prefix", target, `wfr_ts-cancel-a-${suffix}`);
    // Delivery 1 runs "before-sleep"; delivery 2 publishes the long sleep. After that a run is parked.
    await waitFor("all runs to park in their sleep", async () => {
      const counts = runIds.map((id) => deliveriesByRun.get(id) ?? 0);
      return { done: counts.every((count) => count >= 2), value: counts };
    });

    // A run start that reuses an active run id is deduplicated: nothing runs twice.
    await workflowClient.trigger({ url, body: {}, workflowRunId: `ts-cancel-a-${suffix}` });
    await sleepMs(300);
    checks.equal("re-triggering an active run id starts nothing", executions(target, "before-sleep").length, 1);

    const first = await workflowClient.cancel({ ids: target });
    const second = await workflowClient.cancel({ ids: target });
    const many = await workflowClient.cancel({ ids: [...others, `wfr_ts-cancel-missing-${suffix}`] });
    checks.equal("first cancel", first, { cancelled: 1 });
    checks.equal("second cancel", second, { cancelled: 0 });
    checks.equal("cancel of two runs and an unknown id", many, { cancelled: 2 });
    const runs = [];
    for (const id of runIds) runs.push(await waitForFinalState(id, 5_000));
    runs.forEach((run, index) => checks.equal(`run ${index} workflowState`, run.workflowState, "RUN_CANCELED"));
    await sleepMs(300);
    checks.equal(
      "no step ran after the cancel",
      runIds.map((id) => executions(id, "after-sleep").length),
      [0, 0, 0],
    );
    return {
      workflowRunId: target,
      runIds: others,
      first,
      second,
      many,
      deliveries: runIds.map((id) => deliveriesByRun.get(id)),
      states: runs.map((run) => run.workflowState),
      run: summarizeRun(runs[0]),
    };
  },

  async context_call({ baseUrl }, checks) {
    const hitsBefore = stubHits.length;
    const { workflowRunId } = await workflowClient.trigger({
      url: `${baseUrl}/wf/call`,
      body: { ping: "hello-stub", stubUrl: `${baseUrl}/stub/echo` },
    });
    const run = await waitForFinalState(workflowRunId);
    const expected = { status: 200, body: { pong: "hello-stub", method: "POST" }, checked: 200 };
    checks.equal("workflowState", run.workflowState, "RUN_SUCCESS");
    checks.equal("route return value", returned.get(workflowRunId), expected);
    checks.equal("workflowRunResponse", parseMaybeJson(run.workflowRunResponse), expected);
    const hits = stubHits.slice(hitsBefore);
    checks.equal("stub called once", hits.length, 1);
    const hit = hits[0];
    checks.equal("stub method", hit?.method, "POST");
    checks.equal("stub body", hit?.body, JSON.stringify({ ping: "hello-stub" }));
    checks.equal("forwarded call header", hit?.headers?.["x-stub-token"], "stub-secret");
    checks.that("stub request is signed", Boolean(hit?.headers?.["upstash-signature"]), hit?.headers);
    return {
      workflowRunId,
      stubUrl: `${baseUrl}/stub/echo`,
      stubHeaders: hit && Object.keys(hit.headers).sort(),
      run: summarizeRun(run),
    };
  },

  async failure_function({ baseUrl }, checks) {
    const payload = { order: 7, note: "keep me" };
    const retries = 1;
    const { workflowRunId } = await workflowClient.trigger({ url: `${baseUrl}/wf/failing`, body: payload, retries });
    const seen = await waitFor(`the failure function of ${workflowRunId}`, async () => ({
      done: failureCalls.has(workflowRunId),
      value: failureCalls.get(workflowRunId),
    }));
    checks.equal("failure function sees the original payload", seen.payload, payload);
    checks.equal("failStatus", seen.failStatus, 500);
    checks.that("failResponse carries the step error", String(seen.failResponse).includes(FAILURE_MARKER), seen.failResponse);
    checks.equal("failure context url", seen.url, `${baseUrl}/wf/failing`);
    const attempts = executions(workflowRunId, "will-fail").length;
    checks.equal("attempts = 1 + retries", attempts, 1 + retries);
    const run = await waitForFinalState(workflowRunId, 5_000);
    checks.equal("workflowState", run.workflowState, "RUN_FAILED");
    const reported = errorStepNames.get(workflowRunId) ?? [];
    const nextGroup = (run.steps ?? []).find((group) => group.type === "next");
    checks.equal("SDK reported the failing step via Upstash-Error-Step-Name", reported[0], "will-fail");
    checks.equal("logs name the failing step in the next group", nextGroup?.steps?.[0]?.stepName, "will-fail");
    checks.equal("logs mark the failing step STEP_FAILED", nextGroup?.steps?.[0]?.state, "STEP_FAILED");
    return {
      workflowRunId,
      attempts,
      failStatus: seen.failStatus,
      failResponse: seen.failResponse,
      failureFunctionState: run.failureFunction?.state ?? null,
      dlqId: run.dlqId ?? run.failureFunction?.dlqId ?? null,
      run: summarizeRun(run),
    };
  },

  // A failed run in the workflow DLQ: resumed (succeeded steps replayed) and restarted.
  async workflow_dlq({ baseUrl }, checks) {
    const url = `${baseUrl}/wf/flaky`;
    const failRun = async (key) => {
      flakyFailing.add(key);
      const { workflowRunId } = await workflowClient.trigger({ url, body: { key }, retries: 0 });
      await waitFor(`the failure function of ${workflowRunId}`, async () => ({
        done: failureCalls.has(workflowRunId),
        value: [...failureCalls.keys()],
      }));
      const { messages } = await workflowClient.dlq.list({ filter: { workflowRunId } });
      checks.equal(`one DLQ entry for ${key}`, messages?.length, 1);
      flakyFailing.delete(key);
      return { workflowRunId, dlqId: messages?.[0]?.dlqId };
    };
    const ran = (key, step) => flakyExecutions.get(`${key}:${step}`) ?? 0;

    const resumeKey = `resume-${randomUUID()}`;
    const failedA = await failRun(resumeKey);
    const resumed = await workflowClient.dlq.resume({ dlqId: failedA.dlqId, retries: 0 });
    checks.that("resume gives a new run id", resumed?.workflowRunId && resumed.workflowRunId !== failedA.workflowRunId, resumed);
    checks.that("resume gives workflowCreatedAt", typeof resumed?.workflowCreatedAt === "number", resumed);
    const resumedRun = await waitForFinalState(resumed.workflowRunId);
    checks.equal("resumed run state", resumedRun.workflowState, "RUN_SUCCESS");
    checks.equal("resumed run result", parseMaybeJson(resumedRun.workflowRunResponse), { key: resumeKey, two: 2 });
    checks.equal("resume does not execute the succeeded step again", ran(resumeKey, "flaky-first"), 1);
    checks.equal("resume executes the failed step again", ran(resumeKey, "flaky-second"), 2);

    const restartKey = `restart-${randomUUID()}`;
    const failedB = await failRun(restartKey);
    const restarted = await workflowClient.dlq.restart({ dlqId: [failedB.dlqId] });
    checks.equal("restart with an id array gives an array", Array.isArray(restarted) && restarted.length, 1);
    const restartedRun = await waitForFinalState(restarted[0].workflowRunId);
    checks.equal("restarted run state", restartedRun.workflowState, "RUN_SUCCESS");
    checks.equal("restart executes every step again", ran(restartKey, "flaky-first"), 2);

    const left = await workflowClient.dlq.list({ filter: { workflowRunId: failedB.workflowRunId } });
    checks.equal("restarted entry left the DLQ", left.messages ?? [], []);
    return {
      runIds: [failedA.workflowRunId, resumed.workflowRunId, failedB.workflowRunId, restarted[0].workflowRunId],
      resumed: summarizeRun(resumedRun),
      restarted: summarizeRun(restartedRun),
    };
  },

  // A run whose step URL and failure URL are both unreachable: one DLQ entry, whose
  // failureCallbackInfo ends in CALLBACK_FAIL with the connection error as response body.
  async dlq_unreachable_failure_url(_ctx, checks) {
    const stepPort = await unusedPort();
    const failurePort = await unusedPort();
    const failureUrl = `http://127.0.0.1:${failurePort}/failure`;
    const { workflowRunId } = await workflowClient.trigger({
      url: `http://127.0.0.1:${stepPort}/wf`,
      body: { x: 1 },
      failureUrl,
      retries: 0,
    });
    const entry = await waitFor(`CALLBACK_FAIL on the DLQ entry of ${workflowRunId}`, async () => {
      const { messages } = await workflowClient.dlq.list({ filter: { workflowRunId } });
      const info = messages?.[0]?.failureCallbackInfo;
      return { done: info?.state === "CALLBACK_FAIL", value: messages?.[0] };
    });
    const { messages } = await workflowClient.dlq.list({ filter: { workflowRunId } });
    checks.equal("one DLQ entry for the run", messages?.length, 1);
    checks.equal("entry workflowRunId", entry.workflowRunId, workflowRunId);
    checks.equal("entry failureCallback", entry.failureCallback, failureUrl);
    checks.equal("entry responseStatus (never reached)", entry.responseStatus, 0);
    checks.that("entry responseBody names the cause", String(entry.responseBody).includes(String(stepPort)), entry.responseBody);
    const info = entry.failureCallbackInfo;
    checks.equal("callback responseStatus (never reached)", info?.responseStatus, 0);
    checks.that("callback responseBody names the cause", String(info?.responseBody).includes(String(failurePort)), info?.responseBody);
    checks.equal("callback responseHeaders", info?.responseHeaders, {});
    const byState = await workflowClient.dlq.list({ filter: { workflowRunId, failureFunctionState: "CALLBACK_FAIL" } });
    checks.equal("failureFunctionState filter", (byState.messages ?? []).map((m) => m.dlqId), [entry.dlqId]);
    const retried = await workflowClient.dlq.retryFailureFunction({ dlqId: entry.dlqId });
    checks.equal("retryFailureFunction names the run", retried?.workflowRunId, workflowRunId);
    return { workflowRunId, runIds: [workflowRunId], dlqId: entry.dlqId, failureCallbackInfo: info };
  },

  // The failure callback's state on the run's DLQ entry, attempt by attempt, and
  // retryFailureFunction from CALLBACK_FAIL.
  async dlq_failure_callback_state({ baseUrl }, checks) {
    let release;
    failureSink.gate = new Promise((resolve) => {
      release = resolve;
    });
    failureSink.status = 500;
    const hitsBefore = failureSink.hits.length;
    const { workflowRunId } = await workflowClient.trigger({
      url: `http://127.0.0.1:${await unusedPort()}/wf`,
      body: { y: 2 },
      failureUrl: `${baseUrl}/stub/failure-sink`,
      retries: 0,
    });
    const stateOf = async () => {
      const { messages } = await workflowClient.dlq.list({ filter: { workflowRunId } });
      return { count: messages?.length ?? 0, entry: messages?.[0] };
    };
    const held = await waitFor("the failure callback in flight", async () => {
      const { entry } = await stateOf();
      return { done: entry?.failureCallbackInfo?.state === "CALLBACK_INPROGRESS", value: entry };
    });
    checks.equal("in progress: no response yet", held.failureCallbackInfo?.responseStatus, undefined);
    release();
    const failed = await waitFor("CALLBACK_FAIL", async () => {
      const { entry } = await stateOf();
      return { done: entry?.failureCallbackInfo?.state === "CALLBACK_FAIL", value: entry };
    });
    checks.equal("failed callback status", failed.failureCallbackInfo.responseStatus, 500);
    checks.equal("failed callback body", failed.failureCallbackInfo.responseBody, "failure sink answered 500");
    checks.equal("failed callback header", failed.failureCallbackInfo.responseHeaders?.["X-Sink"] ?? failed.failureCallbackInfo.responseHeaders?.["x-sink"], ["yes"]);

    failureSink.status = 200;
    const retried = await workflowClient.dlq.retryFailureFunction({ dlqId: failed.dlqId });
    checks.equal("retryFailureFunction names the run", retried?.workflowRunId, workflowRunId);
    checks.that("retryFailureFunction gives workflowCreatedAt", typeof retried?.workflowCreatedAt === "number", retried);
    const succeeded = await waitFor("CALLBACK_SUCCESS", async () => {
      const { entry } = await stateOf();
      return { done: entry?.failureCallbackInfo?.state === "CALLBACK_SUCCESS", value: entry };
    });
    checks.equal("succeeded callback status", succeeded.failureCallbackInfo.responseStatus, 200);
    checks.equal("succeeded callback body", succeeded.failureCallbackInfo.responseBody, "failure sink answered 200");
    checks.equal("still one DLQ entry", (await stateOf()).count, 1);
    const hits = failureSink.hits.slice(hitsBefore);
    checks.equal("the failure URL was called twice", hits.length, 2);
    checks.equal("the same failure payload both times", hits[0], hits[1]);
    const run = await runLog(workflowRunId);
    checks.equal("run log failureFunction state", run?.failureFunction?.state, "CALLBACK_SUCCESS");
    return { workflowRunId, runIds: [workflowRunId], dlqId: failed.dlqId };
  },

  // WF_DetectTrigger: a run started against an endpoint that does not answer as a workflow fails.
  async non_workflow_trigger({ baseUrl }, checks) {
    const { workflowRunId } = await workflowClient.trigger({ url: `${baseUrl}/stub/plain`, body: { x: 1 } });
    const run = await waitForFinalState(workflowRunId);
    checks.equal("workflowState", run.workflowState, "RUN_FAILED");
    const next = (run.steps ?? []).find((group) => group.type === "next")?.steps?.[0];
    checks.equal("next step state", next?.state, "STEP_FAILED");
    checks.equal("next step error", next?.errors?.[0]?.error, NON_WORKFLOW_ERROR);
    checks.equal("next step error body", next?.errors?.[0]?.body, PLAIN_STUB_BODY);
    return { workflowRunId, run: summarizeRun(run) };
  },

  // waitForEvent resolved by Client.notify, a wait that times out, and a notify nobody hears.
  async wait_notify({ baseUrl }, checks) {
    const url = `${baseUrl}/wf/wait`;
    const eventId = `evt-${randomUUID()}`;
    const { workflowRunId } = await workflowClient.trigger({ url, body: { eventId, timeout: "1d" } });
    const waiters = await waitFor(`a waiter for ${eventId}`, async () => {
      const found = await workflowClient.getWaiters({ eventId });
      return { done: found.length === 1, value: found };
    });
    checks.equal("waiter url", waiters[0].url, url);
    checks.that("waiter deadline is in the future (s)", waiters[0].deadline > Date.now() / 1000, waiters[0].deadline);
    const notified = await workflowClient.notify({ eventId, eventData: { hello: "world" } });
    checks.equal("notify reached one waiter", notified.length, 1);
    checks.equal("notify names the run", notified[0]?.workflowRunId, workflowRunId);
    checks.equal("notified waiter url", notified[0]?.waiter?.url, url);
    const run = await waitForFinalState(workflowRunId);
    checks.equal("notified run state", run.workflowState, "RUN_SUCCESS");
    checks.equal("notified run result", parseMaybeJson(run.workflowRunResponse), {
      eventData: { hello: "world" },
      timedOut: false,
    });
    checks.equal("no waiter left", await workflowClient.getWaiters({ eventId }), []);

    const timeoutEvent = `evt-${randomUUID()}`;
    const timeoutRun = await workflowClient.trigger({ url, body: { eventId: timeoutEvent, timeout: "10s" } });
    const timedOut = await waitForFinalState(timeoutRun.workflowRunId);
    checks.equal("timed-out run state", timedOut.workflowState, "RUN_SUCCESS");
    checks.equal("timed-out run result", parseMaybeJson(timedOut.workflowRunResponse), {
      eventData: null,
      timedOut: true,
    });
    const unheard = await workflowClient.notify({ eventId: `evt-${randomUUID()}`, eventData: "lost" });
    checks.equal("notify without a waiter", unheard, []);
    return {
      workflowRunId,
      runIds: [timeoutRun.workflowRunId],
      notifiedCount: notified.length,
      run: summarizeRun(run),
      timedOutRun: summarizeRun(timedOut),
    };
  },

  // createWebhook + waitForWebhook: a call to the webhook URL resumes the run with the request.
  async webhook({ baseUrl }, checks) {
    const { workflowRunId } = await workflowClient.trigger({ url: `${baseUrl}/wf/webhook`, body: {} });
    const run = await waitForFinalState(workflowRunId);
    checks.equal("webhook run state", run.workflowState, "RUN_SUCCESS");
    checks.equal("webhook run result", parseMaybeJson(run.workflowRunResponse), {
      timeout: false,
      method: "POST",
      body: "hook-body",
      hookHeader: "yes",
      source: "scenario",
    });
    return { workflowRunId, run: summarizeRun(run) };
  },

  // URL groups: endpoints managed with client.urlGroups; a publish reaches every endpoint.
  async url_groups({ baseUrl }, checks) {
    const name = `group-${randomUUID().slice(0, 8)}`;
    const urlA = `${baseUrl}/stub/group/a`;
    const urlB = `${baseUrl}/stub/group/b`;
    await qstashClient.urlGroups.addEndpoints({ name, endpoints: [{ url: urlA }, { url: urlB, name: "b" }] });
    const group = await qstashClient.urlGroups.get(name);
    checks.equal("group endpoints", group.endpoints, [{ url: urlA }, { url: urlB, name: "b" }]);
    checks.that("group times", group.createdAt > 0 && group.updatedAt >= group.createdAt, group);
    const listed = await qstashClient.urlGroups.list();
    checks.that("list has the group", listed.some((g) => g.name === name), listed.map((g) => g.name));

    const published = await qstashClient.publishJSON({ urlGroup: name, body: { via: "publish" } });
    checks.equal("one entry per endpoint", Array.isArray(published) && published.map((p) => p.url), [urlA, urlB]);
    checks.that(
      "distinct message ids",
      Array.isArray(published) && new Set(published.map((p) => p.messageId)).size === 2,
      published,
    );
    const [batchGroup] = await qstashClient.batchJSON([{ urlGroup: name, body: { via: "batch" } }]);
    checks.equal("batch answers a nested list", Array.isArray(batchGroup) && batchGroup.map((p) => p.url), [urlA, urlB]);
    const enqueued = await qstashClient.queue({ queueName: `${name}-q` }).enqueueJSON({ urlGroup: name, body: { via: "queue" } });
    checks.equal("enqueue answers one entry per endpoint", Array.isArray(enqueued) && enqueued.map((p) => p.url), [urlA, urlB]);
    const hits = await waitFor(`6 deliveries to ${name}`, async () => {
      const seen = groupHits.filter((hit) => hit.headers["upstash-topic-name"] === name);
      return { done: seen.length === 6, value: seen };
    });
    const bodies = (path) => hits.filter((hit) => hit.path === path).map((hit) => hit.body).sort();
    const expected = ["batch", "publish", "queue"].map((via) => JSON.stringify({ via }));
    checks.equal("endpoint a got each message", bodies("/stub/group/a"), expected);
    checks.equal("endpoint b got each message", bodies("/stub/group/b"), expected);
    const { logs } = await qstashClient.logs({ filter: { messageId: published[1].messageId } });
    checks.equal("logs name the group", [...new Set(logs.map((log) => log.urlGroup))], [name]);
    checks.equal("logs name the endpoint", [...new Set(logs.map((log) => log.endpointName))], ["b"]);

    await qstashClient.urlGroups.removeEndpoints({ name, endpoints: [{ name: "b" }] });
    checks.equal("after remove", (await qstashClient.urlGroups.get(name)).endpoints, [{ url: urlA }]);
    await qstashClient.urlGroups.delete(name);
    let missing = null;
    try {
      await qstashClient.urlGroups.get(name);
    } catch (error) {
      missing = String(error);
    }
    checks.that("deleted group is gone", String(missing).includes(`url group ${name} not found`), missing);
    return { name, published };
  },

  // Flow control read back from messages, schedules and the flow-control API, defaults included.
  async flow_control_readback(_ctx, checks) {
    const url = `http://127.0.0.1:${await unusedPort()}/fc`;
    const key = `fc-ts-${randomUUID().slice(0, 8)}`;
    const pick = (object) =>
      Object.fromEntries(
        ["flowControlKey", "parallelism", "rate", "period"].filter((f) => object?.[f] !== undefined).map((f) => [f, object[f]]),
      );
    const { messageId } = await qstashClient.publishJSON({ url, body: {}, delay: "1d", flowControl: { key, parallelism: 5 } });
    const message = await qstashClient.messages.get(messageId);
    checks.equal("message flow control", pick(message), { flowControlKey: key, parallelism: 5, period: 1 });
    const rated = await qstashClient.publishJSON({ url, body: {}, delay: "1d", flowControl: { key: `${key}-r`, rate: 10, period: "2m" } });
    checks.equal("rate-only flow control", pick(await qstashClient.messages.get(rated.messageId)), {
      flowControlKey: `${key}-r`,
      rate: 10,
      period: 120,
    });
    const info = await qstashClient.flowControl.get(key);
    checks.equal("flow-control API", { ...info, ratePeriodStart: typeof info.ratePeriodStart }, {
      flowControlKey: key,
      waitListSize: 0,
      parallelismMax: 5,
      parallelismCount: 0,
      rateMax: 0,
      rateCount: 0,
      ratePeriod: 1,
      ratePeriodStart: "number",
      isPaused: false,
      isPinnedParallelism: false,
      isPinnedRate: false,
    });
    const { scheduleId } = await qstashClient.schedules.create({
      destination: url,
      cron: "1 1 1 1 1",
      body: "{}",
      flowControl: { key, parallelism: 2 },
    });
    const schedule = await qstashClient.schedules.get(scheduleId);
    checks.equal("schedule flow control", pick(schedule), { flowControlKey: key, parallelism: 2, period: 1 });
    await qstashClient.schedules.delete(scheduleId);
    await qstashClient.messages.delete(messageId);
    await qstashClient.messages.delete(rated.messageId);
    return { key, message: pick(message), schedule: pick(schedule) };
  },

  async qstash_publish_dlq(_ctx, checks) {
    const deadUrl = `http://127.0.0.1:${await unusedPort()}/dead`;

    // A delayed message is still pending, so messages.get must describe it.
    const pendingBody = { kind: "pending" };
    const pending = await qstashClient.publishJSON({
      url: deadUrl,
      body: pendingBody,
      headers: { "x-custom": "custom-value" },
      delay: "1d",
      retries: 0,
    });
    const message = await qstashClient.messages.get(pending.messageId);
    checks.equal("messages.get messageId", message.messageId, pending.messageId);
    checks.equal("messages.get url", message.url, deadUrl);
    checks.equal("messages.get method", message.method, "POST");
    checks.equal("messages.get maxRetries", message.maxRetries, 0);
    checks.equal("messages.get body", message.body, JSON.stringify(pendingBody));
    checks.that("messages.get notBefore is in the future (ms)", message.notBefore > Date.now(), message.notBefore);
    // `header` holds the headers that will be sent to the destination.
    const header = Object.fromEntries(Object.entries(message.header ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
    checks.equal("messages.get header has the forwarded header", header["x-custom"], ["custom-value"]);
    checks.that("messages.get header does not expose the API token", !("authorization" in header), Object.keys(header));
    await qstashClient.messages.delete(pending.messageId);

    // An immediate message to a closed port fails its only attempt and lands in the DLQ.
    const deadBody = { kind: "dead", n: 1 };
    const dead = await qstashClient.publishJSON({ url: deadUrl, body: deadBody, retries: 0 });
    checks.that("publishJSON returns a messageId", typeof dead.messageId === "string" && dead.messageId.length > 0, dead);
    const entry = await waitFor(`DLQ entry for ${dead.messageId}`, async () => {
      const { messages } = await qstashClient.dlq.listMessages();
      const found = (messages ?? []).find((m) => m.messageId === dead.messageId);
      return { done: Boolean(found), value: found ?? (messages ?? []).map((m) => m.messageId) };
    });
    checks.that("DLQ entry has a dlqId", typeof entry.dlqId === "string" && entry.dlqId.length > 0, entry.dlqId);
    checks.equal("DLQ entry url", entry.url, deadUrl);
    checks.equal("DLQ entry maxRetries", entry.maxRetries, 0);
    checks.equal("DLQ entry body", entry.body, JSON.stringify(deadBody));
    checks.equal("DLQ entry method", entry.method, "POST");
    const dlqHeaderNames = Object.keys(entry.header ?? {}).map((name) => name.toLowerCase());
    checks.that("DLQ entry header does not expose the API token", !dlqHeaderNames.includes("authorization"), dlqHeaderNames);
    return {
      deadUrl,
      pendingMessageId: pending.messageId,
      deadMessageId: dead.messageId,
      dlqId: entry.dlqId,
      dlqEntry: { url: entry.url, maxRetries: entry.maxRetries, responseStatus: entry.responseStatus ?? null },
    };
  },

  // The logs through `Client.logs()`, as Upstash serves them: the runs of the scenarios
  // above (returned raw for the Python side to check field by field), a step being
  // retried (its `errors`, `retryDelay`, `nextDeliveryTime`), and that step once cancelled.
  async run_logs({ baseUrl }, checks) {
    const logged = {};
    for (const [name, runId] of scenarioRuns) {
      const page = await workflowClient.logs({ workflowRunId: runId });
      checks.equal(`${name}: one run, and no cursor on the last page`, [page.runs.length, "cursor" in page], [1, false]);
      logged[name] = page.runs[0];
    }
    const paged = await workflowClient.logs({ count: 1 });
    checks.that("a page with more after it has a cursor", typeof paged.cursor === "string" && paged.cursor !== "", paged.cursor);
    checks.that("no engine-only token unless asked for", !("changeToken" in paged), Object.keys(paged));

    const retryDelay = "1000000"; // 1000 s, so the first retry is far off (even scaled)
    const { workflowRunId } = await workflowClient.trigger({
      url: `${baseUrl}/wf/failing`,
      body: { retrying: true },
      retries: 2,
      retryDelay,
    });
    const retrying = await waitFor("a step being retried", async () => {
      const run = await runLog(workflowRunId);
      const next = (run?.steps ?? []).find((group) => group.type === "next")?.steps?.[0];
      return { done: next?.state === "STEP_RETRY" && (next.errors ?? []).length > 0, value: run };
    });
    const next = retrying.steps.find((group) => group.type === "next").steps[0];
    checks.equal("retrying step: retries and retryDelay", [next.retries, next.retryDelay], [2, retryDelay]);
    checks.equal("retrying step: its failed attempt", {
      status: next.errors[0].status,
      hasMarker: String(next.errors[0].body).includes(FAILURE_MARKER),
      time: typeof next.errors[0].time,
    }, { status: 500, hasMarker: true, time: "number" });
    checks.that("retrying step: next delivery later", next.nextDeliveryTime > Date.now(), next.nextDeliveryTime);
    await workflowClient.cancel({ ids: workflowRunId });
    const canceled = await waitForFinalState(workflowRunId, 5_000);
    const stopped = (canceled.steps ?? []).find((group) => group.type === "next")?.steps?.[0];
    checks.equal("cancelled step", [stopped?.state, stopped?.errors?.length, stopped?.retryDelay], ["STEP_CANCELED", 1, retryDelay]);
    return { workflowRunId, logged, retrying, canceled, paged: { cursor: paged.cursor, runs: paged.runs.length } };
  },
};

// ---------------------------------------------------------------------------------------------

function emit(result) {
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

async function runScenario(name, ctx) {
  const checks = new Checks();
  const started = Date.now();
  let details = {};
  let timer;
  try {
    details = await Promise.race([
      scenarios[name](ctx, checks),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`scenario timed out after ${SCENARIO_TIMEOUT_MS} ms`)), SCENARIO_TIMEOUT_MS + 2_000);
      }),
    ]);
  } catch (error) {
    checks.failures.push({ check: "scenario completed", expected: "no error", got: String(error?.stack ?? error) });
  } finally {
    clearTimeout(timer);
  }
  if (details?.workflowRunId) scenarioRuns.set(name, details.workflowRunId);
  const result = { scenario: name, ok: checks.failures.length === 0, durationMs: Date.now() - started, details, failures: checks.failures };
  emit(result);
  return result.ok;
}

async function main() {
  const selected = process.env.SCENARIOS ? process.env.SCENARIOS.split(",").map((s) => s.trim()) : Object.keys(scenarios);
  const unknown = selected.filter((name) => !(name in scenarios));
  if (unknown.length) {
    console.error(`unknown scenarios: ${unknown.join(", ")}`);
    process.exit(2);
  }
  const { server, baseUrl } = await startAppServer();
  log(`app server on ${baseUrl}, QStash at ${QSTASH_URL}`);
  const watchdog = setTimeout(() => {
    emit({ scenario: "watchdog", ok: false, durationMs: TOTAL_TIMEOUT_MS, details: {}, failures: [{ check: "total time", expected: `< ${TOTAL_TIMEOUT_MS} ms`, got: "exceeded" }] });
    process.exit(3);
  }, TOTAL_TIMEOUT_MS);

  let allOk = true;
  for (const name of selected) {
    allOk = (await runScenario(name, { baseUrl })) && allOk;
  }

  // Every delivery must pass signature verification and be handled without an SDK error.
  const stats = Object.fromEntries(routeStats);
  const total = (field) => Object.values(stats).reduce((sum, s) => sum + s[field], 0);
  const failures = [];
  if (total("signatureRejections")) {
    failures.push({ check: "deliveries pass signature verification", expected: 0, got: total("signatureRejections") });
  }
  if (total("unexpectedErrors")) {
    failures.push({ check: "no delivery answered with an SDK error", expected: 0, got: total("unexpectedErrors") });
  }
  const summary = {
    scenario: "deliveries",
    ok: failures.length === 0,
    durationMs: 0,
    details: { routes: stats, stubHits: stubHits.length },
    failures,
  };
  emit(summary);
  allOk = allOk && summary.ok;

  clearTimeout(watchdog);
  server.closeAllConnections?.();
  await new Promise((resolve) => server.close(resolve));
  process.exit(allOk ? 0 : 1);
}

main().catch((error) => {
  console.error(error);
  process.exit(2);
});
