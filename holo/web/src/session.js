// One participant in a shared session, from the page: the same protocol as the Python SDK
// (holo/client/session.py). Joins with a snapshot, folds every event in seq order, and when
// the stream breaks (a server restart, a node failing over) rejoins as the same participant
// from the last seq it applied: nothing is missed, nothing applied twice, and an event that
// would leave a hole makes it rejoin rather than fold past it.
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  AddAnnotationRequestSchema,
  CommitAnchorRequestSchema,
  ControlRequestSchema,
  DragRequestSchema,
  FindSessionRequestSchema,
  HeadPoseRequestSchema,
  HeartbeatRequestSchema,
  JoinRequestSchema,
  LeaveRequestSchema,
  PointerRequestSchema,
  RemoveAnnotationRequestSchema,
} from "./gen/holo/v1/session_pb.js";
import { apply, eventFrom, poseFrom, stateFromSnapshot, emptyState } from "./fold.js";
import { backoffMs, retryable, say, sleep } from "./rpc.js";

// What this page speaks (holo/wire/common.py: PROTOCOL_MAJOR, PROTOCOL_MINOR, FEATURES).
const CAPABILITIES = {
  protocolMajor: 1,
  protocolMinor: 0,
  softwareName: "holo-web",
  softwareVersion: "0.1.0",
  features: ["annotations", "control", "presence", "resync"],
};

class GapError extends Error {}

const randomId = (prefix) => `${prefix}-${crypto.randomUUID().replace(/-/g, "").slice(0, 20)}`;

export class SessionConnection {
  /**
   * @param clients from rpc.connect()
   * @param handlers {onReset(state), onEvent(event, state), onEphemeral(update), onStatus(text, kind)}
   */
  constructor(clients, { displayName = "", sessionId = "", ...handlers } = {}) {
    this.clients = clients;
    this.displayName = displayName;
    this.sessionId = sessionId;
    this.handlers = handlers;
    this.participantId = "";
    this.state = emptyState();
    this.latest = new Map(); // `${participant}/${channel}` -> {participantId, channel, tNs, value}
    this.applied = []; // every seq folded since the page opened (for tests and diagnosis)
    this.appliedAt = []; // and when, in ms since the epoch (latency benchmarks)
    this.reconnects = 0;
    this.accepted = false;
    this.heartbeatMs = 2000;
    this.lastMessage = 0;
    this.closed = false;
    this.abort = new AbortController();
  }

  status(text, kind = "info") {
    this.handlers.onStatus?.(text, kind);
  }

  /** The case's open session (waiting, with a message, until the presenter opens one). */
  async find() {
    for (;;) {
      try {
        const info = await this.clients.sessions.findSession(create(FindSessionRequestSchema, {}));
        return info.sessionId.value;
      } catch (err) {
        const code = ConnectError.from(err).code;
        if (code === Code.NotFound) this.status("Waiting for the presenter to open the session…", "wait");
        else if (retryable(err)) this.status("Cannot reach the server; trying again…", "wait");
        else throw err;
        await sleep(2000, this.abort.signal);
        if (this.closed) throw new Error("closed");
      }
    }
  }

  /** Join (finding the session first when none was given); resolves once the snapshot is in. */
  async start() {
    if (!this.sessionId) this.sessionId = await this.find();
    let joined;
    const firstJoin = new Promise((resolve, reject) => (joined = { resolve, reject }));
    this.reading = this.readForever(joined);
    this.beating = this.heartbeatForever();
    await firstJoin;
  }

  async readForever(joined) {
    let failures = 0;
    while (!this.closed) {
      const request = create(JoinRequestSchema, {
        sessionId: { value: this.sessionId },
        participantId: { value: this.participantId },
        displayName: this.displayName,
        capabilities: CAPABILITIES,
        resumeFromSeq: this.accepted ? BigInt(this.state.seq) : 0n,
      });
      try {
        for await (const message of this.clients.sessions.join(request, { signal: this.abort.signal })) {
          failures = 0;
          this.lastMessage = performance.now();
          this.handle(message);
          if (joined && this.accepted) {
            joined.resolve();
            joined = null;
          }
        }
        if (this.closed) return;
        this.status("The server ended the session stream; rejoining…", "wait");
      } catch (err) {
        if (this.closed) return;
        if (!(err instanceof GapError) && !retryable(err)) {
          this.status(say(err), "error");
          if (joined) joined.reject(err);
          return;
        }
        this.status("Connection lost; reconnecting…", "wait");
      }
      failures += 1;
      this.reconnects += 1;
      await sleep(backoffMs(failures), this.abort.signal);
    }
  }

  handle(message) {
    const { case: kind, value } = message.kind;
    if (kind === "accepted") {
      this.participantId = value.participantId.value;
      this.heartbeatMs = value.heartbeatIntervalMs || 2000;
      if (value.snapshot) this.reset(stateFromSnapshot(value.snapshot), value.snapshot.tNs);
      this.accepted = true;
      this.status("Connected", "ok");
    } else if (kind === "event" || kind === "events") {
      for (const one of kind === "event" ? [value] : value.events) this.fold(eventFrom(one));
    } else if (kind === "ephemeral" || kind === "ephemerals") {
      for (const one of kind === "ephemeral" ? [value] : value.updates) this.take(one);
    } else if (kind === "resync") {
      this.reset(stateFromSnapshot(value.snapshot), value.snapshot.tNs);
    }
  }

  reset(state, tNs) {
    this.state = state;
    this.notify("onReset", state, tNs);
  }

  /** A handler's failure is the page's bug, not the network's: reported, never a reconnect. */
  notify(name, ...args) {
    try {
      this.handlers[name]?.(...args);
    } catch (err) {
      console.error(err);
      this.handlers.onError?.(err);
    }
  }

  fold(event) {
    if (event.seq <= this.state.seq) return; // a repeat: never apply twice
    if (event.seq !== this.state.seq + 1) throw new GapError(`seq ${event.seq} after ${this.state.seq}`);
    apply(this.state, event);
    this.applied.push(event.seq);
    this.appliedAt.push(performance.timeOrigin + performance.now());
    this.notify("onEvent", event, this.state);
  }

  take(m) {
    const { case: channel, value } = m.value;
    if (!channel) return;
    const participantId = m.participantId?.value ?? "";
    let data = value;
    if (channel === "headPose") data = poseFrom(value);
    else if (channel === "drag") data = { modelId: value.modelId?.value ?? "", anchorPose: poseFrom(value.anchorPose) };
    else if (channel === "pointer") {
      data = { origin: [value.origin?.x ?? 0, value.origin?.y ?? 0, value.origin?.z ?? 0], direction: [value.direction?.x ?? 0, value.direction?.y ?? 0, value.direction?.z ?? 1] };
    }
    const update = { participantId, channel, tNs: m.tNs, value: data };
    this.latest.set(`${participantId}/${channel}`, update);
    this.notify("onEphemeral", update);
  }

  async heartbeatForever() {
    // As the SDK: skipped while the stream flows (the server counts it as a sign of life);
    // sent when it is quiet or this participant is marked away.
    while (!this.closed) {
      await sleep(this.heartbeatMs * (0.8 + 0.2 * Math.random()), this.abort.signal);
      if (this.closed || !this.accepted) continue;
      const me = this.state.participants.get(this.participantId);
      if (performance.now() - this.lastMessage < this.heartbeatMs && me?.present) continue;
      try {
        await this.clients.sessions.heartbeat(create(HeartbeatRequestSchema, this.ids()));
      } catch {
        // the stream's reconnect reports the trouble
      }
    }
  }

  ids() {
    return { sessionId: { value: this.sessionId }, participantId: { value: this.participantId } };
  }

  /** A unary intent, sent again (same intent id) while the server is away. */
  async intent(method, schema, fields) {
    const request = create(schema, { ...this.ids(), ...fields });
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.clients.sessions[method](request, { timeoutMs: 10000 });
      } catch (err) {
        if (!retryable(err) || attempt >= 10 || this.closed) throw err;
        await sleep(Math.min(1000, 100 * 2 ** attempt), this.abort.signal);
      }
    }
  }

  pointer(origin, direction) {
    return this.intent("updatePointer", PointerRequestSchema, {
      pointer: { origin: xyz(origin), direction: xyz(direction) },
    });
  }

  /** The wearer's head in the room frame (immersive.js: presenters and experts). */
  headPose(pose) {
    return this.intent("updateHeadPose", HeadPoseRequestSchema, { headPose: poseMessage(pose) });
  }

  addMarker(modelId, position) {
    const annotationId = randomId("a");
    return this.intent("addAnnotation", AddAnnotationRequestSchema, {
      intentId: randomId("i"),
      annotation: { annotationId, modelId: { value: modelId }, shape: { case: "marker", value: { position: xyz(position) } } },
    });
  }

  addLabel(modelId, position, text) {
    const annotationId = randomId("a");
    return this.intent("addAnnotation", AddAnnotationRequestSchema, {
      intentId: randomId("i"),
      annotation: { annotationId, modelId: { value: modelId }, shape: { case: "label", value: { position: xyz(position), text } } },
    });
  }

  removeAnnotation(annotationId) {
    return this.intent("removeAnnotation", RemoveAnnotationRequestSchema, { intentId: randomId("i"), annotationId });
  }

  requestControl() {
    return this.intent("requestControl", ControlRequestSchema, { intentId: randomId("i") });
  }

  drag(modelId, pose) {
    return this.intent("drag", DragRequestSchema, { modelId: { value: modelId }, anchorPose: poseMessage(pose) });
  }

  commitAnchor(modelId, pose) {
    return this.intent("commitAnchor", CommitAnchorRequestSchema, {
      intentId: randomId("i"),
      modelId: { value: modelId },
      anchorPose: poseMessage(pose),
    });
  }

  async leave() {
    try {
      await this.clients.sessions.leave(create(LeaveRequestSchema, { ...this.ids(), intentId: randomId("i") }));
    } finally {
      this.close();
    }
  }

  close() {
    this.closed = true;
    this.abort.abort();
  }
}

function xyz([x, y, z]) {
  return { x, y, z };
}

function poseMessage(pose) {
  const [x, y, z, w] = pose.rotation;
  return { position: xyz(pose.position), rotation: { x, y, z, w } };
}
