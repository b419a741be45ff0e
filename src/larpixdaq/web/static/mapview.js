// The monitor's map card: which tiles to draw for a view (tile, anode, detector), the values
// and the pixel states (masked, silent, hot) of each, and what the mouse points at.
import {
  COLOURS, MODES, SIDE, drawChips, drawScale, drawTileChips, drawTilePixels, panels, scaleFor,
} from "./maps.js";
import { fmt } from "./plots.js";

const MASKED = 1, SILENT = 2, HOT = 4;
const SILENT_AFTER_HITS = 10;
const DETECTOR_WIDTH = 900;

export const tileKey = (t) => `${t.io_group}/${t.tile}`;

// Where every tile is: the detector's table, or (standard tiles, no detector given) each
// io_group's tiles in a row.
export function tilePlaces(monitor, pitch) {
  const table = monitor?.detector?.tiles || [];
  if (table.length) return table;
  const width = SIDE * pitch;
  return (monitor?.tiles || []).map((t) => ({ io_group: t.io_group, tile: t.tile,
    module: t.io_group, anode: 1, io_channels: t.io_channels, x_mm: (t.tile - 1) * width,
    y_mm: 0, x_sign: 1, y_sign: 1 }));
}

export function tileLabel(t) {
  const where = t.module ? ` (module ${t.module}, anode ${t.anode})` : "";
  return `io_group ${t.io_group} tile ${t.tile}${where}`;
}

// The tiles a view draws pixel by pixel (what the page asks the server to fetch).
export function viewTiles(view, selected, places) {
  if (view === "tile") return selected ? [selected] : [];
  if (view === "anode") {
    const sel = places.find((t) => tileKey(t) === selected);
    if (!sel) return selected ? [selected] : [];
    return places.filter((t) => t.module === sel.module && t.anode === sel.anode).map(tileKey);
  }
  return [];
}

// Per-chip configuration of one tile from a board's software copy: {chip id: registers}.
function tileConfig(config, t) {
  if (!config) return null;
  const out = new Map();
  for (const [key, regs] of Object.entries(config)) {
    const [g, ch, chip] = key.split("-").map(Number);
    if (g === t.io_group && (t.io_channels || []).includes(ch)) out.set(chip, regs);
  }
  return out;
}

function hotPixels(monitor, t, layout) {
  const out = new Set();
  for (const a of monitor.alarms || []) {
    if (a.kind !== "hot_channel") continue;
    const m = /^(\d+)-(\d+)-(\d+)\/(\d+)$/.exec(a.key);
    if (!m || Number(m[1]) !== t.io_group || !(t.io_channels || []).includes(Number(m[2]))) continue;
    const p = layout.pixelOf[Number(m[3]) * 64 + Number(m[4])];
    if (p >= 0) out.add(p);
  }
  return out;
}

// Values and flags of one tile's pixels for a mode.
export function tilePixels(monitor, t, mode, layout, config) {
  const n = SIDE * SIDE;
  const cfg = tileConfig(config, t);
  const flags = new Uint8Array(n);
  let values = new Array(n).fill(null);
  if (MODES[mode].config) {
    if (cfg) {
      for (let p = 0; p < n; p++) {
        const regs = cfg.get(layout.chip_id[p]);
        if (!regs) continue;
        const v = regs[mode];
        values[p] = Array.isArray(v) ? v[layout.channel[p]] : v;
      }
    }
  } else if (t.rate) {
    if (mode === "rate") values = t.rate;
    else if (mode === "max") values = t.max;
    else if (mode === "avg") {
      const seen = (monitor.fraction_seen && monitor.fraction_seen.words) || 1;
      const secs = Math.max(1, monitor.since_reset_s);
      values = t.hits.map((h) => h / secs / seen);
    } else values = t[mode] || values;
  }
  if (cfg && mode !== "channel_mask") {
    for (let p = 0; p < n; p++) {
      const regs = cfg.get(layout.chip_id[p]);
      if (regs && Array.isArray(regs.channel_mask) && regs.channel_mask[layout.channel[p]]) flags[p] |= MASKED;
    }
  }
  // silent: an unmasked pixel with no hit this run while its tile's pixels have had 10 hits
  // each on average (before that, a quiet pixel may just not have been sampled yet)
  let open = 0;
  for (let p = 0; p < n; p++) if (!(flags[p] & MASKED)) open++;
  if (t.hits && t.hits_total >= SILENT_AFTER_HITS * open && !MODES[mode].config) {
    for (let p = 0; p < n; p++) if (!t.hits[p] && !(flags[p] & MASKED)) flags[p] |= SILENT;
  }
  for (const p of hotPixels(monitor, t, layout)) flags[p] |= HOT;
  return { values, flags };
}

// Draw the view; returns the regions the mouse can point at.
export function drawView(canvas, scaleCanvas, st) {
  const { monitor, layout, view, selected, mode, linear, configs } = st;
  const places = tilePlaces(monitor, layout.pitch_mm);
  const byKey = new Map((monitor.tiles || []).map((t) => [tileKey(t), t]));
  const regions = [];
  const ctx = canvas.getContext("2d");
  let scale;
  if (view === "tile") {
    canvas.width = 490; canvas.height = 490;
    const place = places.find((t) => tileKey(t) === selected) || {};
    const t = { ...place, ...(byKey.get(selected) || {}) };
    const { values, flags } = tilePixels(monitor, t, mode, layout, configs.get(t.io_group));
    scale = scaleFor(values, mode, linear);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    drawTilePixels(ctx, 0, 0, 7, values, flags, scale);
    drawChips(ctx, layout, 0, 0, 7);
    regions.push({ x: 0, y: 0, size: 490, t, values, flags, kind: "pixels", xs: 1, ys: 1 });
  } else {
    const sel = places.find((t) => tileKey(t) === selected);
    const shown = view === "anode" && sel
      ? panels(places.filter((t) => t.module === sel.module && t.anode === sel.anode), layout.pitch_mm)
      : panels(places, layout.pitch_mm);
    const gap = view === "anode" ? 6 : 4;
    const perRow = view === "anode" ? 1 : Math.min(4, shown.length);
    const across = perRow * Math.max(...shown.map((p) => p.cols), 1);
    const tileSize = view === "anode" ? 140
      : Math.max(30, Math.min(140, Math.floor((DETECTOR_WIDTH - perRow * 12) / across) - gap));
    const panelW = Math.max(...shown.map((p) => p.cols), 1) * (tileSize + gap) + 12;
    const panelH = Math.max(...shown.map((p) => p.rows), 1) * (tileSize + gap) + 28;
    canvas.width = Math.max(300, perRow * panelW);
    canvas.height = Math.max(200, Math.ceil(shown.length / perRow) * panelH);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const drawn = [];
    for (const [i, panel] of shown.entries()) {
      const px = (i % perRow) * panelW + 6, py = Math.floor(i / perRow) * panelH + 20;
      ctx.fillStyle = "#1d2430"; ctx.font = "12px system-ui, sans-serif"; ctx.textAlign = "left";
      ctx.textBaseline = "alphabetic";
      ctx.fillText(panel.module ? `module ${panel.module} anode ${panel.anode} (io_group ${panel.io_group})`
        : `io_group ${panel.io_group}`, px, py - 6);
      for (const place of panel.tiles) {
        const t = { ...place, ...(byKey.get(tileKey(place)) || {}) };
        const x = px + place.x * (tileSize + gap), y = py + place.y * (tileSize + gap);
        drawn.push({ t, x, y });
      }
    }
    if (view === "anode") {
      const all = drawn.map((d) => ({ d, ...tilePixels(monitor, d.t, mode, layout, configs.get(d.t.io_group)) }));
      scale = scaleFor(all.flatMap((a) => a.values), mode, linear);
      for (const a of all) {
        const { t, x, y } = a.d;
        drawTilePixels(ctx, x, y, tileSize / SIDE, a.values, a.flags, scale, t.x_sign, t.y_sign);
        drawChips(ctx, layout, x, y, tileSize / SIDE, t.x_sign, t.y_sign, false);
        label(ctx, `${t.tile}`, x, y);
        regions.push({ x, y, size: tileSize, t, values: a.values, flags: a.flags, kind: "pixels",
          xs: t.x_sign, ys: t.y_sign });
      }
    } else {
      const chipsOf = chipValues(monitor, mode);
      const values = [];
      for (const d of drawn) for (const v of (chipsOf.get(tileKey(d.t)) || new Map()).values()) values.push(v);
      scale = scaleFor(values, mode, linear);
      for (const { t, x, y } of drawn) {
        const byChip = chipsOf.get(tileKey(t)) || new Map();
        drawTileChips(ctx, layout, x, y, tileSize, byChip, scale, t.x_sign, t.y_sign);
        regions.push({ x, y, size: tileSize, t, byChip, kind: "chips", xs: t.x_sign, ys: t.y_sign });
      }
    }
  }
  drawScale(scaleCanvas, scale, MODES[mode].label);
  return regions;
}

function label(ctx, text, x, y) {
  ctx.font = "bold 11px system-ui, sans-serif"; ctx.textAlign = "left"; ctx.textBaseline = "top";
  ctx.fillStyle = "rgba(255,255,255,.85)"; ctx.fillRect(x + 2, y + 2, ctx.measureText(text).width + 6, 14);
  ctx.fillStyle = "#111827"; ctx.fillText(text, x + 5, y + 3);
}

// Per-chip values of every tile for the detector view (rates from the monitor's chips; a
// chip's ADC mean and width are its channels' averaged).
function chipValues(monitor, mode) {
  const out = new Map();
  const tileOf = new Map();
  for (const t of monitor.tiles || []) for (const ch of t.io_channels) tileOf.set(`${t.io_group}/${ch}`, tileKey(t));
  const seen = (monitor.fraction_seen && monitor.fraction_seen.words) || 1;
  const secs = Math.max(1, monitor.since_reset_s);
  for (const c of monitor.chips || []) {
    const key = tileOf.get(`${c.io_group}/${c.io_channel}`);
    if (!key) continue;
    let v = null;
    if (mode === "rate" || mode === "max") v = c[mode];
    else if (mode === "avg") v = c.hits / secs / seen;
    else if (mode === "adc_mean" || mode === "adc_width") v = c[mode];
    if (v === null || v === undefined) continue;
    (out.get(key) || out.set(key, new Map()).get(key)).set(c.chip_id, v);
  }
  return out;
}

// What the mouse points at, in words.
export function describe(regions, layout, monitor, mx, my, mode) {
  for (const r of regions) {
    if (mx < r.x || my < r.y || mx >= r.x + r.size || my >= r.y + r.size) continue;
    const t = r.t;
    const unit = MODES[mode].unit;
    if (r.kind === "pixels") {
      const cell = r.size / SIDE;
      let c = Math.floor((mx - r.x) / cell), row = Math.floor((my - r.y) / cell);
      if (r.xs < 0) c = SIDE - 1 - c;
      if (r.ys < 0) row = SIDE - 1 - row;
      const p = row * SIDE + c;
      const chip = layout.chip_id[p], channel = layout.channel[p];
      const uart = (t.io_channels || []).find((ch) => (monitor.chips || []).some((x) => x.io_channel === ch && x.chip_id === chip));
      const key = uart === undefined ? `${t.io_group}-?-${chip}` : `${t.io_group}-${uart}-${chip}`;
      const f = r.flags[p];
      const state = f & MASKED ? "masked" : f & SILENT ? "silent (no hit this run)" : f & HOT ? "hot" : "";
      const lines = [`${tileLabel(t)}  pixel ${p} (column ${p % SIDE}, row ${Math.floor(p / SIDE)} from the top)`,
        `chip ${key}  channel ${channel}${state ? `  — ${state}` : ""}`,
        `${MODES[mode].label}: ${fmt(r.values[p])}${unit ? ` ${unit}` : ""}`];
      if (t.rate) lines.push(`rate ${fmt(t.rate[p])} Hz   max ${fmt(t.max[p])} Hz   hits seen ${t.hits[p]}`);
      if (t.adc_mean) lines.push(`ADC mean ${fmt(t.adc_mean[p])}   width ${fmt(t.adc_width[p])}`);
      return lines.join("\n");
    }
    const cell = r.size / 10;
    let c = Math.floor((mx - r.x) / cell), row = Math.floor((my - r.y) / cell);
    if (r.xs < 0) c = 9 - c;
    if (r.ys < 0) row = 9 - row;
    const chip = layout.chips.find((id) => {
      const [cx, cy] = layout.centre.get(id);
      return Math.floor(cx / 7) === c && Math.floor(cy / 7) === row;
    });
    const v = r.byChip.get(chip);
    return `${tileLabel(t)}\nchip ${chip}: ${MODES[mode].label} ${fmt(v ?? null)}${unit ? ` ${unit}` : ""}\nclick: this tile's pixels`;
  }
  return null;
}

export const LEGEND = [
  ["masked (channel_mask)", COLOURS.masked], ["silent: no hit this run", COLOURS.silentMark],
  ["hot (alarm)", COLOURS.hot], ["no data", COLOURS.nodata],
];
