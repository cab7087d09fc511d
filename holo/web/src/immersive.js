// The page in a headset: an immersive WebXR session (AR over the real patient where the
// browser offers it, VR otherwise) showing the same scene as the page.
//
// Frames: the scene's world is the room frame, and in a headset the room frame is the
// WebXR `local-floor` reference space (origin on the floor where the session started,
// +Y up, metres: the glTF convention, so nothing converts). Anchor poses, head poses and
// pointer rays go on the wire as they are here.
//
// What the wearer does (docs/headsets.md, "Input in the page's immersive mode"):
// - everyone but observers sends their head pose (at most 30 Hz);
// - presenters and experts point with a controller or hand ray (at most 20 Hz), and the
//   trigger (or a pinch) on the model places a marker;
// - whoever is in control grabs the model (trigger, pinch or grip on it), moves it (Drag
//   while it moves, at most 30 Hz) and lets go (CommitAnchor where it was released).
import * as THREE from "three";
import { HEADSET_LAYER, HeadsetPanel } from "./panel3d.js";
import { Paced } from "./pacing.js";
import { colourOf } from "./scene.js";

// The session keeps each participant's newest value only, and observers get them at
// 15 Hz and interpolate (holo/session/live.py): sending faster than 30 Hz would cost
// battery and bandwidth for nothing. Pointer rays at 20 Hz as on the page.
const HEAD_MS = 1000 / 30;
const POINTER_MS = 50;
const DRAG_MS = 1000 / 30;
// Moves below these are tracking noise (a still head jitters by about 0.1 mm): not sent.
const STILL_M = 0.001;
const STILL_RAD = (0.2 * Math.PI) / 180;
// A hand or controller this close to a model's box grabs it without pointing (a near grab).
const NEAR_M = 0.03;
// Input slots: two hands or controllers, and on Vision Pro the two transient pinch
// pointers it lists after the hands when hand tracking is on (three.js drops the events
// of an input without a slot).
const INPUT_SLOTS = 4;
// A pointer ray reaches 5 m: across an operating room, not through its walls.
const RAY_M = 5;

/**
 * How many triangles a device draws for the whole scene, and why (README "Headsets").
 * Standalone headsets (Quest, HoloLens 2, Magic Leap 2, Vision Pro) and phones render
 * stereo at 60-90 Hz on a mobile GPU; Microsoft's HoloLens 2 guidance is under 100k
 * triangles for a whole scene at 60 fps. The coarse level always comes first.
 */
export const BUDGETS = {
  headset: 100_000,
  "pc-vr": Infinity, // a desktop GPU renders the full model in stereo
  desktop: Infinity,
};

/** Which immersive mode this browser offers: AR (passthrough) first, else VR, else none. */
export async function offeredMode(xr = navigator.xr) {
  if (!xr) return null;
  for (const mode of ["immersive-ar", "immersive-vr"]) {
    try {
      if (await xr.isSessionSupported(mode)) return mode;
    } catch {
      // a browser that throws here (a policy, no device) offers nothing
    }
  }
  return null;
}

/** The device's class: "headset" (a mobile GPU), "pc-vr" or "desktop". */
export async function deviceClass() {
  const mode = await offeredMode();
  const ua = navigator.userAgent;
  // Only standalone headsets and phones offer AR in a browser. Vision Pro's Safari says
  // "Macintosh" but has touch points, as an iPad does.
  const mobile = /Android|Mobile|Quest|OculusBrowser|Pico|HoloLens|iPhone|iPad/i.test(ua) || (/Macintosh/.test(ua) && navigator.maxTouchPoints > 0);
  if (mode === "immersive-ar" || mobile) return "headset";
  return mode ? "pc-vr" : "desktop";
}

/** Whether pose or ray `a` differs from `b` by more than tracking noise: a pose's position
 * and rotation (quaternions), a ray's origin and direction (unit vectors). */
function moved(a, b) {
  if (!b) return true;
  const [p, q] = [a.position ?? a.origin, b.position ?? b.origin];
  const shift = Math.hypot(p[0] - q[0], p[1] - q[1], p[2] - q[2]);
  const dot = (u, v) => u.reduce((sum, c, k) => sum + c * v[k], 0);
  const turn = a.rotation ? 2 * Math.acos(Math.min(1, Math.abs(dot(a.rotation, b.rotation)))) : Math.acos(Math.min(1, dot(a.direction, b.direction)));
  return shift > STILL_M || turn > STILL_RAD;
}

export class ImmersiveMode {
  /**
   * @param viewer the page's Viewer (scene.js)
   * @param conn the SessionConnection (session.js), or null in a replay (read-only)
   * @param options {role, roleName, nameOf(pid), onStatus(text, kind), onEnter(), onEnd()}
   */
  constructor(viewer, conn, { role, roleName, nameOf, onStatus, onEnter, onEnd }) {
    this.viewer = viewer;
    this.conn = conn;
    this.role = role;
    this.roleName = roleName ?? role;
    this.nameOf = nameOf;
    this.onStatus = onStatus;
    this.onEnter = onEnter;
    this.onEnd = onEnd;
    this.session = null;
    this.mode = null;
    this.grab = null;
    this.frames = 0;
    this.panel = new HeadsetPanel();
    this.head = null;
    this.sentHead = null;
    this.sentRay = null;
    this.controllers = [];
    const guide = conn && (role === "presenter" || role === "expert");
    this.guide = guide;
    this.headPaced = new Paced(HEAD_MS, (pose) => conn.headPose(pose));
    this.pointerPaced = new Paced(POINTER_MS, (ray) => conn.pointer(ray.origin, ray.direction));
    this.dragPaced = new Paced(DRAG_MS, ({ modelId, pose }) => conn.drag(modelId, pose));
    this.commits = 0;
    this.markers = 0;
    this.raysAt = 0;
  }

  /** The participant in control may move holograms (the server checks it again). */
  inControl() {
    return Boolean(this.conn && this.conn.state.controller && this.conn.state.controller === this.conn.participantId);
  }

  /** Whether the wearer holds `modelId` now (the page then leaves its anchor alone). */
  holding(modelId) {
    return this.grab?.modelId === modelId;
  }

  async enter(mode) {
    const viewer = this.viewer;
    const renderer = viewer.renderer;
    const session = await navigator.xr.requestSession(mode, { requiredFeatures: ["local-floor"], optionalFeatures: ["hand-tracking"] });
    this.session = session;
    this.mode = mode;
    session.addEventListener("end", () => this.ended());
    const { camera } = viewer;
    // three.js moves the page's camera with the headset; it goes back on leaving.
    this.saved = {
      colour: renderer.getClearColor(new THREE.Color()),
      alpha: renderer.getClearAlpha(),
      near: camera.near,
      far: camera.far,
      position: camera.position.clone(),
      quaternion: camera.quaternion.clone(),
    };
    // Passthrough: the real room shows where nothing is drawn (black is see-through on the
    // additive displays of HoloLens 2 and Magic Leap 2, whatever the mode).
    if (session.environmentBlendMode !== "opaque") renderer.setClearColor(0x000000, 0);
    viewer.camera.near = 0.05; // 5 cm to 20 m: a hologram at arm's length, an operating room
    viewer.camera.far = 20;
    viewer.camera.layers.enable(HEADSET_LAYER);
    renderer.xr.enabled = true;
    renderer.xr.setReferenceSpaceType("local-floor");
    try {
      await renderer.xr.setSession(session);
    } catch (err) {
      await session.end().catch(() => {}); // `end` puts the page back as it was
      throw err;
    }
    viewer.immersive = true;
    // three.js keeps one group per input slot across sessions: made (and listened to) once.
    if (!this.controllers.length) for (let k = 0; k < INPUT_SLOTS; k++) this.controllers.push(this.addController(k));
    for (const controller of this.controllers) viewer.scene.add(controller);
    viewer.scene.add(this.panel.mesh);
    renderer.setAnimationLoop((time, frame) => this.frame(frame));
    this.onEnter?.();
  }

  exit() {
    return this.session?.end();
  }

  ended() {
    const { viewer } = this;
    const renderer = viewer.renderer;
    renderer.setAnimationLoop(null);
    renderer.xr.enabled = false;
    viewer.immersive = false;
    if (this.grab) this.release(this.grab.controller); // placed where it was let go
    for (const c of this.controllers) viewer.scene.remove(c);
    this.active = null;
    viewer.scene.remove(this.panel.mesh);
    viewer.camera.layers.disable(HEADSET_LAYER);
    renderer.setClearColor(this.saved.colour, this.saved.alpha);
    viewer.camera.near = this.saved.near;
    viewer.camera.far = this.saved.far;
    viewer.camera.position.copy(this.saved.position);
    viewer.camera.quaternion.copy(this.saved.quaternion);
    viewer.camera.updateProjectionMatrix();
    viewer.controls.update();
    this.session = null;
    viewer.resize();
    this.onEnd?.();
  }

  addController(index) {
    const controller = this.viewer.renderer.xr.getController(index);
    controller.name = `controller ${index}`;
    const colour = colourOf(this.conn?.participantId || "me");
    const ray = new THREE.Line(
      new THREE.BufferGeometry().setFromPoints([new THREE.Vector3(), new THREE.Vector3(0, 0, -1)]),
      new THREE.LineBasicMaterial({ color: colour }),
    );
    ray.name = "ray";
    ray.visible = false;
    controller.add(ray);
    controller.addEventListener("connected", (e) => {
      controller.userData.source = e.data;
      ray.visible = e.data.targetRayMode === "tracked-pointer";
    });
    controller.addEventListener("disconnected", () => {
      if (this.grab?.controller === controller) this.release(controller);
      controller.userData.source = null;
      ray.visible = false;
    });
    controller.addEventListener("selectstart", () => this.press(controller, "select"));
    controller.addEventListener("selectend", () => this.release(controller));
    controller.addEventListener("squeezestart", () => this.press(controller, "squeeze"));
    controller.addEventListener("squeezeend", () => this.release(controller));
    return controller;
  }

  /** What model a controller points at or touches: {modelId, point (model frame), distance}. */
  target(controller) {
    const caster = new THREE.Raycaster();
    caster.setFromXRController(controller);
    caster.far = RAY_M;
    const hit = this.viewer.pickAlong(caster);
    if (hit) return hit;
    const at = caster.ray.origin;
    for (const [modelId, entry] of this.viewer.models) {
      if (entry.content && new THREE.Box3().setFromObject(entry.content).expandByScalar(NEAR_M).containsPoint(at)) {
        return { modelId, point: entry.anchor.worldToLocal(at.clone()).toArray(), world: at.toArray(), distance: 0 };
      }
    }
    return null;
  }

  press(controller, button) {
    this.active = controller;
    if (!this.conn || this.grab) return;
    const hit = this.target(controller);
    if (!hit) return;
    if (this.inControl()) {
      const anchor = this.viewer.models.get(hit.modelId).anchor;
      anchor.updateMatrixWorld(true);
      // The model keeps where it sits on the hand: anchor = hand * offset while held.
      const offset = controller.matrixWorld.clone().invert().multiply(anchor.matrixWorld);
      // `shown`: where the model is drawn, judged for motion; `pose`: set once it has
      // moved, and committed on release (a grab let go in place commits nothing).
      const shown = { position: anchor.position.toArray(), rotation: anchor.quaternion.toArray() };
      this.grab = { controller, modelId: hit.modelId, offset, shown, pose: null };
    } else if (this.guide && button === "select") {
      this.markers += 1;
      this.conn.addMarker(hit.modelId, hit.point).catch((err) => this.onStatus?.(String(err.message ?? err), "error"));
    }
  }

  release(controller) {
    const grab = this.grab;
    if (!grab || grab.controller !== controller) return;
    this.grab = null;
    if (!grab.pose) return; // held without moving: nothing to commit
    const { modelId, pose } = grab;
    this.commits += 1;
    this.dragPaced
      .settle() // no drag may arrive after the commit and pull the model back
      .then(() => this.conn.commitAnchor(modelId, pose))
      .catch((err) => {
        // Refused (control taken away) or lost: the model goes back where the session has it.
        const scene = this.conn.state.models.get(modelId);
        if (scene) this.viewer.setAnchor(modelId, scene.anchorPose);
        this.onStatus?.(`The model could not be placed: ${err.message ?? err}`, "error");
      });
  }

  frame(xrFrame) {
    const { viewer } = this;
    const renderer = viewer.renderer;
    // three.js has set this frame's input poses; their world matrices follow at render:
    // brought forward, so a grab, a pointer and a ray use this frame's hands.
    for (const controller of this.controllers) controller.updateMatrixWorld(true);
    if (this.grab && !this.inControl()) this.drop(); // control was taken away mid-grab
    const space = renderer.xr.getReferenceSpace();
    const viewerPose = xrFrame && space ? xrFrame.getViewerPose(space) : null;
    if (viewerPose) {
      const { position: p, orientation: o } = viewerPose.transform;
      this.head = { position: [p.x, p.y, p.z], rotation: [o.x, o.y, o.z, o.w] };
      if (this.guide && moved(this.head, this.sentHead)) {
        this.sentHead = this.head;
        this.headPaced.offer(this.head);
      }
    }
    if (this.grab) this.hold();
    else if (this.grab === null && this.guide) this.point();
    this.showRays();
    if (this.head) {
      this.panel.show(this.statusLines());
      this.panel.follow({ position: new THREE.Vector3(...this.head.position), quaternion: new THREE.Quaternion(...this.head.rotation) });
    }
    renderer.render(viewer.scene, viewer.camera);
    this.frames += 1;
    viewer.drawnNow();
  }

  /** Let go without placing: the model goes back to the session's anchor. */
  drop() {
    const { modelId } = this.grab;
    this.grab = null;
    this.dragPaced.settle();
    const scene = this.conn.state.models.get(modelId);
    if (scene) this.viewer.setAnchor(modelId, scene.anchorPose);
  }

  hold() {
    const { controller, offset, modelId } = this.grab;
    const m = controller.matrixWorld.clone().multiply(offset);
    const position = new THREE.Vector3();
    const rotation = new THREE.Quaternion();
    m.decompose(position, rotation, new THREE.Vector3());
    const pose = { position: position.toArray(), rotation: rotation.toArray() };
    if (!moved(pose, this.grab.shown)) return;
    this.grab.shown = pose;
    this.grab.pose = pose;
    this.viewer.setAnchor(modelId, pose);
    this.dragPaced.offer({ modelId, pose });
  }

  /** The active controller's ray is this participant's pointer for everyone else. */
  point() {
    // The hand last used, else the right one (most people point with it), else any.
    const live = this.controllers.filter((c) => c.userData.source);
    const controller = this.active ?? live.find((c) => c.userData.source.handedness === "right") ?? live[0];
    if (!controller?.userData.source) return;
    const caster = new THREE.Raycaster();
    caster.setFromXRController(controller);
    const ray = { origin: caster.ray.origin.toArray(), direction: caster.ray.direction.toArray() };
    if (!moved(ray, this.sentRay)) return;
    this.sentRay = ray;
    this.pointerPaced.offer(ray);
  }

  /** Each ray drawn to where it meets a hologram (what it points at), else 1 m out. */
  showRays() {
    // Casting a ray through a 100k-triangle model takes a few ms in JavaScript: at the
    // pointer's 20 Hz, not at every one of the headset's 72-90 frames a second.
    const now = performance.now();
    if (now - this.raysAt < POINTER_MS) return;
    this.raysAt = now;
    for (const controller of this.controllers) {
      const ray = controller.getObjectByName("ray");
      if (!ray?.visible) continue;
      const hit = this.target(controller);
      ray.scale.z = hit && hit.distance > 0 ? hit.distance : 1;
    }
  }

  statusLines() {
    const lines = [`${this.roleName} · ${this.mode === "immersive-ar" ? "AR" : "VR"}`];
    if (!this.conn) lines.push("Replay: watching only");
    else if (this.role === "observer") lines.push("Observing: you see everything, nothing moves for you");
    else if (this.inControl()) lines.push("You are in control: point at the model and hold the trigger (or pinch) to move it");
    else {
      const controller = this.conn.state.controller;
      lines.push(controller ? `${this.nameOf(controller)} is in control` : "Nobody is in control");
      lines.push("Trigger (or pinch) on the model: a marker");
    }
    const count = this.conn?.state.annotations.size ?? 0;
    if (count) lines.push(`${count} annotation${count === 1 ? "" : "s"}`);
    return lines;
  }
}
