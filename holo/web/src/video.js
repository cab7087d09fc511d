// The session's operative video: WatchVideo over gRPC-Web, decoded with WebCodecs (H.264),
// drawn on a canvas. Each frame is shown with the session state as of its capture time
// (t_ns on the session clock): frames wait in a jitter buffer until t_ns + delay has passed
// on the clock (ClockService), then the holograms are set to the state of that moment and
// the frame is drawn, in the same animation frame. Telestrations are drawn on their frame
// and the seconds after it. A viewer that falls behind is told which frames the server
// skipped; it drops what it holds and decodes again from the next keyframe.
import { create } from "@bufbuild/protobuf";
import { ListTracksRequestSchema, WatchVideoRequestSchema } from "./gen/holo/v1/video_pb.js";
import { backoffMs, retryable, say, sleep } from "./rpc.js";

export const DELAY_NS = 300_000_000n; // jitter buffer: above the delivery latency (holo.client.timeline)
const TELESTRATION_NS = 3_000_000_000n; // a stroke stays on the video for 3 s after its frame

/** The WebCodecs codec string of an H.264 track, from its avcC or an SPS in the stream. */
export function codecString(extradata, firstFrame) {
  if (extradata?.length > 4 && extradata[0] === 1) return avc(extradata[1], extradata[2], extradata[3]);
  const bytes = extradata?.length ? extradata : firstFrame;
  for (let i = 0; i + 4 < bytes.length; i++) {
    if (bytes[i] === 0 && bytes[i + 1] === 0 && bytes[i + 2] === 1 && (bytes[i + 3] & 0x1f) === 7) {
      return avc(bytes[i + 4], bytes[i + 5], bytes[i + 6]);
    }
  }
  return "avc1.42E01E"; // constrained baseline 3.0: what a camera without an SPS yet most likely sends
}

function avc(profile, constraints, level) {
  return `avc1.${[profile, constraints, level].map((b) => b.toString(16).padStart(2, "0")).join("").toUpperCase()}`;
}

export class VideoView {
  /**
   * @param clients rpc.connect() clients
   * @param clock a SessionClock
   * @param timeline a Timeline fed with the session's events
   * @param onPresent(frameMeta, stateAt) called as each frame is drawn
   */
  constructor(clients, canvas, clock, timeline, { sessionId, onPresent, onStatus, telestrations }) {
    this.clients = clients;
    this.canvas = canvas;
    this.context = canvas.getContext("2d");
    this.clock = clock;
    this.timeline = timeline;
    this.sessionId = sessionId;
    this.onPresent = onPresent;
    this.onStatus = onStatus;
    this.telestrations = telestrations; // () => Map of the session's telestrations
    this.pending = []; // decoded frames waiting: {frame, meta}
    this.meta = new Map(); // index -> {index, tNs, keyframe}
    this.current = null;
    this.frozen = false; // tests hold the picture still to read it
    this.presented = 0;
    this.skips = 0;
    this.abort = new AbortController();
    this.trackId = "";
  }

  async tracks() {
    const reply = await this.clients.video.listTracks(create(ListTracksRequestSchema, { sessionId: { value: this.sessionId } }));
    return reply.tracks;
  }

  /** Watch `trackId` until stop(); reconnects when the stream breaks. */
  async watch(trackId) {
    this.trackId = trackId;
    const loop = () => {
      this.present();
      if (!this.abort.signal.aborted) requestAnimationFrame(loop);
    };
    requestAnimationFrame(loop);
    for (let failures = 0; !this.abort.signal.aborted; ) {
      try {
        await this.stream(trackId);
        return;
      } catch (err) {
        if (this.abort.signal.aborted) return;
        if (!retryable(err) || ++failures > 20) {
          this.onStatus?.(`The video stopped: ${say(err)}`, "error");
          return;
        }
        await sleep(backoffMs(failures), this.abort.signal);
      }
    }
  }

  async stream(trackId) {
    let decoder = null;
    let needKey = true;
    const request = create(WatchVideoRequestSchema, { trackId: { value: trackId }, sessionId: { value: this.sessionId } });
    let params = null;
    for await (const message of this.clients.video.watchVideo(request, { signal: this.abort.signal })) {
      const { case: kind, value } = message.kind;
      if (kind === "header") {
        params = value.track.codec;
        this.canvas.width = params.width || 640;
        this.canvas.height = params.height || 480;
        decoder?.close();
        decoder = null;
        needKey = true;
      } else if (kind === "frame") {
        if (needKey && !value.keyframe) continue;
        if (!decoder) decoder = this.decoder(params, value.data);
        needKey = false;
        const index = Number(value.index);
        this.meta.set(index, { index, tNs: value.tNs, keyframe: value.keyframe });
        decoder.decode(new EncodedVideoChunk({ type: value.keyframe ? "key" : "delta", timestamp: index, data: value.data }));
      } else if (kind === "skipped") {
        // The server skipped frames for this slow viewer: what is held is of before the gap.
        this.skips += 1;
        this.drop();
        needKey = true;
      } else if (kind === "ended") {
        this.onStatus?.(`The video ended (${value.endedReason || "closed"})`, "info");
        break;
      }
    }
    decoder?.close();
  }

  decoder(params, firstFrame) {
    const decoder = new VideoDecoder({
      output: (frame) => {
        const meta = this.meta.get(frame.timestamp);
        this.meta.delete(frame.timestamp);
        if (!meta) return frame.close();
        this.pending.push({ frame, meta });
        if (this.pending.length > 120) this.pending.shift().frame.close(); // 4 s at 30 fps
      },
      error: (err) => this.onStatus?.(`The video cannot be decoded here: ${err.message}`, "error"),
    });
    const config = { codec: codecString(params.extradata, firstFrame), optimizeForLatency: true };
    if (params.extradata?.length && params.extradata[0] === 1) config.description = params.extradata;
    if (params.width) Object.assign(config, { codedWidth: params.width, codedHeight: params.height });
    decoder.configure(config);
    return decoder;
  }

  drop() {
    for (const { frame } of this.pending) frame.close();
    this.pending = [];
  }

  /** Draw the newest frame whose moment has passed the jitter buffer, with its state. */
  present() {
    if (this.frozen || !this.clock.ready || !this.pending.length) return;
    const now = this.clock.now();
    let next = null;
    while (this.pending.length && this.pending[0].meta.tNs + DELAY_NS <= now) {
      next?.frame.close();
      next = this.pending.shift();
    }
    if (!next) return;
    const at = this.timeline.stateAt(next.meta.tNs);
    this.onPresent?.(next.meta, at); // holograms first: the same animation frame draws both
    this.context.drawImage(next.frame, 0, 0, this.canvas.width, this.canvas.height);
    this.drawTelestrations(next.meta.tNs);
    next.frame.close();
    this.current = next.meta;
    this.presented += 1;
  }

  drawTelestrations(tNs) {
    const context = this.context;
    for (const t of this.telestrations().values()) {
      if (t.trackId !== this.trackId || tNs < t.frameTNs || tNs > t.frameTNs + TELESTRATION_NS) continue;
      context.strokeStyle = t.rgb ? `#${t.rgb.toString(16).padStart(6, "0")}` : "#ffd400";
      context.lineWidth = Math.max(2, this.canvas.width / 160);
      context.beginPath();
      t.points.forEach(([u, v], i) => {
        const x = u * this.canvas.width;
        const y = v * this.canvas.height;
        if (i) context.lineTo(x, y);
        else context.moveTo(x, y);
      });
      context.stroke();
    }
  }

  stop() {
    this.abort.abort();
    this.drop();
  }
}
