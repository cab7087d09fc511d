// Text in the headset. HTML overlays (the page's name tags, status line, side panel) are
// not drawn in an immersive session: the compositor shows only what WebGL draws. So every
// text the wearer needs is also drawn into a canvas and shown on a quad in the scene.
import * as THREE from "three";

/** Objects on this layer are drawn in the headset only (the page draws its HTML tags). */
export const HEADSET_LAYER = 3;

// Text is drawn 48 px high and shown at 0.25 mm a pixel: 12 mm, 0.7 degrees at 1 m. That is
// about 15 display pixels on a headset (20-25 pixels a degree), where under 10 blurs.
const PX = 48;
const METRES_PER_PX = 0.00025;

function drawText(canvas, lines, colour) {
  const context = canvas.getContext("2d");
  context.font = `${PX}px system-ui, sans-serif`;
  const width = Math.ceil(Math.max(...lines.map((l) => context.measureText(l).width))) + PX;
  const height = Math.ceil(lines.length * PX * 1.3 + PX * 0.5);
  canvas.width = width;
  canvas.height = height;
  context.font = `${PX}px system-ui, sans-serif`; // resizing the canvas resets its state
  context.fillStyle = "rgba(20, 27, 36, 0.85)";
  context.fillRect(0, 0, width, height);
  context.fillStyle = `#${colour.getHexString()}`;
  context.fillRect(0, 0, PX / 6, height);
  context.fillStyle = "#e8eef5";
  context.textBaseline = "top";
  lines.forEach((line, k) => context.fillText(line, PX / 2, PX * 0.35 + k * PX * 1.3));
  return [width, height];
}

/** A name tag that always faces the wearer, sized in metres, on the headset layer. */
export function headsetTag(text, colour) {
  const canvas = document.createElement("canvas");
  const [w, h] = drawText(canvas, [text], colour);
  const texture = new THREE.CanvasTexture(canvas);
  texture.colorSpace = THREE.SRGBColorSpace;
  const sprite = new THREE.Sprite(new THREE.SpriteMaterial({ map: texture, depthTest: false }));
  sprite.center.set(-0.05, 0.5); // beside the point, not over it (as the page's tags)
  sprite.scale.set(w * METRES_PER_PX, h * METRES_PER_PX, 1);
  sprite.renderOrder = 20;
  sprite.layers.set(HEADSET_LAYER);
  return sprite;
}

/** A flat panel of text lines (the wearer's status: role, control, what the hands do). */
export class HeadsetPanel {
  constructor() {
    this.canvas = document.createElement("canvas");
    this.texture = new THREE.CanvasTexture(this.canvas);
    this.texture.colorSpace = THREE.SRGBColorSpace;
    this.mesh = new THREE.Mesh(
      new THREE.PlaneGeometry(1, 1),
      new THREE.MeshBasicMaterial({ map: this.texture, transparent: true, depthTest: false }),
    );
    this.mesh.renderOrder = 30;
    this.mesh.layers.set(HEADSET_LAYER);
    this.mesh.name = "headset panel";
    this.text = "";
  }

  show(lines, colour = new THREE.Color(0x4aa3ff)) {
    const text = lines.join("\n");
    if (text === this.text) return; // redrawn only when it changes, not every frame
    this.text = text;
    const [w, h] = drawText(this.canvas, lines, colour);
    this.texture.dispose(); // the canvas changed size: a new GPU texture
    this.texture = new THREE.CanvasTexture(this.canvas);
    this.texture.colorSpace = THREE.SRGBColorSpace;
    this.mesh.material.map = this.texture;
    this.mesh.material.needsUpdate = true;
    this.mesh.scale.set(w * METRES_PER_PX, h * METRES_PER_PX, 1);
  }

  /** Keep the panel low on the left, 0.6 m ahead, turning with the wearer slowly: clear
   * of the hologram, which the wearer looks at straight ahead and a little down. */
  follow(head) {
    const forward = new THREE.Vector3(0, 0, -1).applyQuaternion(head.quaternion);
    forward.y = 0;
    if (forward.lengthSq() < 1e-6) forward.set(0, 0, -1);
    forward.normalize();
    const left = new THREE.Vector3(forward.z, 0, -forward.x); // forward turned 90 degrees
    const target = head.position.clone().addScaledVector(forward, 0.6).addScaledVector(left, 0.3);
    target.y -= 0.35;
    // 10 % of the way a frame: settles in about a third of a second at 72 Hz, without
    // jitter when the head moves a little.
    if (this.mesh.position.lengthSq() === 0) this.mesh.position.copy(target);
    else this.mesh.position.lerp(target, 0.1);
    this.mesh.lookAt(head.position);
  }

  dispose() {
    this.texture.dispose();
    this.mesh.geometry.dispose();
    this.mesh.material.dispose();
  }
}
