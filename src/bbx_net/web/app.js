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
  return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(3);
}

function buildControls(state, triggers) {
  const params = $("params");
  params.replaceChildren();
  sliders.clear();
  for (const [name, p] of Object.entries(state)) {
    if (p.min === undefined || p.max === undefined) continue;
    const wrap = document.createElement("div");
    wrap.className = "param";
    const row = document.createElement("div");
    row.className = "row";
    const label = document.createElement("label");
    label.textContent = name;
    label.htmlFor = `param-${name}`;
    const output = document.createElement("output");
    output.textContent = format(p.value);
    output.dataset.testid = `value-${name}`;
    row.append(label, output);
    const input = document.createElement("input");
    input.type = "range";
    input.id = `param-${name}`;
    input.min = p.min;
    input.max = p.max;
    input.step = (p.max - p.min) / 1000 || "any";
    input.value = p.value;
    input.dataset.testid = `slider-${name}`;
    const entry = { input, output, dragging: false, queued: false };
    input.addEventListener("pointerdown", () => { entry.dragging = true; });
    const release = () => { entry.dragging = false; };
    input.addEventListener("pointerup", release);
    input.addEventListener("pointercancel", release);
    input.addEventListener("input", () => {
      output.textContent = format(Number(input.value));
      if (entry.queued) return; // one message per frame, the latest value
      entry.queued = true;
      requestAnimationFrame(() => {
        entry.queued = false;
        client?.setParam(name, Number(input.value));
      });
    });
    wrap.append(row, input);
    params.append(wrap);
    sliders.set(name, entry);
  }
  const pads = $("pads");
  pads.replaceChildren();
  $("pads-title").hidden = triggers.length === 0;
  for (const name of triggers) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = name;
    b.dataset.testid = `pad-${name}`;
    b.addEventListener("pointerdown", (ev) => {
      ev.preventDefault();
      client?.trigger(name);
      b.classList.add("hit");
      setTimeout(() => b.classList.remove("hit"), 120);
    });
    pads.append(b);
  }
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
  client.on("state", (state) => buildControls(state, client.triggers));
  client.on("update", (param, value) => {
    const s = sliders.get(param);
    if (!s) return;
    s.output.textContent = format(value);
    if (!s.dragging) s.input.value = value;
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
