// The phone control page: join by code, then sliders, pads and an XY pad built from
// the server's `state` message. Uses the same ES module any page can import.
import { BbxClient } from "/bbx-client.js";

const $ = (id) => document.getElementById(id);
const screens = ["join-screen", "control-screen", "closed-screen"];
let client = null;
const sliders = new Map(); // name -> {input, output, dragging}

function show(id) {
  for (const s of screens) $(s).hidden = s !== id;
}

function setStatus(state, text) {
  $("status").dataset.state = state;
  $("status-text").textContent = text;
}

function wsUrl() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  return `${proto}//${location.host}/`;
}

function format(v) {
  const a = Math.abs(v);
  return a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : v.toFixed(3);
}

// A parameter's slider works on a position 0..1000; these map it to the value and
// back (linear, or logarithmic for `log`), snapping to `step` or whole numbers.
const STEPS = 1000;

function toValue(p, pos) {
  const f = pos / STEPS;
  let v = p.log ? p.min * (p.max / p.min) ** f : p.min + f * (p.max - p.min);
  if (p.step) v = p.min + Math.round((v - p.min) / p.step) * p.step;
  if (p.integer) v = Math.round(v);
  return Math.min(p.max, Math.max(p.min, v));
}

function toPos(p, v) {
  if (p.max === p.min) return 0;
  const f = p.log ? Math.log(v / p.min) / Math.log(p.max / p.min) : (v - p.min) / (p.max - p.min);
  return Math.round(Math.min(1, Math.max(0, f)) * STEPS);
}

function shown(p, v) {
  const text = p.integer ? String(Math.round(v)) : p.step && p.step >= 1 ? v.toFixed(0) : format(v);
  return p.unit ? `${text} ${p.unit}` : text;
}

function buildSlider(name, p) {
  const wrap = document.createElement("div");
  wrap.className = "param";
  const row = document.createElement("div");
  row.className = "row";
  const label = document.createElement("label");
  label.textContent = p.label || name;
  label.htmlFor = `param-${name}`;
  const output = document.createElement("output");
  output.textContent = shown(p, p.value);
  output.dataset.testid = `value-${name}`;
  row.append(label, output);
  const track = document.createElement("div");
  track.className = "track";
  track.dataset.testid = `track-${name}`;
  const input = document.createElement("input");
  input.type = "range";
  input.id = `param-${name}`;
  input.min = 0;
  input.max = STEPS;
  input.step = 1;
  input.value = toPos(p, p.value);
  input.dataset.testid = `slider-${name}`;
  track.append(input);
  const entry = { input, output, spec: p, dragging: false, queued: false };
  const set = (value) => {
    output.textContent = shown(p, value);
    if (entry.queued) return; // one message per frame, the latest value
    entry.queued = true;
    requestAnimationFrame(() => {
      entry.queued = false;
      client?.setParam(name, toValue(p, Number(input.value)));
    });
  };
  // Keyboard (and assistive tech) use the input itself.
  input.addEventListener("input", () => set(toValue(p, Number(input.value))));
  // Pointers: only a deliberate horizontal drag moves the thumb. The track lets the
  // browser pan vertically (touch-action: pan-y), so a vertical swipe that starts here
  // scrolls the page and is cancelled for us.
  let drag = null;
  const follow = (ev) => {
    const r = input.getBoundingClientRect();
    const f = Math.min(1, Math.max(0, (ev.clientX - r.left) / r.width));
    const value = toValue(p, f * STEPS);
    input.value = toPos(p, value);
    set(value);
  };
  track.addEventListener("pointerdown", (ev) => {
    drag = { id: ev.pointerId, x: ev.clientX, y: ev.clientY, on: ev.pointerType === "mouse" };
    if (drag.on) {
      track.setPointerCapture(ev.pointerId);
      entry.dragging = true;
      follow(ev);
    }
  });
  track.addEventListener("pointermove", (ev) => {
    if (!drag || ev.pointerId !== drag.id) return;
    if (!drag.on) {
      const dx = Math.abs(ev.clientX - drag.x);
      const dy = Math.abs(ev.clientY - drag.y);
      if (dx < 8 || dx <= dy) return;
      drag.on = true;
      entry.dragging = true;
      track.setPointerCapture(ev.pointerId);
    }
    follow(ev);
  });
  const end = () => {
    drag = null;
    entry.dragging = false;
  };
  track.addEventListener("pointerup", end);
  track.addEventListener("pointercancel", end);
  wrap.append(row, track);
  sliders.set(name, entry);
  return wrap;
}

function buildControls(state, triggers, page) {
  const params = $("params");
  params.replaceChildren();
  sliders.clear();
  const groups = new Map(); // group name -> container, in order of first appearance
  for (const [name, p] of Object.entries(state)) {
    if (p.min === undefined || p.max === undefined) continue;
    let parent = params;
    if (p.group) {
      if (!groups.has(p.group)) {
        const box = document.createElement("div");
        box.className = "group";
        const h = document.createElement("h2");
        h.textContent = p.group;
        box.append(h);
        params.append(box);
        groups.set(p.group, box);
      }
      parent = groups.get(p.group);
    }
    parent.append(buildSlider(name, p));
  }
  const pads = $("pads");
  pads.replaceChildren();
  $("pads-title").hidden = triggers.length === 0;
  const labels = (page && page.trigger_labels) || {};
  for (const name of triggers) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = labels[name] || name;
    b.dataset.testid = `pad-${name}`;
    b.addEventListener("pointerdown", (ev) => {
      ev.preventDefault();
      client?.trigger(name);
      b.classList.add("hit");
      setTimeout(() => b.classList.remove("hit"), 120);
    });
    pads.append(b);
  }
  const xy = (page && page.xy) || "last";
  const box = $("xy-box");
  box.hidden = xy === "off";
  if (xy === "first") $("params").before(box);
  else $("pads").after(box);
  const title = (page && page.title) || "Controller";
  $("title").textContent = title;
  document.title = title;
  $("instruction").textContent = (page && page.instruction) || "";
}

function setupXY() {
  const pad = $("xy");
  const puck = pad.querySelector(".puck");
  let queued = null;
  const send = (ev) => {
    const r = pad.getBoundingClientRect();
    const x = Math.min(1, Math.max(0, (ev.clientX - r.left) / r.width));
    const y = Math.min(1, Math.max(0, 1 - (ev.clientY - r.top) / r.height));
    puck.style.left = `${x * 100}%`;
    puck.style.top = `${(1 - y) * 100}%`;
    if (queued) {
      queued = { x, y };
      return;
    }
    queued = { x, y };
    requestAnimationFrame(() => {
      client?.trigger("xy", { x: queued.x, y: queued.y });
      queued = null;
    });
  };
  pad.addEventListener("pointerdown", (ev) => {
    pad.setPointerCapture(ev.pointerId);
    send(ev);
  });
  pad.addEventListener("pointermove", (ev) => {
    if (ev.buttons || ev.pointerType === "touch") send(ev);
  });
}

async function join(code, name, key) {
  $("join-error").textContent = "";
  client?.disconnect();
  client = new BbxClient({
    url: wsUrl(),
    roomCode: code,
    roomKey: key || undefined,
    clientName: name || undefined,
  });
  window.bbxClient = client; // handy from the console (and for tests)
  client.on("state", (state, msg) => buildControls(state, client.triggers, msg.page));
  client.on("update", (param, value) => {
    const s = sliders.get(param);
    if (!s) return;
    s.output.textContent = shown(s.spec, value);
    if (!s.dragging) s.input.value = toPos(s.spec, value);
  });
  client.on("latency", (ms) => { $("latency").textContent = `${ms.toFixed(0)} ms`; });
  client.on("connected", () => {
    setStatus("connected", "connected");
    $("reconnecting").hidden = true;
    show("control-screen");
  });
  client.on("reconnecting", () => {
    setStatus("reconnecting", "reconnecting…");
    $("reconnecting").hidden = false;
  });
  client.on("disconnected", () => {
    $("latency").textContent = "";
    if ($("status").dataset.state !== "closed") setStatus("offline", "disconnected");
  });
  client.on("roomClosed", () => {
    setStatus("closed", "room closed");
    show("closed-screen");
  });
  client.on("error", (e) => {
    if (e.code === "RECONNECT_FAILED") setStatus("offline", "offline");
  });
  client.on("unsent", (n) => {
    $("unsent").textContent = n ? ` ${n} change${n > 1 ? "s" : ""} will be sent when back.` : "";
  });
  // A reconnect the server refused: back to the join form with what happened.
  const refused = (text, clearCode) => () => {
    const gone = client;
    client = null;
    gone?.disconnect();
    $("reconnecting").hidden = true;
    setStatus("idle", "not connected");
    if (clearCode) $("code").value = "";
    const url = new URL(location.href);
    url.searchParams.delete("room");
    url.searchParams.delete("key");
    history.replaceState(null, "", url);
    show("join-screen");
    $("join-error").textContent = text;
  };
  client.on("roomEnded", refused("This room has ended. Enter the new code.", true));
  client.on("roomFull", refused("The room is full now. Try again later.", false));
  client.on("rateLimited", refused("Too many attempts. Wait a minute and join again.", false));
  client.on("serverFull", refused("The server is full. Try again soon.", false));
  setStatus("connecting", "connecting…");
  try {
    await client.connect();
    const url = new URL(location.href);
    url.searchParams.set("room", code);
    if (!key) url.searchParams.delete("key");
    history.replaceState(null, "", url);
  } catch (err) {
    const messages = {
      INVALID_ROOM: "No room with that code. Check it and try again.",
      ROOM_FULL: "That room is full.",
      RATE_LIMITED: "Too many wrong codes. Wait a minute and try again.",
      SERVER_FULL: "The server is full. Try again soon.",
    };
    if (err.code && messages[err.code]) {
      client.disconnect();
      setStatus("idle", "not connected");
      $("join-error").textContent = messages[err.code];
    } else {
      // Server not reachable: the client keeps retrying with backoff; say so instead
      // of showing a blank page.
      show("control-screen");
      setStatus("reconnecting", "reconnecting…");
      $("reconnecting").hidden = false;
    }
  }
}

$("join-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const code = $("code").value.trim();
  if (!/^[0-9]+$/.test(code)) {
    $("join-error").textContent = "The code is the digits shown by the host.";
    return;
  }
  // The link's key belongs to the link's room only.
  const linked = linkParams.get("room") === code ? linkParams.get("key") : null;
  join(code, $("name").value.trim(), linked);
});

$("rejoin").addEventListener("click", () => {
  client?.disconnect();
  client = null;
  show("join-screen");
  setStatus("idle", "not connected");
});

setupXY();
const linkParams = new URLSearchParams(location.search);
const room = linkParams.get("room");
if (room) $("code").value = room;
if (room && /^[0-9]+$/.test(room)) join(room, "", linkParams.get("key"));

if ("serviceWorker" in navigator && window.isSecureContext) {
  navigator.serviceWorker.register("/sw.js").catch(() => {});
}
$("footer").textContent = window.isSecureContext ? "" : "Plain http: works, but cannot be installed as an app.";
