// Turning what the page's inputs hold into parameter values, and docstrings into text.
import { el } from "./dom.js";

// A docstring as text: paragraphs, ``code`` and :role:`name` as code, no markup shown.
export function docNodes(text) {
  const out = [];
  for (const para of String(text || "").split(/\n\s*\n/)) {
    const line = para.replace(/\s*\n\s*/g, " ").trim();
    if (!line) continue;
    const p = el("p");
    const re = /``([^`]+)``|:[a-z]+:`~?([^`]+)`|`([^`]+)`/g;
    let at = 0, m;
    while ((m = re.exec(line)) !== null) {
      p.append(line.slice(at, m.index));
      const code = m[1] ?? m[2] ?? m[3];
      p.append(el("code", { text: m[2] ? code.split(".").pop() : code }));
      at = re.lastIndex;
    }
    p.append(line.slice(at));
    out.push(p);
  }
  return out;
}

export function paramValue(input) {
  const kind = input.dataset.kind;
  if (input.type === "checkbox") return input.checked;
  const raw = input.value.trim();
  if (kind === "int") { const v = Number.parseInt(raw, 10); if (Number.isNaN(v)) throw new Error(`${input.name} must be an integer`); return v; }
  if (kind === "float") { const v = Number(raw); if (Number.isNaN(v)) throw new Error(`${input.name} must be a number`); return v; }
  if (kind === "str") return raw;
  try { return JSON.parse(raw); } catch { return raw; }
}

export function routineValue(input) {
  const type = input.dataset.type;
  if (input.tagName === "SELECT") return JSON.parse(input.value);
  if (input.type === "checkbox") return input.checked;
  const raw = input.value.trim();
  if (type === "int" || type === "float") {
    const v = Number(raw);
    if (raw === "" || Number.isNaN(v) || (type === "int" && !Number.isInteger(v))) {
      throw new Error(`${input.name} must be ${type === "int" ? "a whole number" : "a number"}`);
    }
    return v;
  }
  if (type.startsWith("list")) {
    const items = raw.split(/[\s,]+/).filter((x) => x !== "");
    return type.includes("int") || type.includes("float") ? items.map(Number) : items;
  }
  return raw;
}
