// The page: reads the token from the link, then shows the case's session (observers,
// experts, presenters) or the model preparation view (radiologists).
import { create } from "@bufbuild/protobuf";
import { SessionClock } from "./clock.js";
import { ControlReplayRequestSchema, ListRecordingsRequestSchema, OpenReplayRequestSchema } from "./gen/holo/v1/video_pb.js";
import { sceneOnly } from "./glb.js";
import { BUDGETS, ImmersiveMode, deviceClass, offeredMode } from "./immersive.js";
import { fetchModel } from "./model.js";
import { Paced } from "./pacing.js";
import { connect, say, sleep } from "./rpc.js";
import { Viewer, colourOf } from "./scene.js";
import { SessionConnection } from "./session.js";
import { Timeline } from "./timeline.js";
import { takeToken } from "./token.js";
import { $, el, setStatus, showManifest } from "./ui.js";
import { VideoView } from "./video.js";

const ROLE_NAMES = { presenter: "Presenter", expert: "Expert", observer: "Observer", radiologist: "Radiologist" };

// Diagnostics for support and for the browser tests: what the page holds, read-only.
const holo = (window.holo = { lods: [], errors: [], modelsShown: new Map(), levels: new Map(), received: new Map() });

function fail(message) {
  setStatus(message, "error");
  holo.errors.push(message);
}

function boot() {
  performance.mark("holo:boot");
  const auth = takeToken();
  if (!auth) {
    $("#signin").hidden = false;
    setStatus("No access link", "error");
    return;
  }
  if (auth.invalid || !auth.role) {
    $("#signin").hidden = false;
    $("#signin-text").textContent = "This link does not hold a valid holo token. Ask for a new link (holo token … --link).";
    setStatus("Invalid link", "error");
    return;
  }
  if (auth.expires && auth.expires < Date.now()) {
    $("#signin").hidden = false;
    $("#signin-text").textContent = "This link has expired. Ask for a new one.";
    setStatus("Expired link", "error");
    return;
  }
  holo.role = auth.role;
  document.body.dataset.role = auth.role;
  $("#case").textContent = `Case ${auth.caseId}`;
  $("#role").textContent = ROLE_NAMES[auth.role] ?? auth.role;
  const clients = connect(auth.token);
  const viewer = new Viewer($("#scene"), $("#labels"));
  holo.viewer = viewer;
  const recording = new URLSearchParams(window.location.hash.replace(/^#/, "")).get("replay");
  if (recording) {
    openReplay(clients, viewer, auth, recording).catch((err) => fail(`The recording could not be opened: ${say(err)}`));
  } else if (auth.role === "radiologist") {
    import("./prepare.js").then(({ startPrepare }) => startPrepare(clients, viewer, holo)).catch((err) => fail(say(err)));
  } else {
    startSession(clients, viewer, auth);
  }
  // Set up WebGL in the next task: the first requests leave first and travel meanwhile.
  setTimeout(() => viewer.start(), 0);
  if (!recording) listRecordings(clients).catch((err) => fail(say(err)));
}

/** The case's recordings, each opened as a replay in this tab (#replay=ID). */
async function listRecordings(clients) {
  const reply = await clients.video.listRecordings(create(ListRecordingsRequestSchema, {}));
  $("#recordings-pane").hidden = false;
  const items = reply.recordings.map((r) => {
    const seconds = r.stoppedTNs ? Number((r.stoppedTNs - r.startedTNs) / 1_000_000n) / 1000 : 0;
    const open = el("a", { className: "button small", href: `#replay=${encodeURIComponent(r.recordingId.value)}` }, "Replay");
    open.addEventListener("click", () => setTimeout(() => window.location.reload(), 0));
    const what = `${seconds ? `${seconds.toFixed(0)} s` : "recording now"}, ${r.tracks.length} video track(s), ${Number(r.events)} events`;
    return el("li", {}, el("span", {}, what), open);
  });
  $("#recordings").replaceChildren(...(items.length ? items : [el("li", { className: "empty" }, "None yet")]));
}

async function openReplay(clients, viewer, auth, recordingId) {
  const info = await clients.video.openReplay(create(OpenReplayRequestSchema, { recordingId: { value: recordingId }, speed: 1 }));
  holo.replay = { info, sessionId: info.sessionId.value };
  $("#replay-pane").hidden = false;
  const start = info.startedTNs;
  const span = Number(info.stoppedTNs - info.startedTNs) / 1e6; // ms
  const seek = $("#replay-seek");
  seek.max = String(Math.max(0, Math.round(span)));
  const clock = startSession(clients, viewer, auth, info);
  // One control at a time, in the order asked: a resume clicked while a seek is still
  // settling waits for it.
  let queue = Promise.resolve();
  const control = (fields) => (queue = queue.then(() => apply(fields)));
  const apply = async (fields) => {
    const view = holo.video.view;
    if (view) view.frozen = true; // hold the picture until the clock is synced again
    try {
      const now = await clients.video.controlReplay(create(ControlReplayRequestSchema, { sessionId: info.sessionId, ...fields }));
      await clock.syncMany(8);
      view?.drop();
      holo.replay.info = now; // in effect here too: the clock follows it
      $("#replay-play").textContent = now.speed > 0 ? "Pause" : "Play";
      $("#replay-play").setAttribute("aria-pressed", String(now.speed === 0));
    } catch (err) {
      fail(say(err));
    } finally {
      if (view) view.frozen = false;
    }
  };
  $("#replay-play").addEventListener("click", () => control(holo.replay.info.speed > 0 ? { pause: true } : { resume: true }));
  seek.addEventListener("change", () => control({ seekTNs: start + BigInt(Math.round(Number(seek.value) * 1e6)) }));
  $("#replay-speed").addEventListener("change", () => control({ speed: Number($("#replay-speed").value) }));
  setInterval(() => {
    const current = holo.video.current;
    if (!current || document.activeElement === seek) return;
    const at = Number(BigInt(current.tNs) - start) / 1e6;
    seek.value = String(Math.round(at));
    $("#replay-time").textContent = `${(at / 1000).toFixed(1)} s of ${(span / 1000).toFixed(1)} s`;
  }, 250);
}

function startSession(clients, viewer, auth, replay = null) {
  $("#session").hidden = false;
  const guide = !replay && (auth.role === "expert" || auth.role === "presenter");
  $("#tools").hidden = !guide;
  const displayName = localStorage.getItem("holo.displayName") || `${ROLE_NAMES[auth.role]} (web)`;
  // A headset draws the finest level within its budget (README "Headsets"), on the page as
  // in its immersive mode: the same GPU draws both.
  // A link may set the budget (#triangles=N) for a device holo does not recognise.
  const asked = Number(new URLSearchParams(window.location.hash.replace(/^#/, "")).get("triangles"));
  const device = deviceClass().then((kind) => {
    holo.device = { kind, maxTriangles: asked > 0 ? asked : BUDGETS[kind] };
    return holo.device;
  });
  const loading = new Map(); // modelId -> the AbortController of its download
  const timeline = new Timeline();
  const video = { view: null, driven: false }; // driven: the holograms follow the video's moment
  holo.video = video;
  const conn = new SessionConnection(clients, {
    displayName,
    sessionId: replay ? replay.sessionId.value : "",
    onStatus: setStatus,
    onError: (err) => fail(`The page could not show an update: ${err.message}`),
    onReset: (state, tNs) => {
      performance.mark("holo:joined");
      timeline.reset(state, tNs ?? 0n);
      sync(state);
    },
    onEvent: (event, state) => {
      timeline.onEvent(event);
      sync(state);
    },
    onEphemeral: (update) => {
      timeline.onEphemeral(update);
      ephemeral(update);
    },
  });
  holo.conn = conn;
  const immersive = new ImmersiveMode(viewer, replay ? null : conn, {
    role: auth.role,
    roleName: ROLE_NAMES[auth.role] ?? auth.role,
    nameOf: (pid) => nameOf(pid),
    onStatus: setStatus,
    onEnter: () => sync(conn.state), // the live anchors, not the video's moment
  });
  holo.xr = immersive;
  offerImmersive(immersive);

  const nameOf = (pid) => {
    const p = conn.state.participants.get(pid);
    return p ? `${p.displayName || "someone"} (${ROLE_NAMES[p.role] ?? p.role})` : "someone who left";
  };

  /** Whether the session's live state places `modelId` now: not while the wearer holds
   * it, nor while the video drives the holograms to its moment, except in a headset, where
   * the hologram stays on the patient, not a jitter buffer behind. */
  const live = (modelId) => !immersive.holding(modelId) && (!video.driven || viewer.immersive);

  function sync(state) {
    for (const [modelId, scene] of state.models) {
      if (live(modelId)) viewer.setAnchor(modelId, scene.anchorPose);
      if (!loading.has(modelId)) {
        const cancel = new AbortController();
        loading.set(modelId, cancel);
        loadModel(modelId, cancel.signal);
      }
    }
    for (const modelId of new Set([...viewer.models.keys(), ...loading.keys()])) {
      if (!state.models.has(modelId)) {
        loading.get(modelId)?.abort(); // a model unloaded while it downloads
        loading.delete(modelId);
        viewer.removeModel(modelId);
      }
    }
    viewer.setAnnotations(state.annotations, nameOf);
    for (const pid of [...viewer.rays.keys()]) if (!state.participants.has(pid)) viewer.setRay(pid, null);
    for (const pid of [...viewer.heads.keys()]) if (!state.participants.has(pid)) viewer.setHead(pid, null);
    showPeople(state);
    showNotes(state);
    showPlacement(state);
    showControl(state);
  }

  function ephemeral(update) {
    if (update.participantId === conn.participantId) return;
    if (update.channel === "pointer") viewer.setRay(update.participantId, update.value, nameOf(update.participantId));
    else if (update.channel === "headPose") viewer.setHead(update.participantId, update.value, nameOf(update.participantId));
    else if (update.channel === "drag" && live(update.value.modelId)) {
      // A drag stamped at or before the model's committed anchor is older news (it can
      // arrive after the commit: ephemeral values are paced, events are not).
      const scene = conn.state.models.get(update.value.modelId);
      if (scene && update.tNs > scene.tNs) viewer.setAnchor(update.value.modelId, update.value.anchorPose);
    }
  }

  async function loadModel(modelId, signal) {
    const started = performance.now();
    try {
      // The budget is the whole scene's: shared equally by the session's models.
      const maxTriangles = Math.floor((await device).maxTriangles / Math.max(1, conn.state.models.size));
      const { manifest, upTo, glb: glbBytes } = await fetchModel(clients.assets, modelId, {
        maxTriangles,
        signal,
        onManifest: (m) => {
          performance.mark("holo:manifest");
          holo.levels.set(modelId, m.lods.length);
          showManifest(m);
        },
        onProgress: (got, total) => setStatus(`Loading the model: ${Math.round((100 * got) / total)} %`, "wait"),
        onLod: async (index, lod, glb) => {
          performance.mark(`holo:lod${index}-bytes`);
          const shown = await viewer.showLod(modelId, index, sceneOnly(glb, lod.name));
          if (signal.aborted) return viewer.removeModel(modelId); // unloaded meanwhile
          const scene = conn.state.models.get(modelId);
          if (scene && live(modelId)) viewer.setAnchor(modelId, scene.anchorPose);
          if (index === 0) {
            viewer.dropNotes(modelId); // now sized to the model
            viewer.setAnnotations(conn.state.annotations, nameOf);
          }
          if (shown) {
            // `at`: when the level was on screen, in ms since the page was opened.
            const at = await viewer.nextFrame();
            holo.lods.push({ modelId, index, triangles: Number(lod.triangles), ms: performance.now() - started, at });
            holo.modelsShown.set(modelId, index);
            $("#lod-shown").textContent = `Showing ${lod.name} (${Number(lod.triangles).toLocaleString("en")} triangles)`;
          }
        },
      });
      holo.received.set(modelId, glbBytes.length);
      const budget = upTo < manifest.lods.length - 1 ? ` (${manifest.lods[upTo].name}: this device's budget is ${maxTriangles.toLocaleString("en")} triangles)` : "";
      setStatus(`Model ready: ${manifest.structures.length} structures${budget}`, "ok");
    } catch (err) {
      if (signal.aborted) return; // unloaded: nothing to say
      loading.delete(modelId);
      fail(`The model could not be loaded: ${say(err)}`);
    }
  }

  function showPeople(state) {
    const list = $("#participants");
    list.replaceChildren(
      ...[...state.participants.values()].map((p) => {
        const me = p.participantId === conn.participantId;
        const badges = [];
        if (state.controller === p.participantId) badges.push(el("span", { className: "badge control" }, "in control"));
        if (state.controlRequests.includes(p.participantId)) badges.push(el("span", { className: "badge" }, "asks for control"));
        if (!p.present) badges.push(el("span", { className: "badge away" }, "away"));
        const dot = el("span", { className: "dot", ariaHidden: "true" });
        dot.style.background = `#${colourOf(p.participantId).getHexString()}`;
        return el("li", { className: p.present ? "" : "away" }, dot,
          el("span", { className: "name" }, `${p.displayName || "(no name given)"}${me ? " (you)" : ""}`),
          el("span", { className: "role" }, ROLE_NAMES[p.role] ?? p.role), ...badges);
      }),
    );
  }

  function showNotes(state) {
    const items = [...state.annotations.values()].map((a) => {
      const what = a.shape === "label" ? `“${a.text}”` : a.shape === "marker" ? "Marker" : "Stroke";
      const item = el("li", {}, el("span", {}, `${what} by ${nameOf(a.author)}`));
      if (guide && (a.author === conn.participantId || auth.role === "presenter")) {
        const remove = el("button", { type: "button", className: "small" }, "Remove");
        remove.addEventListener("click", () => conn.removeAnnotation(a.annotationId).catch((err) => fail(say(err))));
        item.append(remove);
      }
      return item;
    });
    $("#annotations").replaceChildren(...(items.length ? items : [el("li", { className: "empty" }, "None yet")]));
  }

  /** How each model was placed: by hand, or by a registration with its errors (the 95 %
   * bound of the target registration error where it matters, and the fiducials' RMS). */
  function showPlacement(state) {
    const items = [...state.models.values()].map((scene) => {
      const r = scene.registration;
      if (!r) return el("li", {}, "Placed by hand: no measured error");
      const tre = Math.max(...r.tre95Mm);
      const text = `Registered: target error under ${tre.toFixed(1)} mm (95 %), fiducial error ${r.freRmsMm.toFixed(1)} mm RMS` +
        (r.surfacePointsUsed ? `, refined on ${r.surfacePointsUsed} surface points` : "");
      const item = el("li", { className: r.accepted ? "" : "flagged" }, text);
      if (!r.accepted) item.append(el("span", {}, ` — flagged: ${r.reasons.join("; ")}`));
      return item;
    });
    $("#placement").replaceChildren(...(items.length ? items : [el("li", { className: "empty" }, "No model loaded")]));
  }

  function showControl(state) {
    if (!guide) return;
    const mine = state.controller === conn.participantId;
    const asked = state.controlRequests.includes(conn.participantId);
    $("#request-control").hidden = auth.role !== "expert" || mine;
    $("#request-control").disabled = asked;
    $("#request-control").textContent = asked ? "Control requested…" : "Request control";
    $("#move").hidden = !mine;
    if (!mine && tools.mode === "move") setMode("view");
    $("#control-state").textContent = mine ? "You are in control: you may move the model." : state.controller ? `${nameOf(state.controller)} is in control.` : "Nobody is in control.";
  }

  // Tools (experts and presenters) ------------------------------------------------------
  const tools = { mode: "view", pointing: false, lastPointer: 0, drag: null };
  // Live drags at most 30 a second, as from a headset (pacing.js).
  const dragPaced = new Paced(1000 / 30, ({ modelId, pose }) => conn.drag(modelId, pose));
  function setMode(mode) {
    tools.mode = mode;
    for (const button of document.querySelectorAll("[data-mode]")) button.setAttribute("aria-pressed", String(button.dataset.mode === mode));
    viewer.controls.enabled = mode !== "move";
    $("#scene").dataset.tool = mode;
  }
  for (const button of document.querySelectorAll("[data-mode]")) {
    button.addEventListener("click", () => setMode(tools.mode === button.dataset.mode ? "view" : button.dataset.mode));
  }
  $("#point").addEventListener("click", () => {
    tools.pointing = !tools.pointing;
    $("#point").setAttribute("aria-pressed", String(tools.pointing));
  });
  $("#request-control").addEventListener("click", () => conn.requestControl().catch((err) => fail(say(err))));

  const canvas = $("#scene");
  canvas.addEventListener("pointermove", (e) => {
    if (tools.drag) return moveDrag(e);
    if (!guide || !tools.pointing) return;
    const now = performance.now();
    if (now - tools.lastPointer < 50) return; // 20 Hz: the server keeps the newest anyway
    tools.lastPointer = now;
    const { ray } = viewer.rayAt(e.clientX, e.clientY);
    conn.pointer(ray.origin.toArray(), ray.direction.toArray()).catch(() => {});
  });
  canvas.addEventListener("click", (e) => {
    if (tools.mode === "marker" || tools.mode === "label") place(e.clientX, e.clientY);
  });
  function place(x, y) {
    const hit = viewer.pick(x, y);
    if (!hit) return setStatus("Click on the model to place it", "info");
    if (tools.mode === "marker") conn.addMarker(hit.modelId, hit.point).catch((err) => fail(say(err)));
    else {
      const text = $("#label-text").value.trim();
      if (!text) return setStatus("Type the label's text first", "info");
      conn.addLabel(hit.modelId, hit.point, text).catch((err) => fail(say(err)));
    }
  }
  canvas.addEventListener("pointerdown", (e) => {
    if (tools.mode !== "move") return;
    const hit = viewer.pick(e.clientX, e.clientY);
    if (!hit) return;
    canvas.setPointerCapture(e.pointerId);
    tools.drag = { modelId: hit.modelId, start: hit.world, pose: viewer.anchorPose(hit.modelId) };
  });
  function moveDrag(e) {
    const d = tools.drag;
    const { ray } = viewer.rayAt(e.clientX, e.clientY);
    // Move in the horizontal plane through the grabbed point (the table's plane).
    if (Math.abs(ray.direction.y) < 1e-6) return;
    const t = (d.start[1] - ray.origin.y) / ray.direction.y;
    if (t <= 0) return;
    const at = ray.origin.clone().addScaledVector(ray.direction, t);
    const pose = { position: [d.pose.position[0] + at.x - d.start[0], d.pose.position[1], d.pose.position[2] + at.z - d.start[2]], rotation: d.pose.rotation };
    d.current = pose;
    viewer.setAnchor(d.modelId, pose);
    dragPaced.offer({ modelId: d.modelId, pose });
  }
  canvas.addEventListener("pointerup", () => {
    const d = tools.drag;
    tools.drag = null;
    if (!d?.current) return;
    dragPaced
      .settle() // no drag may reach the server after the commit and pull the model back
      .then(() => conn.commitAnchor(d.modelId, d.current))
      .catch((err) => fail(say(err)));
  });
  canvas.addEventListener("keydown", (e) => {
    if (e.key === "f" || e.key === "F") {
      viewer.frame(); // bring every model back into view
      viewer.requestRender();
      return;
    }
    if ((tools.mode === "marker" || tools.mode === "label") && e.key === "Enter") {
      // Without a mouse: the point of the model at the middle of the view.
      const rect = canvas.getBoundingClientRect();
      place(rect.left + rect.width / 2, rect.top + rect.height / 2);
      return;
    }
    if (tools.mode !== "move") return;
    const step = e.shiftKey ? 0.05 : 0.005; // 5 mm, or 5 cm with Shift
    const delta = { ArrowLeft: [-step, 0, 0], ArrowRight: [step, 0, 0], ArrowUp: [0, 0, -step], ArrowDown: [0, 0, step], PageUp: [0, step, 0], PageDown: [0, -step, 0] }[e.key];
    const modelId = [...conn.state.models.keys()][0];
    if (!delta || !modelId) return;
    e.preventDefault();
    const pose = viewer.anchorPose(modelId);
    pose.position = pose.position.map((c, i) => c + delta[i]);
    viewer.setAnchor(modelId, pose);
    conn.commitAnchor(modelId, pose).catch((err) => fail(say(err)));
  });
  setMode("view");

  window.addEventListener("pagehide", () => {
    conn.leave().catch(() => {});
  });
  // A replay runs on a clock of its own (its speed, jumps on a seek).
  const clock = new SessionClock(clients.clock, { sessionId: replay ? replay.sessionId.value : "" });
  conn
    .start()
    .then(() => startVideo(clients, conn, viewer, timeline, video, clock, replay))
    .catch((err) => fail(`Could not join the session: ${say(err)}`));
  return clock;
}

/** "Enter AR" (or "Enter VR") where the browser offers an immersive session. */
async function offerImmersive(immersive) {
  const mode = await offeredMode();
  if (!mode) return;
  const button = $("#enter-xr");
  const name = mode === "immersive-ar" ? "AR" : "VR";
  const label = () => (button.textContent = immersive.session ? `Exit ${name}` : `Enter ${name}`);
  label();
  button.hidden = false;
  immersive.onEnd = () => {
    label();
    setStatus("Back on the page", "ok");
  };
  button.addEventListener("click", () => {
    if (immersive.session) return void immersive.exit();
    button.disabled = true;
    immersive
      .enter(mode)
      .then(() => setStatus(`In ${name}`, "ok"))
      .catch((err) => fail(`The headset session could not start: ${say(err)}`))
      .finally(() => {
        button.disabled = false;
        label();
      });
  });
}

/** The session's video tracks: the first live one is shown beside the holograms. */
async function startVideo(clients, conn, viewer, timeline, video, clock, replay) {
  const view = new VideoView(clients, $("#video"), clock, timeline, {
    sessionId: conn.sessionId,
    onStatus: setStatus,
    telestrations: () => conn.state.telestrations,
    onPresent: (meta, at) => {
      const anchors = {};
      for (const modelId of conn.state.models.keys()) {
        const pose = at.anchorPose(modelId);
        if (pose) {
          if (!viewer.immersive) viewer.setAnchor(modelId, pose); // a headset shows the room live
          anchors[modelId] = pose;
        }
      }
      video.current = { index: meta.index, tNs: String(meta.tNs), anchors, exact: at.exact };
    },
  });
  video.view = view;
  for (;;) {
    let tracks = [];
    try {
      tracks = replay ? replay.tracks : (await view.tracks()).filter((t) => t.live);
    } catch (err) {
      setStatus(`Cannot list the video tracks: ${say(err)}`, "error");
    }
    if (replay && !tracks.length) return; // a recording without video: holograms only
    if (tracks.length) {
      const track = tracks[0];
      await clock.syncMany(8);
      const syncing = setInterval(() => clock.sync().catch(() => {}), 5000); // follow drift
      $("#video-pane").hidden = false;
      $("#video-name").textContent = `Video: ${track.name}`;
      video.driven = true;
      await view.watch(track.trackId.value);
      clearInterval(syncing);
      video.driven = false;
      $("#video-pane").hidden = true;
      return;
    }
    await sleep(3000);
  }
}


boot();
