// Small canvas plots: a pixel map, a line plot with its average, a histogram. No library.

const STOPS = [ // a perceptually even dark-blue -> yellow ramp
  [68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37],
];

export function colour(f) {
  if (!(f > 0)) return "#f1f3f6";
  const x = Math.min(1, f) * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(x));
  const t = x - i;
  const c = STOPS[i].map((v, k) => Math.round(v + t * (STOPS[i + 1][k] - v)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

function setup(canvas) {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.font = "11px system-ui, sans-serif";
  return ctx;
}

export function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

export function fmt(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (Number.isInteger(v) && a < 1e4) return String(v);
  if (a >= 1e6) return (v / 1e6).toFixed(2) + "M";
  if (a >= 1e4) return (v / 1e3).toFixed(1) + "k";
  if (a >= 100) return v.toFixed(0);
  if (a >= 1) return v.toFixed(1);
  return v.toFixed(2);
}

// values: one number per pixel, row-major, side x side; y grows upwards (row 0 at the bottom).
// A logarithmic colour scale by default: a few hot channels must not hide all the others.
export function drawHitmap(canvas, scaleCanvas, values, side, log = true) {
  const ctx = setup(canvas);
  const cell = canvas.width / side;
  const max = values.reduce((a, b) => (b > a ? b : a), 0);
  const top = niceMax(max);
  const norm = log ? (v) => Math.log10(1 + v) / Math.log10(1 + top) : (v) => v / top;
  for (let p = 0; p < values.length; p++) {
    const x = p % side, y = Math.floor(p / side);
    ctx.fillStyle = colour(norm(values[p]));
    ctx.fillRect(x * cell, (side - 1 - y) * cell, Math.ceil(cell), Math.ceil(cell));
  }
  // chip boundaries every 7 pixels
  ctx.strokeStyle = "rgba(0,0,0,.12)";
  ctx.lineWidth = 1;
  for (let k = 7; k < side; k += 7) {
    ctx.beginPath(); ctx.moveTo(k * cell + .5, 0); ctx.lineTo(k * cell + .5, canvas.height); ctx.stroke();
    ctx.beginPath(); ctx.moveTo(0, k * cell + .5); ctx.lineTo(canvas.width, k * cell + .5); ctx.stroke();
  }
  if (scaleCanvas) {
    const s = setup(scaleCanvas);
    const h = scaleCanvas.height;
    for (let i = 0; i < h; i++) {
      s.fillStyle = colour(1 - i / h || 1e-9);
      s.fillRect(0, i, 10, 1);
    }
    s.fillStyle = "#1d2430";
    s.save(); s.translate(20, h / 2); s.rotate(-Math.PI / 2);
    s.textAlign = "center"; s.fillText(`0 … ${fmt(top)} Hz${log ? " (log)" : ""}`, 0, 0); s.restore();
  }
  return top;
}

export function pixelAt(canvas, event, side) {
  const r = canvas.getBoundingClientRect();
  const x = Math.floor((event.clientX - r.left) / r.width * side);
  const yTop = Math.floor((event.clientY - r.top) / r.height * side);
  if (x < 0 || x >= side || yTop < 0 || yTop >= side) return -1;
  return (side - 1 - yTop) * side + x;
}

const PAD = { l: 48, r: 10, t: 10, b: 24 };

function axes(ctx, w, h, ymax, xlabels) {
  ctx.strokeStyle = "#d6dae1"; ctx.fillStyle = "#6b7485"; ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = PAD.t + (h - PAD.t - PAD.b) * (1 - i / 4);
    ctx.beginPath(); ctx.moveTo(PAD.l, Math.round(y) + .5); ctx.lineTo(w - PAD.r, Math.round(y) + .5); ctx.stroke();
    ctx.textAlign = "right"; ctx.fillText(fmt(ymax * i / 4), PAD.l - 6, y + 4);
  }
  ctx.textAlign = "center";
  for (const [x, text] of xlabels) ctx.fillText(text, x, h - 6);
}

// points: [[x, y], ...]; xmin..xmax the axis range; average drawn dashed.
export function drawLine(canvas, points, xmin, xmax, average, xlabel) {
  const ctx = setup(canvas);
  const w = canvas.width, h = canvas.height;
  const ymax = niceMax(Math.max(average || 0, ...points.map((p) => p[1])));
  const X = (x) => PAD.l + (x - xmin) / Math.max(1e-9, xmax - xmin) * (w - PAD.l - PAD.r);
  const Y = (y) => PAD.t + (1 - y / ymax) * (h - PAD.t - PAD.b);
  const labels = [];
  for (let k = 0; k <= 4; k++) {
    const x = xmin + (xmax - xmin) * k / 4;
    labels.push([X(x), xlabel(x)]);
  }
  axes(ctx, w, h, ymax, labels);
  if (points.length) {
    ctx.beginPath();
    points.forEach(([x, y], i) => (i ? ctx.lineTo(X(x), Y(y)) : ctx.moveTo(X(x), Y(y))));
    ctx.strokeStyle = "#2563eb"; ctx.lineWidth = 2; ctx.stroke();
    ctx.lineTo(X(points[points.length - 1][0]), Y(0)); ctx.lineTo(X(points[0][0]), Y(0));
    ctx.fillStyle = "rgba(37,99,235,.10)"; ctx.fill();
  }
  if (average > 0) {
    ctx.setLineDash([6, 4]); ctx.strokeStyle = "#b45309"; ctx.lineWidth = 1.5;
    ctx.beginPath(); ctx.moveTo(PAD.l, Y(average)); ctx.lineTo(w - PAD.r, Y(average)); ctx.stroke();
    ctx.setLineDash([]); ctx.fillStyle = "#b45309"; ctx.textAlign = "left";
    ctx.fillText(`average ${fmt(average)} Hz`, PAD.l + 6, Math.max(PAD.t + 10, Y(average) - 5));
  }
}

export function drawHistogram(canvas, counts) {
  const ctx = setup(canvas);
  const w = canvas.width, h = canvas.height;
  const ymax = niceMax(Math.max(0, ...counts));
  const n = counts.length;
  const bw = (w - PAD.l - PAD.r) / n;
  axes(ctx, w, h, ymax, [0, 64, 128, 192, 255].map((v) => [PAD.l + (v + .5) * bw, String(v)]));
  ctx.fillStyle = "#15803d";
  counts.forEach((c, i) => {
    if (!c) return;
    const y = PAD.t + (1 - c / ymax) * (h - PAD.t - PAD.b);
    ctx.fillRect(PAD.l + i * bw, y, Math.max(1, bw), h - PAD.b - y);
  });
}
