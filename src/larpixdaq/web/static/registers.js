// The ASIC configuration editor's register table: showing, editing and comparing registers.
import { el } from "./dom.js";

// A register map is {name: number or list of numbers}, possibly under "registers" or "config".
// List registers (pixel_trim_dac, channel_mask, ...: one value per channel) are edited as
// space-separated numbers and sent element by element (`pixel_trim_dac[3]`), the form the
// producer's send_configuration takes.
function registersOf(result) {
  const regs = result.registers || result.config || result;
  const isNumbers = (v) => Array.isArray(v) && v.length && v.every((x) => typeof x === "number");
  return Object.fromEntries(Object.entries(regs).filter(([, v]) => typeof v === "number" || isNumbers(v)));
}

function listValues(input) {
  const words = input.value.trim().split(/[\s,]+/).filter((w) => w !== "");
  const values = words.map(Number);
  const n = input.dataset.orig.split(" ").length;
  if (values.length !== n || values.some((v) => !Number.isInteger(v))) {
    throw new Error(`${input.dataset.reg}: give ${n} whole numbers separated by spaces (got ${words.length})`);
  }
  return values;
}

// The registers edited in the table: {name: value} and {"name[i]": value} for list elements.
export function editedRegisters(table) {
  const out = {};
  for (const input of table.querySelectorAll("input[data-reg]")) {
    if (input.value === input.dataset.orig) continue;
    const reg = input.dataset.reg;
    if (input.dataset.list !== "1") {
      const v = Number(input.value);
      if (input.value.trim() === "" || !Number.isInteger(v)) throw new Error(`${reg}: give a whole number`);
      out[reg] = v;
      continue;
    }
    const was = input.dataset.orig.split(" ").map(Number);
    listValues(input).forEach((v, i) => { if (v !== was[i]) out[`${reg}[${i}]`] = v; });
  }
  return out;
}

export function showRegisters(table, result) {
  const regs = registersOf(result);
  table.replaceChildren(el("thead", {}, el("tr", {}, el("th", { text: "register" }), el("th", { text: "value" }))));
  const tb = el("tbody");
  for (const [name, value] of Object.entries(regs)) {
    const list = Array.isArray(value);
    const text = list ? value.join(" ") : String(value);
    const input = list ? el("input", { value: text, class: "reg-list", title: `${value.length} values, one per element` })
      : el("input", { value: text, type: "number", min: "0" });
    input.dataset.reg = name; input.dataset.orig = text;
    if (list) input.dataset.list = "1";
    input.oninput = () => input.parentElement.classList.toggle("changed", input.value !== input.dataset.orig);
    tb.append(el("tr", {}, el("td", { text: name }), el("td", {}, input)));
  }
  table.append(tb);
}

// Verification answers which registers differ; mark them in the table shown.
export function markDifferences(table, result) {
  const diff = result.differences || result.diff || {};
  const names = new Set(Array.isArray(diff) ? diff.map(String) : Object.keys(diff));
  for (const input of table.querySelectorAll("input[data-reg]")) {
    input.parentElement.previousSibling.classList.toggle("diff", names.has(input.dataset.reg));
  }
}

