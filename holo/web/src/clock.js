// The session clock as this page sees it: NTP-style exchanges with ClockService, the same
// filter as the Python SDK (holo/client/clock.py): the offsets of the least-delayed of the
// last samples, averaged; a new epoch (a replay seek or speed change) starts afresh.
// Session times are near 1.8e18 ns, past what a Number holds exactly: BigInt throughout.
import { create } from "@bufbuild/protobuf";
import { SyncRequestSchema } from "./gen/holo/v1/clock_pb.js";

const localNs = () => BigInt(Math.round(performance.now() * 1e6));

export class SessionClock {
  constructor(clockClient, { sessionId = "", window = 16, best = 3 } = {}) {
    this.client = clockClient;
    this.sessionId = sessionId;
    this.window = window;
    this.best = best;
    this.samples = [];
    this.rate = 1;
    this.epoch = null;
  }

  async sync() {
    const t1 = localNs();
    const reply = await this.client.sync(create(SyncRequestSchema, { clientSendNs: t1, sessionId: { value: this.sessionId } }), { timeoutMs: 5000 });
    const t4 = localNs();
    if (reply.clientSendNs !== t1) throw new Error("the clock reply does not echo our t1");
    const { serverReceiveNs: t2, serverSendNs: t3, rate } = reply;
    const served = rate > 0 ? Number(t3 - t2) / rate : 0;
    const sample = {
      localMid: (t1 + t4) / 2n,
      sessionMid: (t2 + t3) / 2n,
      delay: Math.max(0, Number(t4 - t1) - served),
    };
    if (reply.epoch !== this.epoch) {
      this.samples = [];
      this.epoch = reply.epoch;
    }
    this.rate = rate;
    this.samples.push(sample);
    this.samples.splice(0, Math.max(0, this.samples.length - this.window));
    return sample;
  }

  async syncMany(count = 8) {
    for (let k = 0; k < count; k++) await this.sync();
  }

  get ready() {
    return this.samples.length > 0;
  }

  /** The session clock now (BigInt nanoseconds). */
  now() {
    const best = [...this.samples].sort((a, b) => a.delay - b.delay).slice(0, this.best);
    const ref = best[0].localMid;
    const rate = this.rate;
    const atRef = best.map((s) => s.sessionMid + BigInt(Math.round(rate * Number(ref - s.localMid))));
    const session = atRef.reduce((a, b) => a + b, 0n) / BigInt(atRef.length);
    return session + BigInt(Math.round(rate * Number(localNs() - ref)));
  }
}
