// The routine results the producers kept on disk, in one table, newest first. Each producer
// is asked through the core (invoke routine_results, a viewer's read) like any other action.
import { $, el } from "./dom.js";

const LIMIT = 20;

// The table's rows from every producer's answer: newest first, at most LIMIT.
export function resultRows(answers) {
  const rows = [];
  for (const [component, answer] of answers) {
    for (const r of answer?.results || []) rows.push({ component, ...r });
  }
  rows.sort((a, b) => String(b.finished || "").localeCompare(String(a.finished || "")));
  return rows.slice(0, LIMIT);
}

const base = (path) => (path ? String(path).split("/").pop() : "");

export function renderRoutineResults(rows, note = "") {
  $("routine-results").tBodies[0].replaceChildren(...rows.map((r) => {
    // the message, then the summary's first lines (arrays by their shape)
    const summary = [r.message || "", ...(r.brief || []).map((l) => l.replace("  ", ": "))]
      .filter(Boolean).join("; ");
    const files = [base(r.summary_file), base(r.arrays_file)].filter(Boolean).join(", ");
    const t = r.finished ? new Date(r.finished).toLocaleString() : "–";
    return el("tr", {},
      el("td", { text: t, title: r.finished || "" }), el("td", { text: r.routine || "?" }),
      el("td", { text: r.board || r.component }),
      el("td", { text: r.status || "?", class: `status-${r.status}` }),
      el("td", { class: "summary", text: summary, title: summary }),
      el("td", { text: files, title: [r.summary_file, r.arrays_file].filter(Boolean).join("\n") }));
  }));
  $("routine-results-note").textContent = note;
}

// Asks every producer offering routine_results (``actions``: the components' actions) and
// fills the table; ``command`` is the page's one path to the core.
export async function refreshRoutineResults(command, actions) {
  const offering = Object.keys(actions).filter((c) => "routine_results" in (actions[c] || {})).sort();
  const answers = await Promise.all(offering.map(async (component) => {
    const r = await command("invoke", { component, action: "routine_results", params: { limit: LIMIT } });
    return [component, r.success ? r.data.result : null];
  }));
  const failed = answers.filter(([, a]) => a === null).map(([c]) => c);
  const keepless = answers.filter(([, a]) => a && a.directory === null).map(([c]) => c);
  const note = [failed.length ? `not answered: ${failed.join(", ")}` : "",
    keepless.length ? `keeping no results (no data directory): ${keepless.join(", ")}` : "",
    offering.length ? "" : "no producer keeps routine results"].filter(Boolean).join("; ");
  renderRoutineResults(resultRows(answers), note);
}
