// Sending what moves (a head, a pointer, a dragged model) at a pace: the session keeps
// each participant's newest value only, so older values waiting behind a slow call are
// worth nothing. The headset (immersive.js) and the page's mouse drag (main.js) use it.
/** Sends the newest value at most every `ms`, one call in flight: older values are dropped. */
export class Paced {
  /** `clock`: {now, later, cancel}, the page's own by default (tests pass their own). */
  constructor(ms, send, clock = { now: () => performance.now(), later: (f, t) => setTimeout(f, t), cancel: (id) => clearTimeout(id) }) {
    this.ms = ms;
    this.send = send;
    this.clock = clock;
    this.last = -Infinity;
    this.fresh = false;
    this.busy = null;
    this.timer = null;
    this.sent = 0;
  }

  offer(value) {
    this.value = value;
    this.fresh = true;
    this.pump();
  }

  pump() {
    if (this.busy || !this.fresh) return;
    const wait = this.last + this.ms - this.clock.now();
    if (wait > 0) {
      this.timer ??= this.clock.later(() => {
        this.timer = null;
        this.pump();
      }, wait);
      return;
    }
    this.fresh = false;
    this.last = this.clock.now();
    this.sent += 1;
    const value = this.value; // the value of now: a newer one offered meanwhile waits its turn
    this.busy = Promise.resolve()
      .then(() => this.send(value))
      .catch(() => {}) // the newest value wins; a lost one is replaced by the next
      .finally(() => {
        this.busy = null;
        this.pump();
      });
  }

  /** Drop what waits and let the call in flight finish (before a commit that ends a drag). */
  async settle() {
    this.fresh = false;
    if (this.timer !== null) this.clock.cancel(this.timer);
    this.timer = null;
    await this.busy;
  }
}
