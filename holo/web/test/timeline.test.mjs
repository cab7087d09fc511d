// The page's timeline against the shared vectors (tests/vectors/timeline.json): what the
// Python SDK's SessionTimeline answered, interpolated values to the last bit. The vectors
// are in the plain JSON forms of the records (tests/vectors/session_fold.py); they are
// turned here into what the page's session.js and fold.js make of the wire. The page has
// no FrameSync of its own (video.js holds frames back itself): for the vectors' frames,
// the state of each frame's moment is checked where the SDK's FrameSync paired it.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { emptyState } from "../src/fold.js";
import { between, MAX_GAP_NS, Timeline } from "../src/timeline.js";

const vectorsPath = new URL("../../../tests/vectors/timeline.json", import.meta.url);
const { scenarios } = JSON.parse(readFileSync(vectorsPath, "utf8"));

const camel = (name) => name.replace(/_([a-z])/g, (_, c) => c.toUpperCase());
const snake = (name) => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
// JSON objects compare without regard to key order, and -0 as 0 (as C#'s ==).
const canonical = (value) => JSON.parse(JSON.stringify(value));

const participant = (p) => ({
  participantId: p.participant_id,
  role: p.role,
  displayName: p.display_name,
  present: p.present,
});
const scene = (m, tNs) => ({ modelId: m.model_id, anchorPose: { ...m.anchor_pose }, tNs });
const annotation = (a) => ({
  annotationId: a.annotation_id,
  modelId: a.model_id,
  author: a.author,
  shape: a.shape,
  points: a.points,
  text: a.text,
});
const telestration = (t) => ({
  telestrationId: t.telestration_id,
  trackId: t.track_id,
  frameTNs: BigInt(t.frame_t_ns),
  author: t.author,
  points: t.points,
  rgb: t.rgb,
});

function stateOf(s) {
  const state = emptyState();
  state.seq = s.seq;
  for (const p of s.participants) state.participants.set(p.participant_id, participant(p));
  for (const m of s.models) state.models.set(m.model_id, scene(m, 0n));
  for (const a of s.annotations) state.annotations.set(a.annotation_id, annotation(a));
  state.controller = s.controller;
  state.controlRequests = [...s.control_requests];
  for (const t of s.telestrations) state.telestrations.set(t.telestration_id, telestration(t));
  return state;
}

/** An event as session.js's eventFrom makes it (kind camelCase; a model carries its time). */
function eventOf(e) {
  const tNs = BigInt(e.t_ns);
  const kind = camel(e.kind);
  const d = e.data;
  let data;
  if (kind === "joined") data = participant(d.participant);
  else if (kind === "modelLoaded" || kind === "anchorCommitted") data = scene(d, tNs);
  else if (kind === "annotationAdded") data = annotation(d.annotation);
  else if (kind === "annotationRemoved") data = d.annotation_id;
  else if (kind === "telestrationAdded") data = telestration(d.telestration);
  else data = d.participant_id;
  return { seq: e.seq, tNs, actor: e.actor, kind, data };
}

/** An ephemeral update as session.js's take() makes it (a heartbeat: no value). */
function updateOf(u) {
  const channel = camel(u.channel);
  const v = u.value;
  let value = null;
  if (channel === "headPose") value = { ...v.head_pose };
  else if (channel === "pointer") value = { origin: v.origin, direction: v.direction };
  else if (channel === "drag") value = { modelId: v.model_id, anchorPose: { ...v.anchor_pose } };
  return { participantId: u.participant_id, channel, tNs: BigInt(u.t_ns), value };
}

/** An update's value in the layout of EphemeralUpdate.to_json's "value". */
function plainValue(u) {
  const v = u.value;
  if (u.channel === "headPose") return { head_pose: v };
  if (u.channel === "pointer") return { origin: v.origin, direction: v.direction };
  if (u.channel === "drag") return { model_id: v.modelId, anchor_pose: v.anchorPose };
  return {};
}

/** The answer in the layout of tests/vectors/timeline.py's _answer. */
function answer(at) {
  const { state } = at;
  const models = new Set(state.models.keys());
  for (const u of at.ephemeral.values()) if (u.channel === "drag") models.add(u.value.modelId);
  return canonical({
    seq: state.seq,
    exact: at.exact,
    participants: [...state.participants].map(([k, p]) => [k, p.present]),
    models: [...state.models].map(([k, m]) => [k, m.anchorPose, Number(m.tNs)]),
    annotations: [...state.annotations.keys()],
    telestrations: [...state.telestrations.keys()],
    controller: state.controller,
    control_requests: [...state.controlRequests],
    ephemeral: [...at.ephemeral.values()].map((u) => [
      u.participantId,
      snake(u.channel),
      Number(u.tNs),
      plainValue(u),
    ]),
    anchor_poses: [...models].sort().map((k) => [k, at.anchorPose(k)]),
  });
}

test("the vectors hold random and motion scenarios, interpolating and not", () => {
  assert.ok(scenarios.length >= 6);
  assert.ok(scenarios.some((s) => !s.interpolate), "one scenario holds the newest value");
  assert.ok(scenarios.some((s) => s.max_gap_ns !== Number(MAX_GAP_NS)), "another gap");
});

for (const scenario of scenarios) {
  const name = `scenario ${scenario.seed} (interpolate ${scenario.interpolate}, gap ${scenario.max_gap_ns} ns)`;
  test(`${name}: the timeline answers as the Python SDK's`, () => {
    const timeline = new Timeline(BigInt(scenario.horizon_ns), {
      interpolate: scenario.interpolate,
      maxGapNs: BigInt(scenario.max_gap_ns),
    });
    const fed = new Map(); // `${pid}/${channel}/${t}` -> the update fed
    let queries = 0;
    let interpolated = 0;
    scenario.ops.forEach((op, k) => {
      const where = `${name}, op ${k}`;
      if (op.op === "reset") timeline.reset(stateOf(op.snapshot), BigInt(op.snapshot.t_ns));
      else if (op.op === "event") timeline.onEvent(eventOf(op.event));
      else if (op.op === "ephemeral") {
        const update = updateOf(op.update);
        timeline.onEphemeral(update);
        fed.set(`${update.participantId}/${update.channel}/${update.tNs}`, update);
      } else if (op.op === "query") {
        const at = timeline.stateAt(BigInt(op.t_ns));
        assert.deepStrictEqual(answer(at), canonical(op.expected), where);
        queries += 1;
        for (const u of at.ephemeral.values()) {
          if (fed.get(`${u.participantId}/${u.channel}/${u.tNs}`) !== u) interpolated += 1;
        }
      } else if (op.op === "ready" || op.op === "drain") {
        for (const [t, seq, exact] of op.expected) {
          const at = timeline.stateAt(BigInt(t));
          assert.deepStrictEqual([at.state.seq, at.exact], [seq, exact], `${where}: frame at ${t}`);
        }
      } else assert.equal(op.op, "push", `${where}: unknown op`);
    });
    assert.ok(queries >= 10, `${queries} queries`);
    if (!scenario.interpolate) assert.equal(interpolated, 0);
    else if (scenario.seed >= 10) assert.ok(interpolated > 100, `${interpolated} values interpolated`);
  });
}

test("a rotation takes the short way and stays unit; cancelling rays and heartbeats are held", () => {
  const s = Math.sin(Math.PI / 4);
  const c = Math.cos(Math.PI / 4); // 90 degrees about y
  const head = (t, rotation) => ({
    participantId: "p",
    channel: "headPose",
    tNs: t,
    value: { position: [0, 0, 0], rotation },
  });
  const a = head(0n, [0, 0, 0, 1]);
  const half = between(a, head(100n, [0, s, 0, c]), 0.5).value.rotation;
  assert.ok(Math.abs(Math.hypot(...half) - 1) < 1e-12);
  assert.ok(Math.abs((2 * Math.acos(half[3]) * 180) / Math.PI - 45) < 1e-9, "nlerp halves a 90 degree turn");
  assert.deepStrictEqual(between(a, head(100n, [0, -s, 0, -c]), 0.5).value.rotation, half, "-q is q");
  const ray = (t, direction) => ({
    participantId: "p",
    channel: "pointer",
    tNs: t,
    value: { origin: [0, 1.6, 0], direction },
  });
  const r = ray(0n, [0, 0, -1]);
  assert.equal(between(r, ray(100n, [0, 0, 1]), 0.5), r);
  assert.deepStrictEqual(between(r, ray(100n, [1, 0, -1]), 0.5).value.direction, [0.5, 0, -1]);
  const beat = { participantId: "p", channel: "heartbeat", tNs: 0n, value: null };
  assert.equal(between(beat, { ...beat, tNs: 100n }, 0.5), beat);
});

test("values further apart than the gap are held, and interpolation can be turned off", () => {
  const drag = (t, x, modelId = "m") => ({
    participantId: "p",
    channel: "drag",
    tNs: t * 1_000_000n,
    value: { modelId, anchorPose: { position: [x, 1, -0.5], rotation: [0, 0, 0, 1] } },
  });
  const x = (timeline, t) => timeline.stateAt(t * 1_000_000n).latest("p", "drag").value.anchorPose.position[0];
  const make = (options, ...updates) => {
    const timeline = new Timeline(10_000_000_000n, options);
    for (const u of updates) timeline.onEphemeral(u);
    return timeline;
  };
  assert.ok(Math.abs(x(make({}, drag(0n, 0), drag(66n, 0.66)), 33n) - 0.33) < 1e-12);
  assert.equal(x(make({}, drag(0n, 0), drag(400n, 4)), 200n), 0);
  assert.equal(x(make({ maxGapNs: 500_000_000n }, drag(0n, 0), drag(400n, 4)), 200n), 2);
  assert.equal(x(make({ interpolate: false }, drag(0n, 0), drag(66n, 0.66)), 33n), 0);
  assert.equal(x(make({}, drag(0n, 0), drag(66n, 0.66, "other")), 33n), 0, "another model: held");
  assert.equal(make({}, drag(0n, 0)).stateAt(-1n).latest("p", "drag"), null);
});
