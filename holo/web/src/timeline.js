// The session as of any recent moment, to show a video frame with the holograms of its
// time: the same rule as the Python SDK's holo/client/timeline.py. Events are kept in
// (t_ns, seq) order (a later seq may carry an earlier time: intents may be stamped up to
// 1 s in the past); the state after each is folded when first asked for. A frame waits in
// a jitter buffer until its t_ns plus the delay has passed on the session clock, so every
// event stamped at or before it has arrived.
//
// Ephemeral values come to observers at a capped rate (the server's 15 Hz, fewer than the
// video's frames): between two values of a channel that bracket the moment asked for, at
// most maxGapNs apart, the value is interpolated (positions and ray directions linearly,
// rotations by normalised lerp the short way round), so a hologram moves on every frame
// instead of in steps; values further apart (a pause, a lost link) are held, and so is the
// newest. The arithmetic is Python's (holo.client.timeline.interpolate), operation for
// operation, so the page, the SDK and the Unity package agree to the last bit
// (tests/vectors/timeline.json, test/timeline.test.mjs).
import { apply, copyState, emptyState } from "./fold.js";

const before = (a, b) => a.tNs < b.tNs || (a.tNs === b.tNs && a.seq < b.seq);

/** Values further apart are held: nearly four intervals of the observers' 15 Hz values. */
export const MAX_GAP_NS = 250_000_000n;

const lerp = (a, b, f) => a.map((x, i) => x + (b[i] - x) * f);

function poseBetween(a, b, f) {
  let qb = b.rotation;
  const dot = a.rotation[0] * qb[0] + a.rotation[1] * qb[1] + a.rotation[2] * qb[2] + a.rotation[3] * qb[3];
  if (dot < 0) qb = qb.map((v) => -v); // the same rotation, the short way round
  const q = lerp(a.rotation, qb, f);
  const norm = Math.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
  return { position: lerp(a.position, b.position, f), rotation: q.map((v) => v / norm) };
}

/**
 * The update a fraction `f` (0..1) of the way from `older` to `newer`, with the older one's
 * participant, channel and time: head poses and drags of one model by their poses, pointers
 * by origin and direction. Anything else (other models, heartbeats, directions that would
 * cancel out): `older` itself, held.
 */
export function between(older, newer, f) {
  const a = older.value;
  const b = newer.value;
  if (older.channel !== newer.channel || !a || !b) return older;
  let value;
  if (older.channel === "headPose") value = poseBetween(a, b, f);
  else if (older.channel === "drag") {
    if (a.modelId !== b.modelId) return older;
    value = { ...a, anchorPose: poseBetween(a.anchorPose, b.anchorPose, f) };
  } else if (older.channel === "pointer") {
    const direction = lerp(a.direction, b.direction, f);
    if (Math.max(...direction.map(Math.abs)) < 1e-9) return older;
    value = { origin: lerp(a.origin, b.origin, f), direction };
  } else return older;
  return { ...older, value };
}

export class Timeline {
  /**
   * @param horizonNs how much session time is kept (BigInt ns)
   * @param interpolate between two ephemeral values (false: hold the newest)
   * @param maxGapNs values further apart are held (BigInt ns)
   */
  constructor(horizonNs = 10_000_000_000n, { interpolate = true, maxGapNs = MAX_GAP_NS } = {}) {
    this.horizon = horizonNs;
    this.interpolate = interpolate;
    this.maxGapNs = maxGapNs;
    this.reset(null, 0n);
  }

  reset(state, tNs) {
    this.base = state ? copyState(state) : emptyState();
    this.baseT = tNs;
    this.events = [];
    this.states = [];
    this.ephemeral = new Map(); // `${pid}/${channel}` -> [updates, oldest first]
  }

  onEvent(event) {
    let k = this.events.length;
    while (k > 0 && before(event, this.events[k - 1])) k--;
    this.events.splice(k, 0, event);
    this.states.length = Math.min(this.states.length, k);
    this.prune(this.events[this.events.length - 1].tNs);
  }

  onEphemeral(update) {
    const key = `${update.participantId}/${update.channel}`;
    const history = this.ephemeral.get(key) ?? [];
    if (history.length && update.tNs < history[history.length - 1].tNs) return;
    history.push(update);
    while (history.length > 1 && history[1].tNs <= update.tNs - this.horizon) history.shift();
    this.ephemeral.set(key, history);
  }

  stateAfter(k) {
    while (this.states.length < k) {
      const n = this.states.length;
      const state = copyState(n ? this.states[n - 1] : this.base);
      const event = this.events[n];
      state.seq = event.seq - 1; // folded in time order
      apply(state, event);
      this.states.push(state);
    }
    return k ? this.states[k - 1] : this.base;
  }

  prune(newest) {
    let keep = 0;
    while (keep < this.events.length && this.events[keep].tNs < newest - this.horizon) keep++;
    if (keep > 1) {
      this.base = this.stateAfter(keep);
      const t = this.events[keep - 1].tNs;
      if (t > this.baseT) this.baseT = t;
      this.events.splice(0, keep);
      this.states.splice(0, keep);
    }
  }

  /**
   * The value in effect at tNs: history[k - 1] (the newest at or before it), interpolated
   * towards history[k] when that one brackets tNs closely. It keeps the older update's tNs,
   * which decides whether a drag shows instead of a commit, as without interpolation.
   */
  valueAt(history, k, tNs) {
    const older = history[k - 1];
    if (!this.interpolate || k === history.length || older.tNs === tNs) return older;
    const newer = history[k];
    const gap = newer.tNs - older.tNs;
    if (gap > this.maxGapNs) return older;
    // Both below 2^53: exact as Numbers, so the quotient is rounded once, as Python's is.
    return between(older, newer, Number(tNs - older.tNs) / Number(gap));
  }

  /**
   * As of session time tNs (BigInt): {state, exact, ephemeral, latest(pid, channel),
   * anchorPose(modelId)}; `ephemeral` maps `${pid}/${channel}` to the update in effect
   * (see valueAt), in the order the channels were first seen.
   */
  stateAt(tNs) {
    let k = 0;
    while (k < this.events.length && this.events[k].tNs <= tNs) k++;
    const state = this.stateAfter(k);
    const ephemeral = new Map();
    for (const [key, history] of this.ephemeral) {
      let lo = 0;
      let hi = history.length; // how many are stamped at or before tNs (bisect_right)
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (tNs < history[mid].tNs) hi = mid;
        else lo = mid + 1;
      }
      if (lo) ephemeral.set(key, this.valueAt(history, lo, tNs));
    }
    return {
      state,
      exact: tNs >= this.baseT,
      ephemeral,
      latest: (pid, channel) => ephemeral.get(`${pid}/${channel}`) ?? null,
      anchorPose(modelId) {
        const committed = state?.models.get(modelId);
        const committedAt = committed?.tNs ?? 0n;
        let drag = null;
        for (const u of ephemeral.values()) {
          if (u.channel === "drag" && u.value?.modelId === modelId && (!drag || u.tNs > drag.tNs)) drag = u;
        }
        if (drag && drag.tNs > committedAt) return drag.value.anchorPose;
        return committed?.anchorPose ?? null;
      },
    };
  }
}
