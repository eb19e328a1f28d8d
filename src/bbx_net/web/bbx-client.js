// bbx-client.js: the browser client of bbx_net. One ES module, no build step.
//
//   import { BbxClient } from "/bbx-client.js";
//   const client = new BbxClient({ url: "ws://host:8080/", roomCode: "1234" });
//   const welcome = await client.connect();
//   client.setParam("gain", 0.8);
//   client.setParam("freq", 440, client.toServerTime(performance.now() + 100));
//
// Drop-in for @bbx-audio/net's BbxClient (same constructor options, methods, events
// and properties), with these differences where that client is weak:
//  - clock offset from a robust fit over up to 256 pings (ClockFilter below: holds
//    under Wi-Fi jitter, tracks drift, re-converges after a route change, slews
//    instead of jumping back; no 32-bit truncation: times are µs as plain numbers);
//  - reconnection with exponential backoff and jitter that resumes the same node id
//    with the server's session token (also across a page reload, via sessionStorage);
//  - reconnects at once when the page becomes visible again or the network returns;
//  - a pong timeout that notices a dead socket instead of waiting for TCP;
//  - a reconnect the server refuses ends in one clear event (roomEnded, roomFull,
//    rateLimited, serverFull) instead of a retry loop or a silent open socket;
//  - parameter changes made while offline are kept (latest per name, `unsent`,
//    event "unsent" with the count) and sent on reconnect (event "flushed").
//
// Local time is performance.now() (milliseconds, monotonic); server time is the
// server clock in integer microseconds.

const MAX_BACKOFF_MS = 30000;
// How long a superseded attempt may take to close before the next one opens anyway.
const SUPERSEDE_WAIT_MS = 2000;
const FATAL_JOIN_ERRORS = new Set(["INVALID_ROOM", "ROOM_FULL", "RATE_LIMITED", "SERVER_FULL"]);
// The event a refused rejoin emits, by error code: the room ended (expired, or the
// server restarted with new rooms), filled up, or the server throttles or is full.
const REJOIN_REFUSED = {
  INVALID_ROOM: "roomEnded",
  ROOM_FULL: "roomFull",
  RATE_LIMITED: "rateLimited",
  SERVER_FULL: "serverFull",
};

function nowUs() {
  return performance.now() * 1000;
}

// ---- the clock filter (the same algorithm as bbx_net/clock_filter.py) ----
//
// Each ping/pong gives a sample: its midpoint on the local clock, the offset it
// measures (server minus local, assuming equal one-way delays) and its round trip.
// The filter fits offset = a + b * t over up to 256 samples (64 s), weighting fast
// exchanges only as much as the spread of round trips says, rejecting outliers, and
// using the drift b only as far as the data supports it. A sustained shift (a new
// route) drops the old samples; downward corrections are slewed so events scheduled
// by local + offset keep their order. Every step mirrors the Python twin, operation
// for operation (tests/test_clock_filter.py compares the two on the same samples).

const CF_WINDOW = 256;
const CF_SPAN_US = 64e6;
const CF_MIN_SLOPE_SPAN_US = 0.5e6;
const CF_MIN_SLOPE_SAMPLES = 8;
const CF_EXCESS_FLOOR_US = 20.0;
const CF_SCALE_FLOOR_US = 5.0;
const CF_REJECT = 3.5;
const CF_SHRINK = 2.0;
const CF_ONE_SIDED = 2.5;
const CF_CHANGE_RUN = 6;
const CF_CHANGE_SCALES = 3.0;
const CF_CHANGE_FLOOR_US = 100.0;
const CF_SLEW = 0.05;
const CF_BURST_INTERVAL_US = 50e3;
const CF_BURST_SAMPLES = 20;
const CF_STEADY_INTERVAL_US = 250e3;
const CF_NOISY_INTERVAL_US = 100e3;
const CF_NOISY_SCALE_US = 1000.0;

function wmedian(values, weights) {
  const order = values.map((_, i) => i);
  order.sort((i, j) => values[i] - values[j]); // stable, as Python's sorted
  let half = 0.0;
  for (const i of order) half += weights[i];
  half *= 0.5;
  let acc = 0.0;
  for (const i of order) {
    acc += weights[i];
    if (acc >= half) return values[i];
  }
  return values[order[order.length - 1]];
}

function typicalExcess(r, lo) {
  const x = r.map((v) => v - lo).sort((a, b) => a - b);
  return Math.max(x[Math.floor(x.length / 2)], CF_EXCESS_FLOOR_US);
}

// Inverse-variance weights from how the scatter grows with the excess round trip
// (residual^2 ~ alpha + beta * excess^2), used when slow exchanges scatter clearly
// more than fast ones (queueing); otherwise the start's mild weights.
function varianceWeights(r, lo, medianExcess, e, c, scale, start) {
  const n = r.length;
  let vLo = 0.0;
  let qLo = 0.0;
  let vHi = 0.0;
  let qHi = 0.0;
  let nLo = 0;
  let nHi = 0;
  const limit = CF_REJECT * scale;
  for (let i = 0; i < n; i++) {
    const d = e[i] - c;
    if (d > limit || -d > limit) continue;
    const x = r[i] - lo;
    if (x <= medianExcess) {
      vLo += d * d;
      qLo += x * x;
      nLo += 1;
    } else {
      vHi += d * d;
      qHi += x * x;
      nHi += 1;
    }
  }
  if (nLo < CF_MIN_SLOPE_SAMPLES || nHi < CF_MIN_SLOPE_SAMPLES) return start;
  vLo /= nLo;
  qLo /= nLo;
  vHi /= nHi;
  qHi /= nHi;
  if (vHi < CF_ONE_SIDED * vLo) return start;
  let beta = qHi > qLo ? (vHi - vLo) / (qHi - qLo) : 0.0;
  if (beta < 0.0) beta = 0.0;
  let alpha = vLo - beta * qLo;
  if (alpha < CF_SCALE_FLOOR_US * CF_SCALE_FLOOR_US) alpha = CF_SCALE_FLOOR_US * CF_SCALE_FLOOR_US;
  return r.map((v) => {
    const x = v - lo;
    return alpha / (alpha + beta * x * x);
  });
}

function fitSamples(t, o, r, trackDrift) {
  const n = t.length;
  if (n === 1) return [t[0], o[0], 0.0, 0.0, r[0] / 2.0, CF_SCALE_FLOOR_US];
  let lo = Infinity;
  for (const v of r) if (v < lo) lo = v;
  const s = typicalExcess(r, lo);
  let w = r.map((v) => {
    const q = (v - lo) / s;
    return 1.0 / (1.0 + q * q);
  });
  const slopeOk =
    trackDrift && n >= CF_MIN_SLOPE_SAMPLES && t[n - 1] - t[0] >= CF_MIN_SLOPE_SPAN_US;
  let b = 0.0;
  if (slopeOk) {
    const h = Math.floor(n / 2);
    let s1 = 0.0;
    for (let i = 0; i < h; i++) s1 += t[i];
    let s2 = 0.0;
    for (let i = n - h; i < n; i++) s2 += t[i];
    const t1 = s1 / h;
    const t2 = s2 / h;
    if (t2 > t1) {
      b = (wmedian(o.slice(n - h), w.slice(n - h)) - wmedian(o.slice(0, h), w.slice(0, h))) /
        (t2 - t1);
    }
  }
  let e = o.map((v, i) => v - b * (t[i] - t[0]));
  let c = wmedian(e, w);
  let scale = Math.max(1.4826 * wmedian(e.map((v) => Math.abs(v - c)), w), CF_SCALE_FLOOR_US);
  w = varianceWeights(r, lo, s, e, c, scale, w);
  let a = c;
  let tm = t[0];
  let se = scale;
  let bFit = b;
  for (let pass = 0; pass < 2; pass++) {
    let sw = 0.0;
    let swt = 0.0;
    let swo = 0.0;
    const keep = [];
    for (let i = 0; i < n; i++) {
      if (Math.abs(e[i] - c) <= CF_REJECT * scale) {
        keep.push(i);
        sw += w[i];
        swt += w[i] * t[i];
        swo += w[i] * o[i];
      }
    }
    if (keep.length === 0) break;
    tm = swt / sw;
    a = swo / sw;
    bFit = 0.0;
    if (slopeOk) {
      let stt = 0.0;
      let sto = 0.0;
      for (const i of keep) {
        const dt = t[i] - tm;
        stt += w[i] * dt * dt;
        sto += w[i] * dt * (o[i] - a);
      }
      if (stt > 0.0) bFit = sto / stt;
    }
    let see = 0.0;
    for (const i of keep) {
      const d = o[i] - a - bFit * (t[i] - tm);
      see += w[i] * d * d;
    }
    const m = keep.length;
    const dof = slopeOk ? m - 2 : m - 1;
    const unit = dof > 0 ? see / dof : scale * scale;
    se = sw > 0.0 ? Math.sqrt(unit / sw) : scale;
    b = bFit;
    if (slopeOk) {
      let stt = 0.0;
      for (const i of keep) {
        const dt = t[i] - tm;
        stt += w[i] * dt * dt;
      }
      const varB = stt > 0.0 ? unit / stt : Infinity;
      if (varB === Infinity || bFit === 0.0) b = 0.0;
      else b = (bFit * bFit * bFit) / (bFit * bFit + CF_SHRINK * CF_SHRINK * varB);
    }
    const bf = bFit;
    const tmm = tm;
    e = o.map((v, i) => v - bf * (t[i] - tmm));
    c = a;
    const cc = c;
    scale = Math.max(1.4826 * wmedian(e.map((v) => Math.abs(v - cc)), w), CF_SCALE_FLOOR_US);
  }
  return [tm, a, b, bFit, se, scale];
}

/** Clock-offset estimator: server minus local clock, µs, from ping exchanges. */
export class ClockFilter {
  constructor({ window = CF_WINDOW, trackDrift = true, spanUs = CF_SPAN_US, slew = true } = {}) {
    this.window = window;
    this.trackDrift = trackDrift;
    this.spanUs = spanUs;
    this.slew = slew;
    this.samplesSeen = 0;
    this.routeChanges = 0;
    this._t = [];
    this._o = [];
    this._r = [];
    this._dirty = false;
    this._fit = null;
    this._lagUs = 0.0;
    this._lagT = 0.0;
    this._burstLeft = CF_BURST_SAMPLES;
  }

  /** One exchange: local send t1, peer stamps t2/t3, local receipt t4 (µs). */
  addSample(t1, t2, t3, t4) {
    const offset = ((t2 - t1) + (t3 - t4)) / 2.0;
    const delay = (t4 - t1) - (t3 - t2);
    if (!Number.isFinite(offset) || !(delay >= 0)) return null;
    this.add(0.5 * (t1 + t4), offset, delay);
    return [offset, delay];
  }

  add(t, offset, delay) {
    if (this._t.length && t < this._t[this._t.length - 1]) return;
    const before = this.slew && this._t.length ? this._reportAt(t) : null;
    this._t.push(t);
    this._o.push(offset);
    this._r.push(delay);
    this.samplesSeen += 1;
    if (this._burstLeft > 0) this._burstLeft -= 1;
    while (this._t.length > this.window || t - this._t[0] > this.spanUs) {
      this._t.shift();
      this._o.shift();
      this._r.shift();
    }
    this._dirty = true;
    if (before !== null) {
      this._refit();
      const now = this._lineAt(t);
      this._lagUs = before > now ? before - now : 0.0;
      this._lagT = t;
    }
  }

  reset() {
    this._t = [];
    this._o = [];
    this._r = [];
    this._fit = null;
    this._dirty = false;
    this._lagUs = 0.0;
    this._burstLeft = CF_BURST_SAMPLES;
  }

  /** The estimate at the newest sample (null before any). */
  get offsetUs() {
    return this._t.length ? this._reportAt(this._t[this._t.length - 1]) : null;
  }

  /** The estimate at local time t µs (null before any sample). */
  offsetAt(t) {
    return this._t.length ? this._reportAt(t) : null;
  }

  get driftPpm() {
    if (!this.trackDrift || !this._t.length) return null;
    return this._getFit()[2] * 1e6;
  }

  get errorUs() {
    return this._t.length ? this._getFit()[4] : null;
  }

  get delayUs() {
    return this._r.length ? Math.min(...this._r) : null;
  }

  get latestDelayUs() {
    return this._r.length ? this._r[this._r.length - 1] : null;
  }

  get samples() {
    return this._t.length;
  }

  /** True while the filter wants pings at the burst rate. */
  get bursting() {
    return this._burstLeft > 0;
  }

  /** When to ping next, µs: a burst after a join or a suspected change, then steady. */
  get pingIntervalUs() {
    if (this._burstLeft > 0) return CF_BURST_INTERVAL_US;
    if (this._t.length && this._getFit()[5] > CF_NOISY_SCALE_US) return CF_NOISY_INTERVAL_US;
    return CF_STEADY_INTERVAL_US;
  }

  _reportAt(t) {
    let value = this._lineAt(t);
    if (this._lagUs > 0.0) {
      const left = this._lagUs - CF_SLEW * (t - this._lagT);
      if (left > 0.0) value += left;
    }
    return value;
  }

  _lineAt(t) {
    const fit = this._getFit();
    return fit[1] + fit[2] * (t - fit[0]);
  }

  _getFit() {
    if (this._dirty || this._fit === null) this._refit();
    return this._fit;
  }

  _refit() {
    this._dirty = false;
    this._fit = fitSamples(this._t, this._o, this._r, this.trackDrift);
    if (this._change()) {
      this.routeChanges += 1;
      const keep = this._t.length - CF_CHANGE_RUN;
      this._t.splice(0, keep);
      this._o.splice(0, keep);
      this._r.splice(0, keep);
      this._fit = fitSamples(this._t, this._o, this._r, this.trackDrift);
      this._burstLeft = CF_BURST_SAMPLES;
    } else if (this._rttJump()) {
      this._burstLeft = Math.max(this._burstLeft, Math.floor(CF_BURST_SAMPLES / 2));
    }
  }

  _change() {
    const n = this._t.length;
    if (n < 2 * CF_CHANGE_RUN) return false;
    const fit = this._fit;
    const limit = Math.max(CF_CHANGE_SCALES * fit[5], CF_CHANGE_FLOOR_US);
    let side = 0;
    for (let i = n - CF_CHANGE_RUN; i < n; i++) {
      const e = this._o[i] - (fit[1] + fit[2] * (this._t[i] - fit[0]));
      const s = e > limit ? 1 : e < -limit ? -1 : 0;
      if (s === 0 || (side !== 0 && s !== side)) return false;
      side = s;
    }
    return true;
  }

  _rttJump() {
    const n = this._r.length;
    if (n < 2 * CF_CHANGE_RUN) return false;
    let lo = Infinity;
    for (const v of this._r) if (v < lo) lo = v;
    let recent = Infinity;
    for (let i = n - CF_CHANGE_RUN; i < n; i++) if (this._r[i] < recent) recent = this._r[i];
    return recent - lo > Math.max(4.0 * typicalExcess(this._r, lo), 4.0 * CF_CHANGE_FLOOR_US);
  }
}

export class BbxClient {
  /**
   * @param {object} options
   * @param {string} options.url WebSocket URL, e.g. "ws://192.168.1.10:8080/".
   * @param {string} options.roomCode the room's code.
   * @param {string} [options.roomKey] the room's key from its link (`&key=`): a join
   *   that carries it is never rate limited, unlike a typed code.
   * @param {string} [options.clientName] shown to the host.
   * @param {boolean} [options.reconnect=true] reconnect after a lost connection.
   * @param {number} [options.reconnectDelay=1000] first retry delay (ms); doubles.
   * @param {number} [options.maxReconnectAttempts=Infinity] give up after this many.
   * @param {number} [options.pingInterval=250] ms between clock-sync pings once
   *   synced. The clock filter sets the schedule: a burst of 50 ms pings after a join
   *   or a suspected route change, then 250 ms (100 ms on a noisy path); a value
   *   above 250 slows the steady part down to it.
   * @param {number} [options.connectionTimeout=10000] ms without a pong = dead socket.
   */
  constructor(options) {
    const o = options || {};
    if (!o.url || !o.roomCode) throw new TypeError("BbxClient needs url and roomCode");
    this.url = o.url;
    this.roomCode = String(o.roomCode);
    this.clientName = o.clientName;
    this.roomKey = o.roomKey;
    this.reconnect = o.reconnect !== false;
    this.reconnectDelay = o.reconnectDelay ?? 1000;
    this.maxReconnectAttempts = o.maxReconnectAttempts ?? Infinity;
    this.pingInterval = o.pingInterval ?? 250;
    // An explicit pingInterval above the filter's steady 250 ms is kept as a floor.
    this._steadyFloor = o.pingInterval !== undefined && o.pingInterval > 250 ? o.pingInterval : 0;
    this.connectionTimeout = o.connectionTimeout ?? 10000;

    /** Current parameter values and ranges, by name: {value, min, max}. */
    this.state = {};
    /** Trigger names the host declared (from the state message). */
    this.triggers = [];
    this.nodeId = null;
    /** Latest round trip in ms (null before the first pong). */
    this.latency = null;
    /** Server clock minus local clock, in µs (null before the first pong). */
    this.clockOffset = null;
    this.isConnected = false;
    this.isReconnecting = false;

    this._listeners = new Map();
    this._ws = null;
    this._attempts = 0;
    /** The clock filter: server minus local clock from the pings. */
    this.clock = new ClockFilter();
    this._last = null; // [client_time, server_time, receive_time] of the last pong
    /** Parameter changes made while offline (name -> value), sent on reconnect. */
    this.unsent = new Map();
    this._resync = false; // the next `state` follows a (re)join: apply `unsent` to it
    this._pingTimer = null;
    this._retryTimer = null;
    this._lastPong = 0;
    this._closedByUser = false;
    this._roomClosed = false;
    this._session = this._loadSession();
    this._onWake = () => this._wake();
    if (typeof document !== "undefined") {
      document.addEventListener("visibilitychange", this._onWake);
    }
    if (typeof window !== "undefined") window.addEventListener("online", this._onWake);
  }

  // ---- public API ----

  /** Connects and joins; resolves with the welcome message. */
  connect() {
    this._closedByUser = false;
    this._roomClosed = false;
    return this._open(false);
  }

  /** Leaves the room and closes; no reconnection. */
  disconnect() {
    this._closedByUser = true;
    this._stopTimers();
    if (this._ws && this._ws.readyState === WebSocket.OPEN) {
      this._send({ type: "leave" });
    }
    if (this._ws) this._ws.close(1000, "leave");
    this.unsent.clear();
    this._forgetSession();
    this._setConnected(false);
  }

  /** Sends a parameter change; `at` is server µs (see toServerTime). */
  setParam(param, value, at) {
    const msg = { type: "param", param, value };
    if (at !== undefined && at !== null) msg.at = Math.max(0, Math.round(at));
    if (this.state[param]) this.state[param].value = value;
    if (this._send(msg)) return true;
    if (!this._closedByUser && !this._roomClosed) {
      // Offline: the latest value per parameter goes out on reconnect (without its
      // `at`, which was meant for a moment that has passed).
      this.unsent.set(param, value);
      this._emit("unsent", this.unsent.size);
    }
    return false;
  }

  /**
   * Sends a trigger: trigger(name), trigger(name, at), trigger(name, {x, y, at}) or
   * trigger(name, at, {x, y}).
   */
  trigger(name, at, coords) {
    const msg = { type: "trigger", name };
    let opts = coords || {};
    if (at !== null && typeof at === "object") {
      opts = at;
      at = at.at;
    }
    if (opts.x !== undefined && opts.y !== undefined) {
      msg.x = opts.x;
      msg.y = opts.y;
    }
    if (at !== undefined && at !== null) msg.at = Math.max(0, Math.round(at));
    return this._send(msg);
  }

  /** Asks the server for a fresh `state`. */
  requestSync() {
    return this._send({ type: "sync" });
  }

  /** Local time (performance.now() ms) → server time (integer µs). */
  toServerTime(localMs) {
    return Math.round(localMs * 1000 + (this.clock.offsetAt(localMs * 1000) ?? 0));
  }

  /** Server time (µs) → local time (performance.now() ms). */
  toLocalTime(serverUs) {
    // Solves local + offsetAt(local) = serverUs. The offset changes by the drift rate
    // (ppm) per unit of local time, so each step shrinks the error by that factor; one
    // step was not enough far from now, where the offset (seconds to hours between
    // the two clocks' origins) times a young, noisy drift estimate reached 0.3 ms.
    let local = serverUs - (this.clockOffset ?? 0);
    for (let i = 0; i < 4; i++) local = serverUs - (this.clock.offsetAt(local) ?? 0);
    return local / 1000;
  }

  on(event, fn) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(fn);
    return this;
  }

  off(event, fn) {
    this._listeners.get(event)?.delete(fn);
    return this;
  }

  once(event, fn) {
    const wrapper = (...args) => {
      this.off(event, wrapper);
      fn(...args);
    };
    return this.on(event, wrapper);
  }

  removeAllListeners(event) {
    if (event === undefined) this._listeners.clear();
    else this._listeners.delete(event);
    return this;
  }

  // ---- connection ----

  _open(isRetry) {
    return new Promise((resolve, reject) => {
      let settled = false;
      const ws = new WebSocket(this.url);
      this._ws = ws;
      ws.onopen = () => {
        const join = { type: "join", room_code: this.roomCode };
        if (this.clientName) join.client_name = this.clientName;
        if (this.roomKey) join.key = this.roomKey;
        if (this._session) join.session = this._session;
        ws.send(JSON.stringify(join));
      };
      ws.onmessage = (ev) => {
        // A socket we already replaced (a wake-up retried while an attempt was in
        // flight): its messages are not ours any more.
        if (ws !== this._ws) {
          try {
            ws.close(1000, "superseded");
          } catch {
            // already closing
          }
          return;
        }
        let msg;
        try {
          msg = JSON.parse(ev.data);
        } catch {
          return;
        }
        if (!settled && msg.type === "welcome") {
          settled = true;
          resolve(msg);
        } else if (!settled && msg.type === "error" && FATAL_JOIN_ERRORS.has(msg.code)) {
          settled = true;
          this._closedByUser = true; // a wrong code is not worth retrying
          const err = new Error(msg.message || msg.code);
          err.code = msg.code;
          if (isRetry) this._rejoinRefused(ws, msg);
          else reject(err);
        }
        this._handle(msg);
      };
      ws.onclose = (ev) => {
        if (ws !== this._ws) return; // a socket we already gave up on
        if (!settled) {
          settled = true;
          const err = new Error(`connection closed (${ev.code})`);
          err.code = "CONNECTION_FAILED";
          if (!isRetry) reject(err);
        }
        this._connectionLost(ev.code, ev.reason);
      };
      ws.onerror = () => {
        // onclose follows and decides.
      };
    });
  }

  _handle(msg) {
    switch (msg.type) {
      case "welcome":
        this.nodeId = msg.node_id;
        if (msg.session) this._saveSession(msg.session);
        this._attempts = 0;
        this.isReconnecting = false;
        this._setConnected(true);
        this._lastPong = performance.now();
        this.clock.reset();
        this._last = null;
        this._resync = true;
        this._startPings();
        this._emit("connected", msg);
        break;
      case "state":
        this.state = {};
        for (const p of msg.params || []) {
          // value, min, max, and the display fields the host declared (label, unit,
          // step, integer, log, group) when there are any.
          const { name, ...entry } = p;
          this.state[name] = entry;
        }
        this.triggers = msg.triggers || this.triggers;
        if (this._resync) this._sendUnsent();
        this._emit("state", this.state, msg);
        break;
      case "update":
        if (this.state[msg.param]) this.state[msg.param].value = msg.value;
        else this.state[msg.param] = { value: msg.value, min: undefined, max: undefined };
        this._emit("update", msg.param, msg.value);
        break;
      case "pong":
        this._onPong(msg);
        break;
      case "visualization":
        this._emit("visualization", msg.data, msg.stream || 0);
        break;
      case "error":
        this._emit("error", msg);
        break;
      case "closed":
        this._roomClosed = true;
        this._forgetSession();
        this._emit("roomClosed", msg);
        break;
      default:
        break;
    }
  }

  _send(msg) {
    if (!this._ws || this._ws.readyState !== WebSocket.OPEN || !this.isConnected) return false;
    this._ws.send(JSON.stringify(msg));
    return true;
  }

  _sendUnsent() {
    // Right after a (re)join: what changed offline wins over the state just received,
    // and goes to the server now.
    this._resync = false;
    if (this.unsent.size === 0) return;
    const sent = [];
    for (const [param, value] of [...this.unsent]) {
      if (this.state[param]) this.state[param].value = value;
      if (!this._send({ type: "param", param, value })) break; // kept for next time
      this.unsent.delete(param);
      sent.push([param, value]);
    }
    this._emit("unsent", this.unsent.size);
    if (sent.length) this._emit("flushed", sent);
  }

  _rejoinRefused(ws, msg) {
    // A reconnect the server refused: the room is gone (or full, or we are
    // throttled). Retrying the same join cannot help; say so and stop.
    this._stopTimers();
    clearTimeout(this._retryTimer);
    this.isReconnecting = false;
    this._forgetSession();
    this._ws = null;
    try {
      ws.close(1000, "rejoin refused");
    } catch {
      // already closing
    }
    this._setConnected(false);
    this._emit(REJOIN_REFUSED[msg.code], { ...msg, unsent: this.unsent.size });
  }

  _connectionLost(code, reason) {
    this._stopTimers();
    const was = this.isConnected;
    this._setConnected(false);
    if (was) this._emit("disconnected", { code, reason });
    if (!this._closedByUser && !this._roomClosed && this.reconnect) this._scheduleRetry();
  }

  _setConnected(v) {
    this.isConnected = v;
  }

  _scheduleRetry() {
    if (this._attempts >= this.maxReconnectAttempts) {
      this.isReconnecting = false;
      this._emit("error", { code: "RECONNECT_FAILED", message: "gave up reconnecting" });
      return;
    }
    const base = Math.min(MAX_BACKOFF_MS, this.reconnectDelay * 2 ** this._attempts);
    const delay = base / 2 + Math.random() * base / 2;
    this._attempts += 1;
    this.isReconnecting = true;
    this._emit("reconnecting", { attempt: this._attempts, delay });
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => this._retry(), delay);
  }

  _retry() {
    if (this.isConnected || this._closedByUser || this._roomClosed) return;
    const old = this._ws;
    if (old && old.readyState !== WebSocket.CLOSED) {
      // An attempt still in flight (a wake-up cut the wait short). Its join may be on
      // the wire already; if the server saw it after a new attempt's join, the seat
      // would move back to it and what the new one flushed would be lost with the
      // seat. So end it first, and open the next once the server has seen it end.
      this._ws = null;
      let next = () => {
        next = () => {};
        clearTimeout(guard);
        this._retry();
      };
      const guard = setTimeout(() => next(), SUPERSEDE_WAIT_MS); // a dead link may never say
      old.addEventListener("close", () => next(), { once: true });
      try {
        old.close(1000, "retrying");
      } catch {
        // already closing
      }
      return;
    }
    this._open(true).catch(() => {});
  }

  _wake() {
    const visible = typeof document === "undefined" || document.visibilityState === "visible";
    if (!visible || this._closedByUser || this._roomClosed || !this.reconnect) return;
    if (this.isConnected) {
      this._ping(); // a sleeping phone's socket may be dead: find out now
    } else if (this.isReconnecting) {
      clearTimeout(this._retryTimer);
      this._retry();
    }
  }

  // ---- clock sync ----

  _startPings() {
    this._stopTimers();
    this._ping();
  }

  _stopTimers() {
    clearTimeout(this._pingTimer);
    this._pingTimer = null;
  }

  _ping() {
    if (performance.now() - this._lastPong > this.connectionTimeout && this._ws) {
      // No pong for too long: the socket is dead even if the browser has not noticed.
      const dead = this._ws;
      this._ws = null;
      try {
        dead.close(4000, "pong timeout");
      } catch {
        // already closing
      }
      this._connectionLost(4000, "pong timeout");
      return;
    }
    // The last exchange and our estimate ride along, so the server's view of this
    // client's clock is made from the same exchanges (servers that predate them
    // ignore extra fields).
    const msg = { type: "ping", client_time: nowUs() };
    if (this._last) {
      msg.last = this._last;
      msg.offset = this.clock.offsetUs;
      msg.rtt = this.clock.latestDelayUs;
    }
    this._send(msg);
    clearTimeout(this._pingTimer);
    // The filter's schedule; pingInterval (when set above its steady 250 ms) slows
    // the steady part down.
    const next = this.clock.bursting
      ? CF_BURST_INTERVAL_US / 1000
      : Math.max(this.clock.pingIntervalUs / 1000, this._steadyFloor);
    this._pingTimer = setTimeout(() => this._ping(), next);
  }

  _onPong(msg) {
    const t4 = nowUs();
    const t1 = Number(msg.client_time);
    const server = Number(msg.server_time);
    this._lastPong = performance.now();
    const sample = this.clock.addSample(t1, server, server, t4);
    if (sample === null) return;
    this._last = [t1, server, t4];
    this.clockOffset = this.clock.offsetAt(t4);
    this.latency = sample[1] / 1000;
    this._emit("latency", this.latency, this.clockOffset);
  }

  // ---- session (resume the same node id after a drop or a reload) ----

  _key() {
    return `bbx-session:${this.url}:${this.roomCode}`;
  }

  _loadSession() {
    try {
      return sessionStorage.getItem(this._key());
    } catch {
      return null;
    }
  }

  _saveSession(token) {
    this._session = token;
    try {
      sessionStorage.setItem(this._key(), token);
    } catch {
      // storage unavailable (private mode): the in-memory token still works
    }
  }

  _forgetSession() {
    this._session = null;
    try {
      sessionStorage.removeItem(this._key());
    } catch {
      // nothing stored
    }
  }

  _emit(event, ...args) {
    for (const fn of [...(this._listeners.get(event) || [])]) {
      try {
        fn(...args);
      } catch (err) {
        console.error(`bbx-client: ${event} listener failed`, err);
      }
    }
  }
}

export default BbxClient;
