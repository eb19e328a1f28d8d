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
//  - clock offset from a window of pings, trusting the lowest round trip (no 32-bit
//    truncation anywhere: times are plain JS numbers of microseconds);
//  - reconnection with exponential backoff and jitter that resumes the same node id
//    with the server's session token (also across a page reload, via sessionStorage);
//  - reconnects at once when the page becomes visible again or the network returns;
//  - a pong timeout that notices a dead socket instead of waiting for TCP.
//
// Local time is performance.now() (milliseconds, monotonic); server time is the
// server clock in integer microseconds.

const CLOCK_WINDOW = 8;
const MAX_BACKOFF_MS = 30000;
const FATAL_JOIN_ERRORS = new Set(["INVALID_ROOM", "ROOM_FULL", "RATE_LIMITED", "SERVER_FULL"]);

function nowUs() {
  return performance.now() * 1000;
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
   * @param {number} [options.pingInterval=2000] ms between clock-sync pings.
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
    this.pingInterval = o.pingInterval ?? 2000;
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
    this._samples = [];
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
    this._forgetSession();
    this._setConnected(false);
  }

  /** Sends a parameter change; `at` is server µs (see toServerTime). */
  setParam(param, value, at) {
    const msg = { type: "param", param, value };
    if (at !== undefined && at !== null) msg.at = Math.max(0, Math.round(at));
    if (this.state[param]) this.state[param].value = value;
    return this._send(msg);
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
    return Math.round(localMs * 1000 + (this.clockOffset ?? 0));
  }

  /** Server time (µs) → local time (performance.now() ms). */
  toLocalTime(serverUs) {
    return (serverUs - (this.clockOffset ?? 0)) / 1000;
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
          this._closedByUser = !isRetry; // a wrong code is not worth retrying
          const err = new Error(msg.message || msg.code);
          err.code = msg.code;
          reject(err);
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
        this._samples = [];
        this._startPings();
        this._emit("connected", msg);
        break;
      case "state":
        this.state = {};
        for (const p of msg.params || []) {
          this.state[p.name] = { value: p.value, min: p.min, max: p.max };
        }
        this.triggers = msg.triggers || this.triggers;
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
        this._emit("visualization", msg.data);
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
    this._pingTimer = setInterval(() => this._ping(), this.pingInterval);
  }

  _stopTimers() {
    clearInterval(this._pingTimer);
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
    this._send({ type: "ping", client_time: nowUs() });
  }

  _onPong(msg) {
    const t4 = nowUs();
    const t1 = Number(msg.client_time);
    const server = Number(msg.server_time);
    this._lastPong = performance.now();
    const delay = t4 - t1;
    if (!(delay >= 0)) return;
    // Offset of the server clock from ours, assuming symmetric paths.
    const offset = server - (t1 + t4) / 2;
    this._samples.push({ offset, delay });
    if (this._samples.length > CLOCK_WINDOW) this._samples.shift();
    let best = this._samples[0];
    for (const s of this._samples) if (s.delay <= best.delay) best = s;
    this.clockOffset = best.offset;
    this.latency = delay / 1000;
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
