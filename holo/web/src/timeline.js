// The session as of any recent moment, to show a video frame with the holograms of its
// time: the same rule as the Python SDK's holo/client/timeline.py. Events are kept in
// (t_ns, seq) order (a later seq may carry an earlier time: intents may be stamped up to
// 1 s in the past); the state after each is folded when first asked for. A frame waits in
// a jitter buffer until its t_ns plus the delay has passed on the session clock, so every
// event stamped at or before it has arrived.
import { apply, copyState, emptyState } from "./fold.js";

const before = (a, b) => a.tNs < b.tNs || (a.tNs === b.tNs && a.seq < b.seq);

export class Timeline {
  constructor(horizonNs = 10_000_000_000n) {
    this.horizon = horizonNs;
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

  /** {state, exact, anchorPose(modelId)} as of session time tNs (BigInt). */
  stateAt(tNs) {
    let k = 0;
    while (k < this.events.length && this.events[k].tNs <= tNs) k++;
    const state = this.stateAfter(k);
    const drags = [];
    for (const [key, history] of this.ephemeral) {
      if (!key.endsWith("/drag")) continue;
      const at = history.filter((u) => u.tNs <= tNs);
      if (at.length) drags.push(at[at.length - 1]);
    }
    return {
      state,
      exact: tNs >= this.baseT,
      anchorPose(modelId) {
        const committed = state?.models.get(modelId);
        const committedAt = committed?.tNs ?? 0n;
        let drag = null;
        for (const u of drags) if (u.value.modelId === modelId && (!drag || u.tNs > drag.tNs)) drag = u;
        if (drag && drag.tNs > committedAt) return drag.value.anchorPose;
        return committed?.anchorPose ?? null;
      },
    };
  }
}
