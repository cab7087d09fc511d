// The session state as the fold of its durable events: the same fold as the server's and
// the Python SDK's (holo/session/state.py `apply`, holo/wire/session.py for the wire).
// tests/vectors/session_fold.json holds wire events and the state they fold to; the
// Python and this fold are both checked against it (tests/test_session_vectors.py).
//
// Pure: no DOM, no network. State is plain objects and Maps (insertion order kept, as
// the Python dicts keep it).

const ROLES = ["", "presenter", "expert", "observer", "radiologist"];

/** The role name of a Role enum value (holo.v1.Role). */
export function roleName(value) {
  return ROLES[value] ?? "";
}

export function emptyState() {
  return {
    seq: 0,
    participants: new Map(),
    models: new Map(),
    annotations: new Map(),
    controller: "",
    controlRequests: [],
    telestrations: new Map(),
  };
}

function vec(v) {
  return [v?.x ?? 0, v?.y ?? 0, v?.z ?? 0];
}

/** A pose with its rotation renormalised, as the Python client does (common.proto, Quat). */
export function poseFrom(p) {
  const r = p?.rotation ?? { x: 0, y: 0, z: 0, w: 1 };
  const norm = Math.sqrt(r.x * r.x + r.y * r.y + r.z * r.z + r.w * r.w) || 1;
  return { position: vec(p?.position), rotation: [r.x / norm, r.y / norm, r.z / norm, r.w / norm] };
}

function participantFrom(p) {
  return {
    participantId: p.participantId?.value ?? "",
    role: roleName(p.role),
    displayName: p.displayName,
    present: p.present,
  };
}

function sceneFrom(m, tNs = 0n) {
  const scene = { modelId: m.modelId?.value ?? "", anchorPose: poseFrom(m.anchorPose), tNs };
  // Set when the pose came from a registration (Register): its errors, in mm.
  if (m.registration) scene.registration = registrationFrom(m.registration);
  return scene;
}

function registrationFrom(r) {
  return {
    fiducialErrorsMm: [...r.fiducialErrorsMm],
    freRmsMm: r.freRmsMm,
    fleMm: r.fleMm,
    fleEstimated: r.fleEstimated,
    expectedTreMm: [...r.expectedTreMm],
    tre95Mm: [...r.tre95Mm],
    surfaceRmsMm: r.surfaceRmsMm,
    surfacePointsUsed: r.surfacePointsUsed,
    surfacePointsRejected: r.surfacePointsRejected,
    accepted: r.accepted,
    reasons: [...r.reasons],
  };
}

export function annotationFrom(a) {
  const shape = a.shape.case ?? "";
  let points = [];
  let text = "";
  if (shape === "marker") points = [vec(a.shape.value.position)];
  else if (shape === "stroke") points = a.shape.value.points.map(vec);
  else if (shape === "label") {
    points = [vec(a.shape.value.position)];
    text = a.shape.value.text;
  }
  return {
    annotationId: a.annotationId,
    modelId: a.modelId?.value ?? "",
    author: a.author?.value ?? "",
    shape,
    points,
    text,
  };
}

export function telestrationFrom(t) {
  return {
    telestrationId: t.telestrationId,
    trackId: t.trackId,
    frameTNs: t.frameTNs,
    author: t.author?.value ?? "",
    points: t.points.map((p) => [p.x, p.y]),
    rgb: t.rgb,
  };
}

/** The state a snapshot (holo.v1.SessionSnapshot) describes. */
export function stateFromSnapshot(s) {
  const state = emptyState();
  state.seq = Number(s.seq);
  state.controller = s.controller?.value ?? "";
  for (const p of s.participants) state.participants.set(p.participantId?.value ?? "", participantFrom(p));
  for (const m of s.models) state.models.set(m.modelId?.value ?? "", sceneFrom(m));
  for (const a of s.annotations) state.annotations.set(a.annotationId, annotationFrom(a));
  state.controlRequests = s.controlRequests.map((p) => p.value);
  for (const t of s.telestrations) state.telestrations.set(t.telestrationId, telestrationFrom(t));
  return state;
}

const PARTICIPANT_KINDS = new Set(["left", "away", "back", "controlRequested", "controlGranted", "controlRevoked"]);

/** An event (holo.v1.SessionEvent) as {seq, tNs, actor, kind, data}; kind is camelCase. */
export function eventFrom(m) {
  const kind = m.kind.case ?? "";
  const value = m.kind.value;
  let data;
  if (kind === "joined") data = participantFrom(value);
  else if (PARTICIPANT_KINDS.has(kind)) data = value.value;
  else if (kind === "modelLoaded" || kind === "anchorCommitted") data = sceneFrom(value, m.tNs);
  else if (kind === "annotationAdded") data = annotationFrom(value);
  else if (kind === "annotationRemoved") data = value;
  else if (kind === "telestrationAdded") data = telestrationFrom(value);
  else throw new Error(`event seq ${m.seq} is of a kind this page does not know; reload it`);
  return { seq: Number(m.seq), tNs: m.tNs, actor: m.actor?.value ?? "", kind, data };
}

function roleOf(state, pid) {
  return state.participants.get(pid)?.role ?? "";
}

function firstPresentPresenter(state) {
  for (const [pid, p] of state.participants) if (p.role === "presenter" && p.present) return pid;
  return "";
}

function dropRequest(state, pid) {
  const at = state.controlRequests.indexOf(pid);
  if (at >= 0) state.controlRequests.splice(at, 1);
}

/** Fold one event into `state` (in place); its seq must follow the state's. */
export function apply(state, event) {
  if (event.seq !== state.seq + 1) {
    throw new Error(`event seq ${event.seq} does not follow state seq ${state.seq}`);
  }
  const { kind, data } = event;
  if (kind === "joined") {
    state.participants.set(data.participantId, data);
    if (!state.controller && data.role === "presenter") state.controller = data.participantId;
  } else if (kind === "left" || kind === "away" || kind === "back") {
    const pid = data;
    if (kind === "left") state.participants.delete(pid);
    else if (state.participants.has(pid)) {
      state.participants.set(pid, { ...state.participants.get(pid), present: kind === "back" });
    }
    if (kind !== "back") {
      dropRequest(state, pid);
      if (state.controller === pid) state.controller = firstPresentPresenter(state);
    } else if (!state.controller && roleOf(state, pid) === "presenter") {
      state.controller = pid;
    }
  } else if (kind === "modelLoaded" || kind === "anchorCommitted") {
    state.models.set(data.modelId, data);
  } else if (kind === "annotationAdded") {
    state.annotations.set(data.annotationId, data);
  } else if (kind === "annotationRemoved") {
    state.annotations.delete(data);
    state.telestrations.delete(data);
  } else if (kind === "telestrationAdded") {
    state.telestrations.set(data.telestrationId, data);
  } else if (kind === "controlRequested") {
    if (!state.controlRequests.includes(data)) state.controlRequests.push(data);
  } else if (kind === "controlGranted") {
    state.controller = data;
    dropRequest(state, data);
  } else if (kind === "controlRevoked") {
    if (state.controller === data) {
      state.controller = roleOf(state, event.actor) === "presenter" ? event.actor : "";
      if (!state.controller) state.controller = firstPresentPresenter(state);
    }
  } else {
    throw new Error(`event ${kind} at seq ${event.seq} is unknown or malformed`);
  }
  state.seq = event.seq;
}

/** A deep copy (the records are replaced, never changed, so copying the containers is enough). */
export function copyState(state) {
  return {
    seq: state.seq,
    participants: new Map(state.participants),
    models: new Map(state.models),
    annotations: new Map(state.annotations),
    controller: state.controller,
    controlRequests: [...state.controlRequests],
    telestrations: new Map(state.telestrations),
  };
}

/** The state as plain data, in the layout of the Python SessionState.public_dict(). */
export function publicState(state) {
  const entries = (map, f) => Object.fromEntries([...map].map(([k, v]) => [k, f(v)]));
  return {
    seq: state.seq,
    participants: entries(state.participants, (p) => ({
      participant_id: p.participantId,
      role: p.role,
      display_name: p.displayName,
      subject: "",
      present: p.present,
    })),
    models: entries(state.models, (m) => ({
      model_id: m.modelId,
      anchor_pose: { position: m.anchorPose.position, rotation: m.anchorPose.rotation },
    })),
    annotations: entries(state.annotations, (a) => ({
      annotation_id: a.annotationId,
      model_id: a.modelId,
      author: a.author,
      shape: a.shape,
      points: a.points,
      text: a.text,
    })),
    controller: state.controller,
    control_requests: [...state.controlRequests],
    telestrations: entries(state.telestrations, (t) => ({
      telestration_id: t.telestrationId,
      track_id: t.trackId,
      frame_t_ns: Number(t.frameTNs),
      author: t.author,
      points: t.points,
      rgb: t.rgb,
    })),
  };
}
