// The page's session fold against the shared vectors (tests/vectors/session_fold.json):
// the same wire events must fold to the same state as in the Python SDK.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { create, fromBinary } from "@bufbuild/protobuf";
import { SessionEventSchema, SessionSnapshotSchema } from "../src/gen/holo/v1/session_pb.js";
import { apply, eventFrom, publicState, stateFromSnapshot } from "../src/fold.js";

const vectorsPath = new URL("../../../tests/vectors/session_fold.json", import.meta.url);
const { scenarios } = JSON.parse(readFileSync(vectorsPath, "utf8"));
const bytes = (b64) => new Uint8Array(Buffer.from(b64, "base64"));

// JSON objects compare without regard to key order; the Python side sorts keys.
const canonical = (value) => JSON.parse(JSON.stringify(value));

test("the vectors cover every kind of durable event", () => {
  const kinds = new Set(scenarios.flatMap((s) => s.kinds));
  for (const kind of ["joined", "left", "away", "back", "model_loaded", "anchor_committed",
    "annotation_added", "annotation_removed", "telestration_added", "control_requested",
    "control_granted", "control_revoked"]) {
    assert.ok(kinds.has(kind), `no scenario has a ${kind} event`);
  }
});

for (const scenario of scenarios) {
  test(`scenario ${scenario.seed}: snapshot + ${scenario.events.length} events fold as in Python`, () => {
    const state = stateFromSnapshot(fromBinary(SessionSnapshotSchema, bytes(scenario.snapshot)));
    for (const raw of scenario.events) apply(state, eventFrom(fromBinary(SessionEventSchema, bytes(raw))));
    assert.deepStrictEqual(canonical(publicState(state)), canonical(scenario.expected));
  });
}

test("an event that does not follow the state is refused", () => {
  const scenario = scenarios.find((s) => s.events.length >= 2);
  const state = stateFromSnapshot(fromBinary(SessionSnapshotSchema, bytes(scenario.snapshot)));
  const second = eventFrom(fromBinary(SessionEventSchema, bytes(scenario.events[1])));
  assert.throws(() => apply(state, second), /does not follow/);
});

test("a registered anchor carries its errors into the state; a placement by hand drops them", () => {
  const state = stateFromSnapshot(create(SessionSnapshotSchema, { seq: 1n }));
  const scene = (registration) => ({
    modelId: { value: "m-knee" },
    anchorPose: { position: { x: 0.4, y: 0.9, z: -0.3 }, rotation: { x: 0, y: 0, z: 0, w: 1 } },
    registration,
  });
  const registered = create(SessionEventSchema, {
    seq: 2n,
    kind: {
      case: "anchorCommitted",
      value: scene({ fiducialErrorsMm: [0.4, 0.6], freRmsMm: 0.5, fleMm: 0.7, fleEstimated: true,
        expectedTreMm: [0.8], tre95Mm: [1.3], accepted: false, reasons: ["4 fiducials"] }),
    },
  });
  apply(state, eventFrom(registered));
  const r = state.models.get("m-knee").registration;
  assert.deepStrictEqual(r.tre95Mm, [1.3]);
  assert.equal(r.freRmsMm, 0.5);
  assert.equal(r.accepted, false);
  assert.deepStrictEqual(r.reasons, ["4 fiducials"]);
  const byHand = create(SessionEventSchema, { seq: 3n, kind: { case: "anchorCommitted", value: scene(undefined) } });
  apply(state, eventFrom(byHand));
  assert.equal(state.models.get("m-knee").registration, undefined);
});
