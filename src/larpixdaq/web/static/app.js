// The LArPix DAQ page: every button is one Operator request to the core, sent through
// POST /api/command/<command>; everything shown arrives on the WebSocket /ws.
import { LEGEND, describe, drawView, tileKey, tileLabel, tilePlaces, viewTiles } from "./mapview.js";
import { MODES, prepareLayout } from "./maps.js";
import { drawHistogram, drawLine, fmt } from "./plots.js";
import { $, el } from "./dom.js";
import { docNodes, paramValue, routineValue } from "./forms.js";
import { editedRegisters, markDifferences, showRegisters } from "./registers.js";
import { refreshRoutineResults } from "./results.js";
import {
  count, duration, renderAlarms, renderLog, renderRecent, renderRuns, storageCounts,
} from "./tables.js";

const S = {
  status: null, connected: false, actions: {}, runs: [], monitor: null, monitorNote: "",
  layout: null, paused: false, board: "", tile: "", log: new Map(), ws: null,
  session: { user: null, role: "viewer", csrf: null }, ownClients: new Set(),
  view: "tile", regions: [], configs: new Map(), configLoading: new Set(), sentView: "",
  routines: new Map(), routinesDone: new Set(), pointer: null,
};

// Who this page acts as: a logged-in user (with the session's CSRF token, sent with every
// POST) or an anonymous viewer. The core decides what each may do.
async function loadSession() {
  try {
    S.session = await (await fetch("/api/session")).json();
  } catch (err) {
    return;
  }
  const s = S.session;
  $("who").textContent = s.user ? `${s.user} (${s.role})` : `not logged in (${s.role || "no access"})`;
  $("login-link").hidden = Boolean(s.user);
  $("btn-logout").hidden = !s.user;
  if (s.expired) showError("your session has expired; log in again");
}

async function logout() {
  await fetch("/logout", { method: "POST", headers: { "X-CSRF-Token": S.session.csrf || "" } });
  await loadSession();
}

// ------------------------------------------------------------------ talking to the server
async function command(name, params = {}) {
  let body;
  try {
    const headers = { "Content-Type": "application/json" };
    if (S.session.csrf) headers["X-CSRF-Token"] = S.session.csrf;
    const r = await fetch(`/api/command/${encodeURIComponent(name)}`, {
      method: "POST", headers, body: JSON.stringify(params),
    });
    body = await r.json();
    if (r.status === 401) loadSession();
  } catch (err) {
    body = { success: false, message: `the web server did not answer: ${err}` };
  }
  if (!body.success) showError(`${name}: ${body.message}`);
  return body;
}

function showError(text) {
  const b = $("banner");
  b.replaceChildren(el("span", { text }), el("button", { class: "small", text: "dismiss",
    onclick: () => { b.hidden = true; } }));
  b.hidden = false;
}

function connect() {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  S.ws = ws;
  ws.onmessage = (ev) => handle(JSON.parse(ev.data));
  ws.onopen = () => { S.sentView = ""; sendView(); };
  ws.onclose = () => {
    setConnection(false, "web server unreachable; reconnecting…");
    setTimeout(connect, 1000);
  };
}

function handle(msg) {
  switch (msg.type) {
    case "hello":
      S.log.clear();
      S.ownClients = new Set(msg.clients || []);
      for (const e of msg.log) S.log.set(e.id, e);
      renderLog(S.log);
      renderStopRoutine();
      break;
    case "status":
      S.connected = msg.connected;
      setConnection(msg.connected, msg.connected ? `core ${msg.core}` : `core ${msg.core}: ${msg.message}`);
      if (msg.connected) { S.status = msg.data; renderStatus(); }
      break;
    case "actions": {
      const first = !Object.keys(S.actions).length;
      S.actions = msg.data; renderBoards(); renderActions(); renderConfig();
      if (first) refreshResults();
      break;
    }
    case "runs": S.runs = msg.data; renderRuns(S.runs); break;
    case "monitor":
      if (S.paused) break;
      S.monitor = msg.data; S.monitorNote = msg.message || "";
      renderMonitor();
      break;
    case "log":
      S.log.set(msg.entry.id, msg.entry); renderLog(S.log); renderStopRoutine();
      if (routineEnded(msg.entry)) refreshResults();
      break;
    case "audit":
      // The core's audit trail: requests from elsewhere (command line, scripts, other pages)
      // and failed logins; this server's own requests are already in the log.
      for (const a of msg.entries) {
        if (S.ownClients.has(a.client) && a.command !== "whoami") continue;
        S.log.set(`audit-${a.id}`, { audit: true, ...a });
      }
      renderLog(S.log);
      break;
    case "event":
      S.log.set(`ev-${msg.data.time}-${msg.data.kind}`, { event: true, ...msg.data });
      renderLog(S.log);
      if (msg.data.kind === "error" || msg.data.kind === "lost") showError(msg.data.message);
      break;
    default: break;
  }
}

function setConnection(up, text) {
  const c = $("connection");
  c.className = `conn ${up ? "conn-up" : "conn-down"}`;
  c.textContent = text;
  if (!up) {
    $("state").textContent = "UNKNOWN";
    $("state").className = "state state-UNKNOWN";
    for (const b of document.querySelectorAll("[data-command]")) b.disabled = true;
  }
}

// ------------------------------------------------------------------ run control
function renderStatus() {
  const st = S.status;
  $("state").textContent = st.state;
  $("state").className = `state state-${st.state}`;
  $("run-label").textContent = st.run ? `run ${st.run.run_number} (${st.run.run_type})` : "no run";
  for (const b of document.querySelectorAll("[data-command]")) {
    b.disabled = !st.allowed.includes(b.dataset.command) || b.dataset.busy === "1";
  }
  const info = $("run-info");
  info.replaceChildren();
  if (st.run) {
    const r = st.run;
    const written = storageCounts(st, r.run_number);
    // the status names the run; its record (the runs list) says when it began
    const begun = S.runs.find((x) => x.run_number === r.run_number)?.begin_time;
    const rows = [["run", r.run_number], ["type", r.run_type], ["comment", r.comment || "–"],
      ["data dir", r.data_dir], ["prepared", new Date(r.start_time * 1000).toLocaleString()],
      ["running for", begun ? duration(Date.now() / 1000 - begun) : st.state === "RUN" ? "–" : "not begun"],
      ["packets written", written ? count(written.written) : "–"],
      ["packets lost", written ? count(written.lost) : "–"]];
    for (const [k, v] of rows) {
      const value = el("span", { text: String(v) });
      if (k === "running for") value.dataset.testid = "elapsed";
      if (k === "packets written") value.dataset.testid = "written";
      if (k === "packets lost") {
        value.dataset.testid = "lost";
        if (written && written.lost > 0) value.className = "lost-some";
      }
      info.append(el("span", { class: "k", text: k }), value);
    }
    if (written) info.append(el("span", { class: "k", text: "" }),
      el("span", { class: "muted small", text: `as storage counts them (${written.from}); the monitor only estimates` }));
  }
  $("incidents").replaceChildren(...(st.incidents || []).map((t) => el("li", { text: t })));
  const body = $("components").tBodies[0];
  body.replaceChildren(...st.components.map((c) => {
    const late = c.last_seen_s > 0.5;
    const all = Object.entries(c.counters || {})
      .map(([k, v]) => `${k}=${typeof v === "number" ? fmt(v) : v}`);
    const counters = all.slice(0, 4).join("  ") + (all.length > 4 ? "  …" : "");
    return el("tr", {},
      el("td", { text: c.name }), el("td", { text: c.role }), el("td", { text: c.state }),
      el("td", { class: late ? "age-late" : "age-ok", text: `${c.last_seen_s.toFixed(2)} s` }),
      el("td", { text: `${c.host} / ${c.pid}` }), el("td", { class: "counters", text: counters, title: all.join("\n") }));
  }));
  renderBoards();
  renderConfig();
  if (S.pointer) describePointer();
}

async function transition(name) {
  const btn = $(`btn-${name}`);
  btn.dataset.busy = "1";
  btn.disabled = true;
  const params = name === "prepare_run"
    ? { comment: $("run-comment").value, run_type: $("run-type").value || "physics" } : {};
  await command(name, params);
  btn.dataset.busy = "0";
  if (S.status) renderStatus();
}

// ------------------------------------------------------------------ boards
function producers() {
  return (S.status?.components || []).filter((c) => c.role === "producer");
}

function renderBoards() {
  const sel = $("board-select");
  const boards = producers();
  const names = boards.map((b) => b.name);
  const current = [...sel.options].map((o) => o.value);
  if (JSON.stringify(current) !== JSON.stringify(["", ...names])) {
    sel.replaceChildren(el("option", { value: "", text: "all boards" }),
      ...boards.map((b) => el("option", { value: b.name, text: b.name })));
    sel.value = names.includes(S.board) ? S.board : "";
  }
}

function boardIoGroup() {
  if (!S.board || !S.monitor) return null;
  const s = (S.monitor.streams || []).find((x) => x.source === S.board);
  return s ? s.io_group : null;
}

// ------------------------------------------------------------------ monitor
// Tiles with data (the board selector narrows them to one io_group).
function tiles() {
  const all = S.monitor?.tiles || [];
  const g = boardIoGroup();
  return S.board && g !== null ? all.filter((t) => t.io_group === g) : all;
}

// Tell the server which tiles' pixel maps this page draws (it fetches only those).
function sendView() {
  if (!S.ws || S.ws.readyState !== WebSocket.OPEN || !S.layout) return;
  const wanted = viewTiles(S.view, S.tile, tilePlaces(S.monitor, S.layout.pitch_mm)).slice(0, 16);
  const text = JSON.stringify({ type: "view", tiles: wanted });
  if (text !== S.sentView) { S.ws.send(text); S.sentView = text; }
}

function stat(label, value, id) {
  const v = el("div", { class: "v", text: value });
  if (id) v.dataset.testid = id;
  return el("div", { class: "stat" }, v, el("div", { class: "l", text: label }));
}

function renderMonitor() {
  const m = S.monitor;
  const note = m ? (m.run_number === null && m.ended_run !== null && m.ended_run !== undefined
    ? `run ${m.ended_run} ended: the monitor was cleared; it fills again with the next run` : "")
    : (S.monitorNote || "waiting for the monitor…");
  $("monitor-note").textContent = note;
  if (!m) return;
  const frac = m.fraction_seen || {};
  const trig = m.triggers || { last_second: 0, average: 0, seen: 0 };
  $("monitor-stats").replaceChildren(
    stat("rate, last second", `${fmt(m.rate.last_second)} Hz`),
    stat("average (100 s)", `${fmt(m.rate.average)} Hz`),
    stat("since run start", `${fmt(m.rate.since_start)} Hz`),
    stat("packets (estimate)", fmt(m.packets_estimate)),
    stat("seen by monitor", frac.words === null || frac.words === undefined ? "–" : `${(100 * frac.words).toFixed(1)} %`),
    stat("triggers, last second", `${fmt(trig.last_second)} Hz`, "trigger-rate"),
    stat("triggers (100 s avg)", `${fmt(trig.average)} Hz`),
    stat("trigger words seen", String(trig.seen)),
    stat("parity errors", String(m.counters.parity_errors)),
    stat("decode errors", String(Object.values(m.decode_errors).reduce((a, b) => a + b, 0))),
    stat("run", m.run_number === null ? "–" : String(m.run_number)));
  renderAlarms(m.alarms);
  // tile selector: the tiles with data, named as the detector names them
  const places = S.layout ? tilePlaces(m, S.layout.pitch_mm) : [];
  const ts = tiles().map((t) => ({ ...(places.find((p) => tileKey(p) === tileKey(t)) || {}), ...t }));
  const sel = $("tile-select");
  const keys = ts.map(tileKey);
  if (JSON.stringify([...sel.options].map((o) => o.value)) !== JSON.stringify(keys)) {
    sel.replaceChildren(...ts.map((t) => el("option", { value: tileKey(t), text: tileLabel(t) })));
    sel.value = keys.includes(S.tile) ? S.tile : (keys[0] || "");
    S.tile = sel.value;
  }
  sendView();
  drawMonitorPlots();
  renderRecent(m.recent);
  $("messages").replaceChildren(...[...m.messages].reverse().map((x) => el("li", {
    text: `${new Date(x.t * 1000).toLocaleTimeString()}  ${x.source} (io_group ${x.io_group}): ${x.text}` })));
  if (!m.messages.length) $("messages").append(el("li", { class: "muted", text: "none seen yet" }));
  $("chips").tBodies[0].replaceChildren(...m.chips.slice().sort((a, b) => b.rate - a.rate).slice(0, 200)
    .map((c) => el("tr", {}, el("td", { text: c.key }), el("td", { text: fmt(c.rate) }),
      el("td", { text: fmt(c.max) }), el("td", { text: String(c.hits) }),
      el("td", { text: fmt(c.adc_mean ?? null) }), el("td", { text: fmt(c.adc_width ?? null) }))));
}

// The producer that serves an io_group (from the monitor's streams).
function boardOf(ioGroup) {
  const st = (S.monitor?.streams || []).find((x) => x.io_group === ioGroup);
  return st ? st.source : null;
}

// The software copy of a board's chips, for the masked pixels and the configuration maps;
// fetched once per io_group (Reload configuration fetches it again).
async function loadConfig(ioGroup) {
  const board = boardOf(ioGroup);
  if (!board || S.configLoading.has(ioGroup) || !S.session.user) return;
  const acts = S.actions[board] || {};
  if (!("retrieve_configuration" in acts)) return;
  S.configLoading.add(ioGroup);
  try {
    const headers = { "Content-Type": "application/json" };
    if (S.session.csrf) headers["X-CSRF-Token"] = S.session.csrf;
    const r = await fetch("/api/command/invoke", { method: "POST", headers, body: JSON.stringify(
      { component: board, action: "retrieve_configuration", params: {} }) });
    const body = await r.json();
    if (body.success && body.data?.result?.chips) S.configs.set(ioGroup, body.data.result.chips);
    else $("map-note").textContent = `configuration of ${board} not available: ${body.message}`;
  } finally {
    S.configLoading.delete(ioGroup);
  }
  if (S.monitor) drawMonitorPlots();
}

function drawMonitorPlots() {
  const m = S.monitor;
  if (!S.layout) return;
  const mode = $("hitmap-mode").value;
  const places = tilePlaces(m, S.layout.pitch_mm);
  if (S.view !== "detector") {
    for (const key of viewTiles(S.view, S.tile, places)) {
      const g = Number(key.split("/")[0]);
      if (!S.configs.has(g)) loadConfig(g);
    }
  }
  const configs = new Map([...S.configs].map(([g, c]) => [g, c]));
  $("hitmap-caption").textContent = `${MODES[mode].label}: ${
    { tile: S.tile ? tileLabel(places.find((p) => tileKey(p) === S.tile) || { io_group: S.tile.split("/")[0], tile: S.tile.split("/")[1] }) : "no tile yet",
      anode: "the selected tile's anode, pixel by pixel", detector: "every tile, chip by chip (click a tile)" }[S.view]}`;
  S.regions = drawView($("hitmap"), $("hitmap-scale"), { monitor: m, layout: S.layout, view: S.view,
    selected: S.tile, mode, linear: $("hitmap-linear").checked, configs });
  const hist = m.history || [];
  const last = hist.length ? hist[hist.length - 1][0] : 0;
  drawLine($("rateplot"), hist.map(([s, r]) => [s - last, r]), -99, 0, m.rate.average, (x) => `${Math.round(x)} s`);
  drawLine($("trigplot"), hist.map((h) => [h[0] - last, h[3] || 0]), -99, 0, m.triggers?.average || 0,
    (x) => `${Math.round(x)} s`);
  drawHistogram($("adcplot"), m.adc);
  if (S.pointer) describePointer();
}

function canvasPoint(clientX, clientY) {
  const c = $("hitmap");
  const r = c.getBoundingClientRect();
  return [(clientX - r.left) * c.width / r.width, (clientY - r.top) * c.height / r.height, r];
}

function hitmapHover(ev) {
  S.pointer = [ev.clientX, ev.clientY];
  describePointer();
}

// The tip names what lies under the pointer now, not what lay there when the pointer last
// moved: it is described again whenever the map is drawn (new monitor data, another mode or
// view) and whenever the run status above it is drawn (a line added there moves the map under
// a still pointer).
function describePointer() {
  const tip = $("hitmap-tip");
  if (!S.pointer || !S.layout || !S.monitor) { tip.hidden = true; return; }
  const [cx, cy] = S.pointer;
  const [x, y, r] = canvasPoint(cx, cy);
  const text = describe(S.regions, S.layout, S.monitor, x, y, $("hitmap-mode").value);
  if (!text) { tip.hidden = true; return; }
  tip.textContent = text;
  tip.style.left = `${cx - r.left + 14}px`;
  tip.style.top = `${cy - r.top + 14}px`;
  tip.hidden = false;
}

// In the anode and detector views a click on a tile opens its pixels.
function hitmapClick(ev) {
  if (S.view === "tile") return;
  const [x, y] = canvasPoint(ev.clientX, ev.clientY);
  const hit = S.regions.find((g) => x >= g.x && y >= g.y && x < g.x + g.size && y < g.y + g.size);
  if (!hit) return;
  S.tile = tileKey(hit.t);
  setView("tile");
}

function setView(view) {
  S.view = view;
  for (const b of document.querySelectorAll("[data-view]")) b.classList.toggle("on", b.dataset.view === view);
  $("tile-select").value = S.tile;
  sendView();
  if (S.monitor) drawMonitorPlots();
}

// ------------------------------------------------------------------ actions
function renderActions() {
  const comp = $("action-component");
  const names = Object.keys(S.actions).filter((n) => Object.keys(S.actions[n]).length).sort();
  const keep = comp.value || S.board;
  comp.replaceChildren(...names.map((n) => el("option", { value: n, text: n })));
  if (names.includes(keep)) comp.value = keep;
  renderActionNames();
}

function renderActionNames() {
  const acts = S.actions[$("action-component").value] || {};
  const sel = $("action-name");
  const keep = sel.value;
  const names = Object.keys(acts).sort();
  sel.replaceChildren(...names.map((n) => el("option", { value: n, text: n })));
  if (names.includes(keep)) sel.value = keep;
  renderParams();
}

function isRoutineRunner() {
  return $("action-name").value === "run_routine";
}

// The routines a producer offers, with their parameters (asked once per producer).
async function loadRoutines(component) {
  if (S.routines.has(component)) return S.routines.get(component);
  const r = await command("invoke", { component, action: "list_routines", params: {} });
  const list = r.success ? (r.data.result?.routines || []) : [];
  if (r.success) S.routines.set(component, list);
  return list;
}

function renderParams() {
  const spec = (S.actions[$("action-component").value] || {})[$("action-name").value];
  const form = $("action-params");
  form.replaceChildren();
  $("btn-invoke").disabled = !spec;
  $("routine-row").hidden = true;
  if (!spec) { $("action-doc").replaceChildren(el("p", { text: "no actions offered" })); return; }
  if (isRoutineRunner()) { renderRoutineChoice(); return; }
  $("action-doc").replaceChildren(...(spec.doc ? docNodes(spec.doc) : [el("p", { text: "(no description)" })]));
  for (const p of spec.params) {
    const input = p.annotation === "bool"
      ? el("input", { type: "checkbox", name: p.name })
      : el("input", { name: p.name, placeholder: p.required ? "required" : String(p.default ?? "") });
    if (p.annotation === "bool" && p.default) input.checked = true;
    input.dataset.kind = p.annotation || "";
    form.append(el("label", { text: p.name }), input);
    form.append(el("span", { class: "hint", text: `${p.annotation || "any"}${p.required ? ", required" : `, default ${JSON.stringify(p.default ?? null)}`}` }));
  }
}

async function renderRoutineChoice() {
  const component = $("action-component").value;
  const routines = await loadRoutines(component);
  if (!isRoutineRunner() || $("action-component").value !== component) return;
  const sel = $("routine-name");
  const keep = sel.value;
  sel.replaceChildren(...routines.map((r) => el("option", { value: r.name, text: r.name })));
  if (routines.some((r) => r.name === keep)) sel.value = keep;
  $("routine-row").hidden = false;
  renderRoutineForm();
}

// One input per routine parameter, from its declaration: type, default, range, choices, unit.
function renderRoutineForm() {
  const routines = S.routines.get($("action-component").value) || [];
  const r = routines.find((x) => x.name === $("routine-name").value);
  const form = $("action-params");
  form.replaceChildren();
  if (!r) { $("action-doc").replaceChildren(el("p", { text: "this producer offers no routines" })); return; }
  $("action-doc").replaceChildren(...(r.doc ? docNodes(r.doc) : [el("p", { text: "(no description)" })]));
  for (const p of r.params) {
    const type = p.type || "any";
    let input;
    if (p.choices) {
      input = el("select", { name: p.name }, ...p.choices.map((c) => el("option", { value: JSON.stringify(c), text: String(c) })));
      if (p.default !== undefined) input.value = JSON.stringify(p.default);
    } else if (type === "bool") {
      input = el("input", { type: "checkbox", name: p.name });
      input.checked = Boolean(p.default);
    } else if (type === "int" || type === "float") {
      input = el("input", { type: "number", name: p.name, step: type === "int" ? "1" : "any" });
      if (p.minimum !== undefined) input.min = String(p.minimum);
      if (p.maximum !== undefined) input.max = String(p.maximum);
      if (p.default !== undefined && p.default !== null) input.value = String(p.default);
    } else {
      input = el("input", { name: p.name, placeholder: type.startsWith("list") ? "values separated by commas" : "" });
      if (p.default !== undefined && p.default !== null) input.value = Array.isArray(p.default) ? p.default.join(", ") : String(p.default);
    }
    input.dataset.type = type;
    input.id = `routine-param-${p.name}`;
    if (p.required) input.required = true;
    const field = el("span", { class: "field" }, input, p.unit ? el("span", { class: "unit", text: p.unit }) : null);
    form.append(el("label", { text: p.name, for: input.id }), field);
    const range = [p.above !== undefined ? `> ${p.above}` : null, p.minimum !== undefined ? `≥ ${p.minimum}` : null,
      p.maximum !== undefined ? `≤ ${p.maximum}` : null].filter(Boolean).join(", ");
    form.append(el("span", { class: "hint", text: `${type}${p.unit ? ` in ${p.unit}` : ""}${range ? `, ${range}` : ""}${
      p.required ? ", required" : `, default ${JSON.stringify(p.default ?? null)}`}${p.optional ? ", may be empty" : ""}` }));
  }
}


async function invoke() {
  const component = $("action-component").value;
  const action = $("action-name").value;
  let params = {};
  try {
    if (isRoutineRunner()) {
      const values = {};
      for (const input of $("action-params").querySelectorAll("input, select")) {
        if (input.type !== "checkbox" && input.tagName !== "SELECT" && input.value.trim() === "") continue;
        values[input.name] = routineValue(input);
      }
      params = { name: $("routine-name").value, params: values };
    } else {
      for (const input of $("action-params").querySelectorAll("input")) {
        if (input.type !== "checkbox" && input.value.trim() === "") continue; // default applies
        params[input.name] = paramValue(input);
      }
    }
  } catch (err) { showError(err.message); return; }
  $("btn-invoke").disabled = true;
  const out = $("action-result");
  out.hidden = false; out.className = "result"; out.textContent = "running…";
  const body = await command("invoke", { component, action, params });
  out.className = body.success ? "result" : "result failed";
  out.textContent = body.success ? JSON.stringify(body.data.result ?? body.data, null, 2) : body.message;
  $("btn-invoke").disabled = false;
}

// ------------------------------------------------------------------ stopping a routine
// A routine occupies its producer's action thread; stop_routine is an immediate action, so it
// answers at once. Stop is offered while the command log (shared by every open page) shows
// a run_routine still running; it stops the newest one.
function runningRoutine() {
  const running = [...S.log.values()].filter((e) => !e.event && e.status === "running"
    && e.command === "invoke" && e.params?.action === "run_routine");
  return running.length ? running.reduce((a, b) => ((b.time || 0) > (a.time || 0) ? b : a)) : null;
}

function renderStopRoutine() {
  const r = runningRoutine();
  const btn = $("btn-stop-routine");
  btn.disabled = !r || btn.dataset.busy === "1";
  btn.title = r ? `stop routine ${r.params.params?.name ?? ""} on ${r.params.component}`
    : "no routine is running";
}

async function stopRoutine() {
  const r = runningRoutine();
  if (!r) return;
  const btn = $("btn-stop-routine");
  btn.dataset.busy = "1";
  btn.disabled = true;
  await command("invoke", { component: r.params.component, action: "stop_routine", params: {} });
  btn.dataset.busy = "0";
  renderStopRoutine();
}

// ------------------------------------------------------------------ routine results
// A routine's outcome is kept by its producer when it ends, so the table is asked for again
// whenever a run_routine this page (or another page of this server) sent has finished.
function routineEnded(e) {
  if (e.command !== "invoke" || e.params?.action !== "run_routine" || e.status === "running") return false;
  if (S.routinesDone.has(e.id)) return false;
  S.routinesDone.add(e.id);
  return true;
}

const refreshResults = () => refreshRoutineResults(command, S.actions);

// ------------------------------------------------------------------ configuration editor
const CONFIG_ACTIONS = {
  retrieve: ["retrieve_configuration", "get_configuration", "configuration"],
  send: ["send_configuration", "set_configuration", "update_configuration"],
  write: ["write_configuration", "write_config"],
  read: ["read_configuration", "read_config"],
  verify: ["validate_configuration", "verify_configuration", "verify_config"],
};

function configActions(name) {
  const acts = S.actions[name] || {};
  const found = {};
  for (const [role, names] of Object.entries(CONFIG_ACTIONS)) {
    const hit = names.find((n) => n in acts);
    if (hit) found[role] = { name: hit, spec: acts[hit] };
  }
  return found;
}

function renderConfig() {
  const body = $("config-body");
  const boards = producers().map((p) => p.name);
  const target = boards.includes(S.board) ? S.board : boards[0];
  if (!target) { body.replaceChildren(el("p", { class: "muted", text: "no board (producer) is registered" })); return; }
  const found = configActions(target);
  if (!found.write && !found.read && !found.verify) {
    const offered = Object.keys(S.actions[target] || {}).sort();
    body.replaceChildren(el("p", { class: "muted",
      text: `${target} offers no configuration actions (write / read / verify per chip); it offers: ${offered.join(", ") || "none"}. `
        + "Its actions can still be run from the action runner." }));
    return;
  }
  if (body.dataset.target === target) return; // keep what the operator is editing
  body.dataset.target = target;
  const chip = el("input", { id: "config-chip", placeholder: "chip key, e.g. 1-1-11", list: "chip-keys" });
  const table = el("table", { class: "grid small regs", id: "config-regs" });
  const result = el("pre", { class: "result", id: "config-result", hidden: "" });
  const call = async (role, extra = {}) => {
    const a = found[role];
    const key = chip.value.trim();
    const params = { ...extra };
    const first = a.spec.params[0];
    if (first && !(first.name in params)) params[first.name] = key;
    const r = await command("invoke", { component: target, action: a.name, params });
    result.hidden = false;
    result.className = r.success ? "result" : "result failed";
    result.textContent = r.success ? JSON.stringify(r.data.result, null, 2) : r.message;
    const res = r.success ? r.data.result : null;
    if (res && typeof res === "object") {
      if (role === "verify") markDifferences(table, res);
      else if (role !== "send" && role !== "write") showRegisters(table, res);
    }
    return r;
  };
  const buttons = el("div", { class: "buttons" });
  for (const [role, label] of [["retrieve", "Software copy"], ["read", "Read from chip"],
    ["write", "Write to chip"], ["verify", "Verify"]]) {
    if (found[role]) buttons.append(el("button", { text: label, onclick: () => call(role) }));
  }
  if (found.send) {
    buttons.append(el("button", { text: "Apply edits", onclick: () => {
      let updates;
      try { updates = { [chip.value.trim()]: editedRegisters(table) }; } catch (err) { showError(err.message); return; }
      call("send", { [found.send.spec.params[0]?.name || "updates"]: updates }).then((r) => {
        if (!r.success) return;
        for (const input of table.querySelectorAll("input[data-reg]")) {
          input.dataset.orig = input.value;
          input.parentElement.classList.remove("changed");
        }
      });
    } }));
  }
  const keys = el("datalist", { id: "chip-keys" },
    ...(S.monitor?.chips || []).map((c) => el("option", { value: c.key })));
  body.replaceChildren(keys, el("p", { class: "muted", text: `configuration of chips on ${target}` }),
    el("div", { class: "form-row" }, el("label", { text: "Chip " }, chip)), buttons, table, result);
}

// ------------------------------------------------------------------ start
function start() {
  for (const b of document.querySelectorAll("[data-command]")) b.onclick = () => transition(b.dataset.command);
  $("btn-pause").onclick = () => {
    S.paused = !S.paused;
    $("btn-pause").textContent = S.paused ? "Live" : "Pause";
    $("btn-pause").classList.toggle("on", S.paused);
    $("monitor-note").textContent = S.paused ? "paused: the display is frozen, data taking goes on" : "";
  };
  $("board-select").onchange = (ev) => {
    S.board = ev.target.value;
    if (S.actions[S.board]) { $("action-component").value = S.board; renderActionNames(); }
    $("config-body").dataset.target = "";
    renderConfig();
    if (S.monitor) renderMonitor();
  };
  $("tile-select").onchange = (ev) => { S.tile = ev.target.value; sendView(); if (S.monitor) drawMonitorPlots(); };
  for (const b of document.querySelectorAll("[data-view]")) b.onclick = () => setView(b.dataset.view);
  $("hitmap-mode").replaceChildren(...Object.entries(MODES).map(([k, m]) => el("option", { value: k, text: m.label })));
  $("map-legend").replaceChildren(...LEGEND.map(([text, c]) => el("span", { class: "swatch" },
    el("i", { style: `background:${c}` }), text)));
  $("btn-reload-config").onclick = () => { S.configs.clear(); if (S.monitor) drawMonitorPlots(); };
  $("hitmap").addEventListener("click", hitmapClick);
  for (const id of ["hitmap-mode", "hitmap-linear"]) $(id).onchange = () => { if (S.monitor) drawMonitorPlots(); };
  $("hitmap").addEventListener("mousemove", hitmapHover);
  $("hitmap").addEventListener("mouseleave", () => { S.pointer = null; $("hitmap-tip").hidden = true; });
  // the routine list is asked for again whenever the operator picks the runner
  $("action-component").onchange = () => { S.routines.clear(); renderActionNames(); };
  $("action-name").onchange = () => { S.routines.clear(); renderParams(); };
  $("routine-name").onchange = renderRoutineForm;
  $("btn-invoke").onclick = invoke;
  $("btn-stop-routine").onclick = stopRoutine;
  $("btn-refresh-results").onclick = refreshResults;
  $("btn-logout").onclick = logout;
  fetch("/api/layout").then((r) => r.json()).then((l) => { S.layout = prepareLayout(l); sendView(); });
  loadSession().then(connect);
}

start();
