// The page's tables and lists: the run's counts, runs, alarms, recent packets, the log.
import { $, el } from "./dom.js";

// What the storage components have written and lost of this run (their own counts, from
// their heartbeats), summed; null when no storage reports on this run.
export function storageCounts(st, run) {
  const stores = st.components.filter((c) => c.role === "storage" && c.counters
    && c.counters.run_number === run && typeof c.counters.packets_written === "number");
  if (!stores.length) return null;
  return { written: stores.reduce((a, c) => a + c.counters.packets_written, 0),
    lost: stores.reduce((a, c) => a + (c.counters.packets_lost || 0), 0),
    from: stores.map((c) => c.name).join(", ") };
}

export const count = (n) => (typeof n === "number" ? n.toLocaleString("en-US") : "–");

export function duration(seconds) {
  if (!(seconds >= 0)) return "–";
  const s = Math.floor(seconds), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h} h ${String(m).padStart(2, "0")} min` : m ? `${m} min ${String(s % 60).padStart(2, "0")} s` : `${s} s`;
}

const ALARM_TITLES = {
  hot_channel: "hot channels", silent_chip: "silent chips", silent_io_group: "silent io_groups",
  fifo_loss: "chips losing hits (FIFO full)", parity: "parity errors", decode_errors: "decode errors",
  missing_sync: "io_groups missing their SYNC",
};

// One line per kind of alarm; the details open on a click, so a noisy tile stays readable.
export function renderAlarms(alarms) {
  const kinds = new Map();
  for (const a of alarms) (kinds.get(a.kind) || kinds.set(a.kind, []).get(a.kind)).push(a);
  const open = new Set([...document.querySelectorAll("#alarms details[open]")].map((d) => d.dataset.kind));
  $("alarms").replaceChildren(...[...kinds].map(([kind, list]) => {
    const severity = list.some((a) => a.severity === "error") ? "error" : "warning";
    if (list.length === 1) return el("li", { class: severity, text: `${ALARM_TITLES[kind] || kind}: ${list[0].message}` });
    const d = el("details", {}, el("summary", { text: `${list.length} ${ALARM_TITLES[kind] || kind}: ${list[0].message}, …` }),
      el("ul", {}, ...list.map((a) => el("li", { text: a.message }))));
    d.dataset.kind = kind;
    if (open.has(kind)) d.open = true;
    return el("li", { class: severity }, d);
  }));
}

const RECENT_COLUMNS = ["io_group", "io_channel", "chip_id", "packet_type", "channel_id",
  "timestamp", "dataword", "valid_parity"];

export function renderRecent(recent) {
  const table = $("recent");
  if (!table.tHead.rows.length) {
    table.tHead.append(el("tr", {}, ...RECENT_COLUMNS.map((c) => el("th", { text: c.replace("_", " ") }))));
  }
  const n = recent.chip_id.length;
  const rows = [];
  for (let i = n - 1; i >= 0; i--) {
    rows.push(el("tr", {}, ...RECENT_COLUMNS.map((c) => el("td", { text: String(recent[c][i]) }))));
  }
  table.tBodies[0].replaceChildren(...rows);
}

export function when(t) { return t ? new Date(t * 1000).toLocaleString() : "–"; }

// One status per run: running (or ready) while open, else how it ended.
export function runStatus(r) {
  if (!r.exit_status) return r.state === "RUN" ? "running" : r.state === "READY" ? "ready" : (r.state || "open").toLowerCase();
  return r.exit_status;
}

export function renderRuns(runs) {
  $("runs").tBodies[0].replaceChildren(...runs.map((r) => {
    const status = runStatus(r);
    const end = r.end_time || (r.exit_status ? null : Date.now() / 1000);
    const counted = r.exit_status !== null && r.exit_status !== undefined;
    return el("tr", {},
      el("td", { text: String(r.run_number) }), el("td", { text: r.run_type }),
      el("td", { text: status, class: `status-${status}`, title: r.end_reason || "" }),
      el("td", { text: when(r.begin_time || r.start_time) }),
      el("td", { text: duration(end - (r.begin_time || r.start_time)) }),
      el("td", { class: "num", text: counted ? count(r.packets_written) : "–" }),
      el("td", { class: `num${r.packets_lost > 0 ? " lost-some" : ""}`, text: counted ? count(r.packets_lost) : "–" }),
      el("td", { text: r.comment }), el("td", { text: (r.files || []).join(", ") }));
  }));
}

export function renderLog(log) {
  const entries = [...log.values()].sort((a, b) => (b.time || 0) - (a.time || 0)).slice(0, 200);
  $("log").replaceChildren(...entries.map((e) => {
    const t = new Date((e.time || 0) * 1000).toLocaleTimeString();
    if (e.event) {
      return el("li", { class: "event" }, el("span", { class: "t", text: t }),
        el("span", { class: "cmd", text: `event: ${e.kind}` }), el("span", { class: "badge event", text: "event" }),
        el("span", { class: "msg", text: e.message }));
    }
    if (e.audit) {
      const status = { success: "ok", accepted: "running", refused: "failed" }[e.result] || "failed";
      const who = `${e.user || "anonymous"}${e.role ? ` (${e.role})` : ""}`;
      const params = Object.keys(e.params || {}).length ? ` ${JSON.stringify(e.params)}` : "";
      return el("li", { class: `${status} audit` }, el("span", { class: "t", text: t }),
        el("span", { class: "cmd", text: `${e.command}${params}`, title: e.client }),
        el("span", { class: `badge ${status}`, text: e.result }),
        el("span", { class: "msg", text: `${who}: ${e.message}` }));
    }
    const params = Object.keys(e.params || {}).length ? ` ${JSON.stringify(e.params)}` : "";
    const progress = e.progress && e.progress.length ? ` (${e.progress.length} progress)` : "";
    const outcome = resultSummary(e);
    const who = e.user ? `${e.user}: ` : "";
    return el("li", { class: e.status }, el("span", { class: "t", text: t }),
      el("span", { class: "cmd", text: `${e.command}${params}`, title: JSON.stringify(e.params) }),
      el("span", { class: `badge ${e.status}`, text: e.status }),
      el("span", { class: "msg", text: `${who}${e.message}${progress}${e.elapsed_s ? `  [${e.elapsed_s} s]` : ""}` }),
      outcome ? el("span", { class: "outcome", text: outcome, title: outcome }) : null);
  }));
}

// What an action answered, in a line: a routine's message and result, or a short JSON.
function resultSummary(e) {
  if (e.command !== "invoke" || e.status !== "ok") return "";
  const r = e.data?.result;
  if (r === undefined || r === null) return "";
  if (typeof r !== "object") return String(r);
  const short = (v) => { const t = JSON.stringify(v); return t.length > 160 ? `${t.slice(0, 157)}…` : t; };
  if (typeof r.status === "string" && typeof r.message === "string") {
    return `${r.message}${r.result === undefined || r.result === null ? "" : ` → ${short(r.result)}`}`;
  }
  return typeof r.message === "string" ? r.message : short(r);
}

