// The detector drawn in its own coordinates: one tile's 70 x 70 pixels with its chips, an
// anode's tiles where they sit, or the whole detector chip by chip. No library.
import { colour, fmt, niceMax } from "./plots.js";

export const SIDE = 70;
const CHIP_SIDE = 7;
export const COLOURS = {
  nodata: "#eef0f3", silent: "#ffffff", silentMark: "#dc2626", hot: "#e11d48",
  masked: "#9aa3af", border: "rgba(15,23,42,.55)", tileEdge: "#1d2430",
};

// What a map can show: per pixel (tile and anode views) and per chip (detector view).
export const MODES = {
  rate: { label: "hit rate, last second", unit: "Hz", log: true },
  max: { label: "hit rate, per-second maximum", unit: "Hz", log: true },
  avg: { label: "hit rate, run average", unit: "Hz", log: true },
  adc_mean: { label: "ADC mean (pedestal)", unit: "ADC", log: false },
  adc_width: { label: "ADC width (noise)", unit: "ADC", log: false },
  threshold_global: { label: "threshold_global (per chip)", unit: "DAC", log: false, config: true },
  pixel_trim_dac: { label: "pixel_trim_dac", unit: "DAC", log: false, config: true },
  channel_mask: { label: "channel_mask (1: masked)", unit: "", log: false, config: true },
};

// The tile layout from /api/layout, with what drawing needs: each (chip, channel)'s pixel,
// each chip's pixels' centre.
export function prepareLayout(l) {
  const pixelOf = new Int32Array(256 * 64).fill(-1);
  const sum = new Map();
  for (let p = 0; p < l.chip_id.length; p++) {
    const chip = l.chip_id[p];
    if (chip < 0) continue;
    pixelOf[chip * 64 + l.channel[p]] = p;
    const s = sum.get(chip) || [0, 0, 0];
    s[0] += p % SIDE; s[1] += Math.floor(p / SIDE); s[2] += 1;
    sum.set(chip, s);
  }
  const centre = new Map([...sum].map(([c, s]) => [c, [s[0] / s[2], s[1] / s[2]]]));
  return { ...l, pixelOf, centre, chips: [...centre.keys()].sort((a, b) => a - b) };
}

// Range of the colour scale: rates from 0 to a round maximum; ADC and registers from their
// 1st to 99th percentile, so one wild channel does not wash the others out.
export function scaleFor(values, mode, linear) {
  const finite = values.filter((v) => v !== null && v !== undefined && Number.isFinite(v));
  const m = MODES[mode];
  if (!finite.length) return { lo: 0, hi: 1, log: false, unit: m.unit };
  if (m.unit === "Hz") {
    const top = niceMax(Math.max(...finite));
    return { lo: 0, hi: top, log: m.log && !linear, unit: m.unit };
  }
  const sorted = [...finite].sort((a, b) => a - b);
  const q = (f) => sorted[Math.min(sorted.length - 1, Math.floor(f * sorted.length))];
  let lo = q(0.01), hi = q(0.99);
  if (mode === "channel_mask") { lo = 0; hi = 1; }
  if (hi <= lo) hi = lo + 1;
  return { lo, hi, log: false, unit: m.unit };
}

function norm(scale, v) {
  if (scale.log) return Math.log10(1 + Math.max(0, v)) / Math.log10(1 + scale.hi);
  return (v - scale.lo) / (scale.hi - scale.lo);
}

// A 0 on a rate map is "no hits" (grey): keep the lowest colour for values just above zero.
function fill(scale, v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return COLOURS.nodata;
  if (scale.unit === "Hz" && v <= 0) return COLOURS.nodata;
  return colour(Math.max(1e-6, Math.min(1, norm(scale, v))));
}

// One tile's pixels at (x0, y0), `cell` px each. flags: per pixel 1 masked, 2 silent, 4 hot.
// xSign / ySign -1 mirror the tile as the detector places it.
export function drawTilePixels(ctx, x0, y0, cell, values, flags, scale, xSign = 1, ySign = 1) {
  const at = (p) => {
    const c = p % SIDE, r = Math.floor(p / SIDE);
    return [x0 + (xSign < 0 ? SIDE - 1 - c : c) * cell, y0 + (ySign < 0 ? SIDE - 1 - r : r) * cell];
  };
  const size = Math.max(1, Math.ceil(cell));
  for (let p = 0; p < SIDE * SIDE; p++) {
    const [x, y] = at(p);
    const f = flags ? flags[p] : 0;
    if (f & 1) {
      ctx.fillStyle = COLOURS.masked;
      ctx.fillRect(x, y, size, size);
      if (cell >= 4) { // hatch: a masked channel is a choice, not a fault
        ctx.strokeStyle = "#e5e7eb"; ctx.lineWidth = 1;
        ctx.beginPath(); ctx.moveTo(x, y + cell); ctx.lineTo(x + cell, y); ctx.stroke();
      }
      continue;
    }
    if (f & 2) {
      ctx.fillStyle = COLOURS.silent; ctx.fillRect(x, y, size, size);
      ctx.fillStyle = COLOURS.silentMark;
      const d = Math.max(1, cell / 3);
      ctx.fillRect(x + (cell - d) / 2, y + (cell - d) / 2, d, d);
      continue;
    }
    ctx.fillStyle = fill(scale, values[p]);
    ctx.fillRect(x, y, size, size);
    if (f & 4) {
      ctx.strokeStyle = COLOURS.hot; ctx.lineWidth = Math.max(1, cell / 4);
      ctx.strokeRect(x + 0.5, y + 0.5, cell - 1, cell - 1);
    }
  }
}

// Chip borders (between neighbouring pixels of different chips) and, if there is room, ids.
export function drawChips(ctx, layout, x0, y0, cell, xSign = 1, ySign = 1, labels = true) {
  const id = layout.chip_id;
  const X = (c) => x0 + (xSign < 0 ? SIDE - c : c) * cell;
  const Y = (r) => y0 + (ySign < 0 ? SIDE - r : r) * cell;
  ctx.strokeStyle = COLOURS.border; ctx.lineWidth = 1;
  ctx.beginPath();
  for (let r = 0; r < SIDE; r++) {
    for (let c = 0; c < SIDE; c++) {
      const p = r * SIDE + c;
      if (c + 1 < SIDE && id[p] !== id[p + 1]) { ctx.moveTo(X(c + 1), Y(r)); ctx.lineTo(X(c + 1), Y(r + 1)); }
      if (r + 1 < SIDE && id[p] !== id[p + SIDE]) { ctx.moveTo(X(c), Y(r + 1)); ctx.lineTo(X(c + 1), Y(r + 1)); }
    }
  }
  ctx.stroke();
  ctx.strokeStyle = COLOURS.tileEdge; ctx.lineWidth = 1.5;
  ctx.strokeRect(x0, y0, SIDE * cell, SIDE * cell);
  if (!labels || cell < 5) return;
  ctx.font = `${Math.round(cell * 1.5)}px system-ui, sans-serif`;
  ctx.textAlign = "center"; ctx.textBaseline = "middle";
  for (const [chip, [cx, cy]] of layout.centre) {
    const x = X(cx + 0.5), y = Y(cy + 0.5);
    ctx.fillStyle = "rgba(255,255,255,.6)";
    const w = ctx.measureText(String(chip)).width + 2;
    ctx.fillRect(x - w / 2, y - 0.8 * cell, w, 1.6 * cell);
    ctx.fillStyle = "#111827";
    ctx.fillText(String(chip), x, y);
  }
}

// A chip-by-chip tile (detector view): values by chip id, on the 10 x 10 grid of chips.
export function drawTileChips(ctx, layout, x0, y0, size, byChip, scale, xSign, ySign) {
  const cell = size / (SIDE / CHIP_SIDE);
  for (const chip of layout.chips) {
    const [cx, cy] = layout.centre.get(chip);
    let c = Math.floor(cx / CHIP_SIDE), r = Math.floor(cy / CHIP_SIDE);
    if (xSign < 0) c = SIDE / CHIP_SIDE - 1 - c;
    if (ySign < 0) r = SIDE / CHIP_SIDE - 1 - r;
    ctx.fillStyle = fill(scale, byChip.has(chip) ? byChip.get(chip) : null);
    ctx.fillRect(x0 + c * cell, y0 + r * cell, Math.ceil(cell), Math.ceil(cell));
  }
  ctx.strokeStyle = "rgba(15,23,42,.25)"; ctx.lineWidth = 0.5;
  for (let k = 1; k < SIDE / CHIP_SIDE; k++) {
    ctx.beginPath(); ctx.moveTo(x0 + k * cell, y0); ctx.lineTo(x0 + k * cell, y0 + size); ctx.stroke();
    ctx.beginPath(); ctx.moveTo(x0, y0 + k * cell); ctx.lineTo(x0 + size, y0 + k * cell); ctx.stroke();
  }
  ctx.strokeStyle = COLOURS.tileEdge; ctx.lineWidth = 1;
  ctx.strokeRect(x0, y0, size, size);
}

// The colour bar, with tick values and the unit.
export function drawScale(canvas, scale, title) {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const h = canvas.height - 20, top = 10;
  for (let i = 0; i < h; i++) {
    ctx.fillStyle = colour(Math.max(1e-6, 1 - i / h));
    ctx.fillRect(0, top + i, 14, 1);
  }
  ctx.fillStyle = "#1d2430"; ctx.font = "11px system-ui, sans-serif";
  ctx.textAlign = "left"; ctx.textBaseline = "middle";
  const ticks = 5;
  for (let k = 0; k < ticks; k++) {
    const f = k / (ticks - 1);
    let v;
    if (scale.log) v = 10 ** (f * Math.log10(1 + scale.hi)) - 1;
    else v = scale.lo + f * (scale.hi - scale.lo);
    const y = top + h - f * h;
    ctx.fillRect(14, y, 4, 1);
    ctx.fillText(fmt(v), 20, y);
  }
  ctx.save(); ctx.translate(canvas.width - 6, top + h / 2); ctx.rotate(-Math.PI / 2);
  ctx.textAlign = "center";
  ctx.fillText(`${title}${scale.unit ? ` (${scale.unit})` : ""}${scale.log ? ", log" : ""}`, 0, 0);
  ctx.restore();
}

// Panels of tiles in detector coordinates: one per (module, anode), the tiles where their
// centres are. Returns [{module, anode, io_group, tiles: [{tile, x, y}]}] with x, y in
// "tile widths" from the panel's top-left corner (y grows down).
export function panels(tiles, pitch) {
  const width = SIDE * pitch;
  const groups = new Map();
  for (const t of tiles) {
    const k = `${t.module}/${t.anode}`;
    (groups.get(k) || groups.set(k, []).get(k)).push(t);
  }
  const out = [];
  for (const [, ts] of [...groups].sort((a, b) => a[1][0].module - b[1][0].module || a[1][0].anode - b[1][0].anode)) {
    const xs = ts.map((t) => t.x_mm), ys = ts.map((t) => t.y_mm);
    const x0 = Math.min(...xs) - width / 2, y1 = Math.max(...ys) + width / 2;
    const cols = Math.round((Math.max(...xs) - Math.min(...xs)) / width) + 1;
    const rows = Math.round((Math.max(...ys) - Math.min(...ys)) / width) + 1;
    out.push({ module: ts[0].module, anode: ts[0].anode, io_group: ts[0].io_group, cols, rows,
      tiles: ts.map((t) => ({ ...t, x: (t.x_mm - width / 2 - x0) / width, y: (y1 - t.y_mm - width / 2) / width })) });
  }
  return out;
}
