// The holograms in three.js: the room frame is the world (glTF convention: right-handed,
// +Y up, metres); each loaded model hangs under an anchor group placed by its anchor pose
// (model frame -> room frame), and its annotations hang under the same group, in the model
// frame, so they stay on the anatomy when the model moves. Drawn on demand, not every
// animation frame: a page that shows nothing new costs no CPU (50 pages share 2 cores in
// the benchmark, and a headset's battery matters).
import * as THREE from "three";
import { OrbitControls } from "three/examples/jsm/controls/OrbitControls.js";
import { DRACOLoader } from "three/examples/jsm/loaders/DRACOLoader.js";
import { GLTFLoader } from "three/examples/jsm/loaders/GLTFLoader.js";
import { MeshoptDecoder } from "three/examples/jsm/libs/meshopt_decoder.module.js";
import { CSS2DObject, CSS2DRenderer } from "three/examples/jsm/renderers/CSS2DRenderer.js";
import { headsetTag } from "./panel3d.js";

export const BACKGROUND = 0x141b24;
// A marker's radius: 1 % of its model's size (2.5 mm on a 25 cm knee), 1 to 5 mm.
const MARKER_SHARE = 0.01;

/** A stable colour per participant id (hue from a hash), for rays, markers and names. */
export function colourOf(id) {
  let h = 0;
  for (const c of id) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return new THREE.Color().setHSL((h % 360) / 360, 0.75, 0.6);
}

export class Viewer {
  constructor(canvas, overlay) {
    this.canvas = canvas;
    this.overlay = overlay;
    this.renderer = null; // start() makes it: the costly part, run while the page joins
    this.scene = new THREE.Scene();
    this.camera = new THREE.PerspectiveCamera(45, 1, 0.01, 50);
    this.camera.position.set(0, 1.6, 1.2);
    this.controls = new OrbitControls(this.camera, canvas);
    this.controls.target.set(0, 1.2, 0);
    this.controls.addEventListener("change", () => this.requestRender());
    this.scene.add(new THREE.HemisphereLight(0xffffff, 0x404050, 1.6));
    const key = new THREE.DirectionalLight(0xffffff, 1.8);
    key.position.set(1, 2, 2);
    this.scene.add(key);
    this.loader = new GLTFLoader();
    const draco = new DRACOLoader();
    draco.setDecoderPath("decoders/draco/");
    // One worker: each worker compiles the decoder's WebAssembly anew (~100 ms here), and a
    // level's few structures decode faster one after the other in one worker than each in
    // a worker of its own on 2 cores. Fetched now, while the page joins.
    draco.setWorkerLimit(1);
    draco.preload();
    this.loader.setDRACOLoader(draco);
    this.loader.setMeshoptDecoder(MeshoptDecoder);
    this.models = new Map(); // modelId -> {anchor, content, lod}
    this.notes = new Map(); // annotationId -> Object3D
    this.rays = new Map(); // participantId -> Line
    this.heads = new Map(); // participantId -> Object3D
    this.framed = false;
    this.pending = false;
    this.drawn = 0; // frames drawn (tests wait for it to move)
    this.waiting = []; // resolvers of nextFrame()
    this.immersive = false; // in a headset (immersive.js): its frame loop draws every frame
  }

  /** Create the WebGL renderer (~100 ms on a software renderer): after the first requests. */
  start() {
    performance.mark("holo:viewer");
    // Without a GPU (a virtual desktop, a thin client: WebGL in software), multisampling and
    // a pixel ratio above 1 cost several times the frame: left out there.
    const software = softwareRenderer();
    this.renderer = new THREE.WebGLRenderer({ canvas: this.canvas, antialias: !software });
    this.renderer.setPixelRatio(software ? 1 : Math.min(window.devicePixelRatio, 2));
    this.renderer.setClearColor(BACKGROUND);
    this.labels = new CSS2DRenderer({ element: this.overlay });
    performance.mark("holo:webgl");
    new ResizeObserver(() => this.resize()).observe(this.canvas);
    this.resize();
    // Compile the shaders a bone needs (glTF's metallic-roughness material under these
    // lights) while the model is on its way, not on its first frame (~60 ms in software).
    setTimeout(() => {
      const probe = new THREE.Mesh(new THREE.SphereGeometry(0.01, 8, 6), new THREE.MeshStandardMaterial());
      probe.visible = true;
      this.scene.add(probe);
      this.renderer.compile(this.scene, this.camera);
      this.scene.remove(probe);
      probe.geometry.dispose();
      probe.material.dispose();
      performance.mark("holo:shaders");
    }, 0);
    return this;
  }

  resize() {
    const { clientWidth: w, clientHeight: h } = this.canvas;
    if (!w || !h) return;
    this.renderer.setSize(w, h, false);
    this.labels.setSize(w, h);
    this.camera.aspect = w / h;
    this.camera.updateProjectionMatrix();
    this.requestRender();
  }

  requestRender() {
    if (this.pending || !this.renderer || this.immersive) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      if (this.immersive) return; // a headset session began meanwhile: its loop draws
      this.renderer.render(this.scene, this.camera);
      this.labels.render(this.scene, this.camera);
      this.drawnNow();
    });
  }

  /** A frame was drawn (here or by the headset's loop): count it, wake nextFrame(). */
  drawnNow() {
    this.drawn += 1;
    for (const resolve of this.waiting.splice(0)) resolve(performance.now());
  }

  /** Resolves (with performance.now()) once the next frame has been drawn. */
  nextFrame() {
    const drawn = new Promise((resolve) => this.waiting.push(resolve));
    this.requestRender();
    return drawn;
  }

  anchorOf(modelId) {
    let entry = this.models.get(modelId);
    if (!entry) {
      const anchor = new THREE.Group();
      anchor.name = `anchor ${modelId}`;
      this.scene.add(anchor);
      entry = { anchor, content: null, lod: -1 };
      this.models.set(modelId, entry);
    }
    return entry;
  }

  /** Show level `lod` of a model from a GLB holding that scene only; coarser ones give way. */
  async showLod(modelId, lod, glbBuffer) {
    const gltf = await this.loader.parseAsync(glbBuffer, "");
    performance.mark(`holo:lod${lod}-parsed`);
    const entry = this.anchorOf(modelId);
    if (lod <= entry.lod) return false; // a finer level is already shown
    if (entry.content) {
      entry.anchor.remove(entry.content);
      dispose(entry.content);
    }
    entry.content = gltf.scene;
    entry.lod = lod;
    entry.anchor.add(gltf.scene);
    if (!this.framed) this.frame();
    this.requestRender();
    return true;
  }

  setAnchor(modelId, pose) {
    const { anchor } = this.anchorOf(modelId);
    anchor.position.fromArray(pose.position);
    anchor.quaternion.fromArray(pose.rotation);
    anchor.updateMatrixWorld(true);
    this.requestRender();
  }

  /** Take the object `map` holds under `id` out of the scene, free it, forget it. */
  forget(map, id) {
    const object = map.get(id);
    if (object) {
      object.parent?.remove(object);
      dispose(object);
      map.delete(id);
    }
    this.requestRender();
  }

  removeModel(modelId) {
    const entry = this.models.get(modelId);
    if (!entry) return;
    this.scene.remove(entry.anchor);
    dispose(entry.anchor);
    this.models.delete(modelId);
    this.requestRender();
  }

  /** Point the camera at everything shown (once, when the first model arrives). */
  frame() {
    const box = new THREE.Box3();
    for (const { anchor } of this.models.values()) box.expandByObject(anchor);
    if (box.isEmpty()) return;
    const centre = box.getCenter(new THREE.Vector3());
    const size = box.getSize(new THREE.Vector3()).length();
    const distance = size / (2 * Math.tan((this.camera.fov * Math.PI) / 360)) * 1.1;
    this.controls.target.copy(centre);
    this.camera.position.copy(centre).add(new THREE.Vector3(0, 0.15 * distance, distance));
    this.camera.near = distance / 100;
    this.camera.far = distance * 100;
    this.camera.updateProjectionMatrix();
    this.controls.update();
    this.framed = true;
  }

  /** Forget a model's annotation objects (made again, sized to the model, on the next
   * setAnnotations): markers placed before the model arrived were sized without it. */
  dropNotes(modelId) {
    const { anchor } = this.anchorOf(modelId);
    for (const [id, object] of [...this.notes]) if (object.parent === anchor) this.forget(this.notes, id);
  }

  /** Annotations: markers (spheres), labels (text), strokes (lines), in their model's frame. */
  setAnnotations(annotations, nameOf) {
    for (const id of [...this.notes.keys()]) if (!annotations.has(id)) this.forget(this.notes, id);
    for (const [id, a] of annotations) {
      if (this.notes.has(id)) continue;
      const colour = colourOf(a.author);
      const group = new THREE.Group();
      group.name = `annotation ${id}`;
      if (a.shape === "stroke") {
        const geometry = new THREE.BufferGeometry().setFromPoints(a.points.map((p) => new THREE.Vector3(...p)));
        group.add(new THREE.Line(geometry, new THREE.LineBasicMaterial({ color: colour, depthTest: false })));
      } else {
        const marker = new THREE.Mesh(
          new THREE.SphereGeometry(this.markerRadius(a.modelId), 16, 12),
          new THREE.MeshBasicMaterial({ color: colour, depthTest: false }),
        );
        marker.renderOrder = 10;
        marker.position.fromArray(a.points[0]);
        group.add(marker);
        const text = tagObject(a.shape === "label" ? `${a.text} — ${nameOf(a.author)}` : nameOf(a.author), colour);
        text.position.fromArray(a.points[0]);
        group.add(text);
      }
      this.anchorOf(a.modelId).anchor.add(group);
      this.notes.set(id, group);
    }
    this.requestRender();
  }

  markerRadius(modelId) {
    const content = this.models.get(modelId)?.content;
    const size = content ? new THREE.Box3().setFromObject(content).getSize(new THREE.Vector3()).length() : 0;
    return Math.min(0.005, Math.max(0.001, MARKER_SHARE * size));
  }

  /** A participant's pointer ray in the room (2 m long), or none. */
  setRay(participantId, ray, name) {
    let line = this.rays.get(participantId);
    if (!ray) return this.forget(this.rays, participantId);
    if (!line) {
      const geometry = new THREE.BufferGeometry().setFromPoints([new THREE.Vector3(), new THREE.Vector3(0, 0, -2)]);
      line = new THREE.Line(geometry, new THREE.LineBasicMaterial({ color: colourOf(participantId) }));
      line.add(tagObject(name, colourOf(participantId)));
      this.scene.add(line);
      this.rays.set(participantId, line);
    }
    const origin = new THREE.Vector3(...ray.origin);
    const direction = new THREE.Vector3(...ray.direction).normalize();
    // The ray ends where it meets a hologram (what is pointed at), else 2 m out.
    const caster = new THREE.Raycaster(origin, direction, 0, 2);
    let length = 2;
    for (const { content } of this.models.values()) {
      const hit = content && caster.intersectObject(content, true)[0];
      if (hit && hit.distance < length) length = hit.distance;
    }
    const end = origin.clone().addScaledVector(direction, length);
    line.geometry.setFromPoints([origin, end]);
    line.children[0].position.copy(end);
    this.requestRender();
  }

  /** A participant's head in the room: a small viewing frustum with their name. */
  setHead(participantId, pose, name) {
    let head = this.heads.get(participantId);
    if (!pose) return this.forget(this.heads, participantId);
    if (!head) {
      const cone = new THREE.ConeGeometry(0.06, 0.12, 4, 1, true);
      cone.rotateX(-Math.PI / 2); // apex at the eye, opening along -Z (where a camera looks)
      cone.translate(0, 0, -0.06);
      head = new THREE.LineSegments(new THREE.EdgesGeometry(cone), new THREE.LineBasicMaterial({ color: colourOf(participantId) }));
      head.add(tagObject(name, colourOf(participantId)));
      this.scene.add(head);
      this.heads.set(participantId, head);
    }
    head.position.fromArray(pose.position);
    head.quaternion.fromArray(pose.rotation);
    this.requestRender();
  }

  /** The room-frame ray through a point of the canvas (client coordinates). */
  rayAt(clientX, clientY) {
    const rect = this.canvas.getBoundingClientRect();
    const ndc = new THREE.Vector2(((clientX - rect.left) / rect.width) * 2 - 1, -((clientY - rect.top) / rect.height) * 2 + 1);
    const caster = new THREE.Raycaster();
    caster.setFromCamera(ndc, this.camera);
    return caster;
  }

  /** What model surface is under a canvas point: {modelId, point (model frame, metres)}. */
  pick(clientX, clientY) {
    return this.pickAlong(this.rayAt(clientX, clientY));
  }

  /** The first model surface a Raycaster meets: {modelId, point (model frame), world,
   * distance (metres)}, or null. */
  pickAlong(caster) {
    let best = null;
    for (const [modelId, entry] of this.models) {
      if (!entry.content) continue;
      const hit = caster.intersectObject(entry.content, true)[0];
      if (hit && (!best || hit.distance < best.hit.distance)) best = { modelId, hit, anchor: entry.anchor };
    }
    if (!best) return null;
    const local = best.anchor.worldToLocal(best.hit.point.clone());
    return { modelId: best.modelId, point: local.toArray(), world: best.hit.point.toArray(), distance: best.hit.distance };
  }

  /** Pixel position (client coordinates) of a point of a model's frame, for tests and tools. */
  screenOf(modelId, point) {
    const entry = this.models.get(modelId);
    if (!entry) return null;
    const world = entry.anchor.localToWorld(new THREE.Vector3(...point));
    const ndc = world.project(this.camera);
    const rect = this.canvas.getBoundingClientRect();
    return [rect.left + ((ndc.x + 1) / 2) * rect.width, rect.top + ((1 - ndc.y) / 2) * rect.height];
  }

  /** A small picture of each structure of a model, alone, seen from the front (+Z). */
  thumbnails(modelId, size = 160) {
    const entry = this.models.get(modelId);
    if (!entry?.content) return [];
    const meshes = [];
    entry.content.traverse((o) => o.isMesh && meshes.push(o));
    const target = new THREE.WebGLRenderTarget(size, size);
    const camera = new THREE.PerspectiveCamera(30, 1, 0.001, 100);
    const pixels = new Uint8Array(size * size * 4);
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = size;
    const context = canvas.getContext("2d");
    const shown = new Map(meshes.map((m) => [m, m.visible]));
    const out = [];
    for (const mesh of meshes) {
      for (const other of meshes) other.visible = other === mesh;
      const box = new THREE.Box3().setFromObject(mesh);
      const centre = box.getCenter(new THREE.Vector3());
      const radius = box.getSize(new THREE.Vector3()).length() / 2;
      camera.position.copy(centre).add(new THREE.Vector3(0, 0, radius / Math.tan((15 * Math.PI) / 180)));
      camera.lookAt(centre);
      this.renderer.setRenderTarget(target);
      this.renderer.render(this.scene, camera);
      this.renderer.readRenderTargetPixels(target, 0, 0, size, size, pixels);
      const image = context.createImageData(size, size);
      for (let row = 0; row < size; row++) {
        // WebGL rows run bottom-up; images top-down.
        image.data.set(pixels.subarray((size - 1 - row) * size * 4, (size - row) * size * 4), row * size * 4);
      }
      context.putImageData(image, 0, 0);
      out.push({ name: mesh.name || mesh.parent?.name || "structure", url: canvas.toDataURL("image/png") });
    }
    this.renderer.setRenderTarget(null);
    for (const [mesh, visible] of shown) mesh.visible = visible;
    target.dispose();
    this.requestRender();
    return out;
  }

  /** The size (metres) of the box around a model as drawn, along the room's axes. */
  sizeOf(modelId) {
    const content = this.models.get(modelId)?.content;
    if (!content) return null;
    return new THREE.Box3().setFromObject(content).getSize(new THREE.Vector3()).toArray();
  }

  /** The centre (room frame, metres) of the box around a model as drawn. */
  centreOf(modelId) {
    const content = this.models.get(modelId)?.content;
    if (!content) return null;
    return new THREE.Box3().setFromObject(content).getCenter(new THREE.Vector3()).toArray();
  }

  anchorPose(modelId) {
    const { anchor } = this.anchorOf(modelId);
    return { position: anchor.position.toArray(), rotation: anchor.quaternion.toArray() };
  }
}

/** Whether WebGL runs in software here (SwiftShader, llvmpipe), from a throw-away context. */
function softwareRenderer() {
  const gl = document.createElement("canvas").getContext("webgl2");
  if (!gl) return false;
  const info = gl.getExtension("WEBGL_debug_renderer_info");
  const name = info ? gl.getParameter(info.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER);
  gl.getExtension("WEBGL_lose_context")?.loseContext();
  return /swiftshader|llvmpipe|software/i.test(String(name));
}

/** A name beside a point of the scene (not over it: the point stays visible): HTML on
 * the page, and a sprite of the same text drawn in a headset only. */
function tagObject(text, colour) {
  const anchor = document.createElement("div");
  anchor.className = "tag-anchor";
  const tag = document.createElement("span");
  tag.className = "tag";
  tag.textContent = text;
  tag.style.borderColor = `#${colour.getHexString()}`;
  anchor.append(tag);
  const object = new CSS2DObject(anchor);
  object.add(headsetTag(text, colour));
  return object;
}

function dispose(root) {
  root.traverse((o) => {
    o.geometry?.dispose();
    const materials = Array.isArray(o.material) ? o.material : o.material ? [o.material] : [];
    for (const m of materials) {
      m.map?.dispose();
      m.dispose();
    }
    if (o.isCSS2DObject) o.element.remove();
  });
}
