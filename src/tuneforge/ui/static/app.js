// tuneforge ui: one page, no build step. The server owns every decision (validate, plan, runs);
// this file only draws what it answers. Run state is re-read from the server on every poll, so a
// refresh or a restarted UI shows the same runs (the run folders are the source of truth).
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
};
const state = { spec: null, info: null, config: { method: "sft", data: { format: "chat", train: "" } }, check: null, selected: new Set(), detail: null };

function headers() {
  const key = localStorage.getItem("tuneforge_ui_key");
  return key ? { Authorization: `Bearer ${key}`, "Content-Type": "application/json" } : { "Content-Type": "application/json" };
}
async function api(path, body) {
  const res = await fetch(path, body === undefined ? { headers: headers() } : { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (res.status === 401) {
    const key = prompt("This page needs the key given to `tuneforge ui`:");
    if (key) { localStorage.setItem("tuneforge_ui_key", key); document.cookie = `tuneforge_ui_key=${encodeURIComponent(key)}; path=/; SameSite=Strict`; return api(path, body); }
  }
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.detail || data.error || res.statusText);
  return data;
}

// ------------------------------------------------------------------ config object helpers
function getKey(obj, key) { return key.split(".").reduce((o, k) => (o && typeof o === "object" ? o[k] : undefined), obj); }
function setKey(obj, key, value) {
  const parts = key.split(".");
  let node = obj;
  for (const p of parts.slice(0, -1)) { if (typeof node[p] !== "object" || node[p] === null) node[p] = {}; node = node[p]; }
  if (value === undefined) delete node[parts.at(-1)]; else node[parts.at(-1)] = value;
  prune(obj);
}
function prune(obj) {
  for (const [k, v] of Object.entries(obj)) if (v && typeof v === "object" && !Array.isArray(v)) { prune(v); if (!Object.keys(v).length) delete obj[k]; }
}
const shown = (v) => (v === undefined ? "" : typeof v === "string" ? v : JSON.stringify(v));

// ------------------------------------------------------------------ the form
function fieldsFor() {
  const method = state.config.method;
  const fields = (state.spec.methods[method] || []).slice();
  const adapter = getKey(state.config, "adapter.type");
  const adapterField = { key: "adapter.type", kind: "choice", choices: [null, ...Object.keys(state.spec.adapters)], default: null, description: "Train an adapter (LoRA …) or, left empty, every weight.", required: false };
  const index = fields.findIndex((f) => f.key.startsWith("data."));
  fields.splice(index, 0, adapterField, ...(adapter ? state.spec.adapters[adapter] || [] : []));
  return fields;
}
function input(field) {
  const value = getKey(state.config, field.key);
  let node;
  if (field.kind === "choice" || field.kind === "bool") {
    const choices = field.kind === "bool" ? [true, false] : field.choices;
    node = el("select", { "data-key": field.key });
    node.append(el("option", { value: "" }, field.default === null || field.default === undefined ? "(not set)" : `(default: ${shown(field.default)})`));
    for (const c of choices) if (c !== null) node.append(el("option", { value: JSON.stringify(c) }, String(c)));
    node.value = value === undefined ? "" : JSON.stringify(value);
  } else {
    node = el("input", { "data-key": field.key, placeholder: field.default === null || field.default === undefined ? "" : shown(field.default) });
    node.value = shown(value);
  }
  node.addEventListener("change", () => onField(field, node.value));
  return node;
}
function onField(field, text) {
  let value;
  if (text === "") value = undefined;
  else if (field.kind === "choice" || field.kind === "bool") value = JSON.parse(text);
  else if (field.kind === "int" || field.kind === "number") value = Number.isNaN(Number(text)) ? text : Number(text);
  else if (field.kind === "yaml") { try { value = JSON.parse(text); } catch { value = text; } }
  else value = text;
  if (field.key === "adapter.type") { state.config.adapter = value ? { type: value } : undefined; if (!value) delete state.config.adapter; }
  else setKey(state.config, field.key, value);
  renderForm();
  scheduleCheck();
}
function renderForm() {
  const form = $("#form");
  form.replaceChildren();
  const groups = new Map();
  for (const f of fieldsFor()) {
    const top = f.key.split(".").length > 1 ? f.key.split(".")[0] : "run";
    if (!groups.has(top)) groups.set(top, []);
    groups.get(top).push(f);
  }
  const open = new Set(["run", "model", "adapter", "data", "training"]);
  for (const [name, fields] of groups) {
    const section = el("details", { class: "section", "data-section": name }, el("summary", {}, name));
    if (open.has(name) || fields.some((f) => getKey(state.config, f.key) !== undefined)) section.open = true;
    for (const f of fields) {
      const set = getKey(state.config, f.key) !== undefined;
      section.append(el("div", { class: `field${set ? " set" : ""}`, "data-field": f.key },
        el("label", { title: f.key }, f.key.split(".").slice(name === "run" ? 0 : 1).join(".") + (f.required ? " *" : "")),
        input(f),
        f.description ? el("div", { class: "desc" }, f.description) : "",
        el("div", { class: "err" })));
    }
    form.append(section);
  }
  showErrors();
}
function showErrors() {
  const result = state.check || { errors: [] };
  document.querySelectorAll(".field").forEach((f) => { f.classList.remove("has-error"); $(".err", f).textContent = ""; });
  const top = $("#top-errors");
  top.replaceChildren();
  for (const e of result.errors || []) {
    const field = document.querySelector(`.field[data-field="${CSS.escape(e.key)}"]`);
    if (field) {
      field.classList.add("has-error");
      $(".err", field).textContent = (($(".err", field).textContent && $(".err", field).textContent + " · ") || "") + e.message;
      const section = field.closest("details"); if (section) section.open = true;
    }
    top.append(el("li", { "data-key": e.key }, e.message));
  }
  $("#warnings").replaceChildren(...(result.warnings || []).map((w) => el("li", {}, w)));
  const facts = result.facts || {};
  $("#facts").replaceChildren(...["data", "adapter", "precision"].filter((k) => facts[k]).map((k) => el("div", {}, `${k}: ${facts[k]}`)));
}

// ------------------------------------------------------------------ checking and the plan
let checkTimer = null, checkSeq = 0;
function scheduleCheck(fromYaml = false) {
  clearTimeout(checkTimer);
  checkTimer = setTimeout(() => runCheck(fromYaml), 400);
}
async function runCheck(fromYaml) {
  // Two passes: the schema (instant: the form and the YAML follow at once), then validate + plan.
  const seq = ++checkSeq;
  $("#check-state").textContent = "checking …";
  $("#check-state").className = "muted";
  const body = fromYaml ? { yaml: $("#yaml").value } : { config: state.config };
  for (const full of [false, true]) {
    const result = await api("/api/check", { ...body, full }).catch((e) => ({ errors: [{ key: "", message: String(e) }] }));
    if (seq !== checkSeq || result.stale) return;
    state.check = result;
    if (result.config && !full) {
      if (fromYaml) { state.config = result.config; $("#method").value = state.config.method || ""; renderForm(); }
      if (!fromYaml || document.activeElement !== $("#yaml")) $("#yaml").value = result.yaml;
      $("#download").href = "data:text/yaml;charset=utf-8," + encodeURIComponent($("#yaml").value);
    }
    showErrors();
    renderPlan(result.plan);
    const n = (result.errors || []).length;
    if (n || full) {
      $("#check-state").textContent = n ? `${n} problem(s)` : result.stage === "plan" ? "valid ✓" : "";
      $("#check-state").className = n ? "fits no" : "fits yes";
      if (n) return;
    }
  }
}
const fmtS = (s) => (s < 0.1 ? `${(s * 1000).toFixed(1)} ms` : s < 120 ? `${s.toFixed(s < 10 ? 2 : 0)} s` : s < 7200 ? `${(s / 60).toFixed(1)} min` : `${(s / 3600).toFixed(1)} h`);
const fmtMB = (mb) => (mb >= 1024 ? `${(mb / 1024).toFixed(2)} GiB` : `${mb.toFixed(1)} MiB`);
function renderPlan(plan) {
  const box = $("#plan");
  if (!plan) { box.replaceChildren(el("p", { class: "muted" }, "The plan appears when the config passes its checks.")); return; }
  if (plan.error) { box.replaceChildren(el("p", { class: "muted" }, plan.error)); return; }
  const facts = (state.check && state.check.facts) || {};
  const trainable = facts.trainable_parameters ? `${Number(facts.trainable_parameters).toLocaleString()} of ${Number(facts.total_parameters).toLocaleString()} (${facts.trainable_percent}%)` : "all parameters";
  const fits = plan.fits === null ? el("span", { class: "fits" }, "free memory unknown") : el("span", { class: `fits ${plan.fits ? "yes" : "no"}`, id: "plan-fits" }, plan.fits ? "fits" : "does not fit");
  const rows = Object.entries(plan.memory_mb).map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", { class: "num" }, fmtMB(v))));
  state.plannedSteps = plan.steps;
  box.replaceChildren(
    el("div", { class: "big", id: "plan-trainable" }, `trainable parameters: ${trainable}`),
    el("div", { id: "plan-time" }, `time: ${fmtS(plan.step_seconds)} per step × ${plan.steps} steps = `, el("b", {}, fmtS(plan.run_seconds)), ` (${plan.device} ${plan.precision})`),
    el("div", {}, "memory: peak ", el("b", { id: "plan-peak" }, fmtMB(plan.peak_memory_mb)), plan.free_memory_mb ? ` of ${fmtMB(plan.free_memory_mb)} free — ` : " — ", fits),
    el("table", { class: "plan-table" }, rows),
    el("div", { class: "muted" }, plan.data || ""),
    ...(plan.notes || []).map((n) => el("div", { class: "muted" }, "! " + n)));
}

// ------------------------------------------------------------------ data preview
async function preview() {
  $("#preview-panel").hidden = false;
  $("#preview").replaceChildren(el("p", { class: "muted" }, "rendering …"));
  const result = await api("/api/preview", { config: state.config, n: 4 }).catch((e) => ({ errors: [String(e)], rows: [] }));
  const box = $("#preview");
  box.replaceChildren();
  for (const e of result.errors || []) box.append(el("p", { class: "fits no" }, e));
  if (result.facts && result.facts.data) box.append(el("p", {}, `${result.facts.data}; ${result.total_rows} training rows of up to ${result.max_length} tokens; truncated examples: ${result.facts.truncated ?? "?"}`));
  for (const w of result.warnings || []) box.append(el("p", { class: "warnings" }, "! " + w));
  result.rows.forEach((row, i) => {
    for (const seq of row.sequences) {
      const head = `row ${i + 1}${row.sequences.length > 1 ? " · " + seq.name : ""} · ${seq.length} tokens · ${row.examples} example(s)${row.examples > 1 ? " packed" : ""} · ${row.loss_tokens} loss tokens${row.full ? " · filled to max_length (may be cut)" : ""}`;
      const fields = Object.entries(row.fields).map(([k, v]) => `${k}=${v}`).join(" ");
      const tokens = el("div", { class: "tokens" });
      let last = 0;
      for (const t of seq.tokens) {
        if (t.example !== last) { tokens.append(el("span", { class: "boundary", title: "a packed example starts" }, "▌")); last = t.example; }
        tokens.append(el("span", { class: `tok ex${t.example % 2}${t.loss ? " loss" : ""}` }, t.text));
      }
      box.append(el("div", { class: "row-head" }, head + (fields ? " · " + fields : "")), tokens);
    }
  });
}

// ------------------------------------------------------------------ charts (plain SVG)
const COLORS = ["#2457c5", "#d92d20", "#067647", "#9a6700", "#7a2ec4", "#0e7490"];
function chart(title, series, { width = 330, height = 170 } = {}) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", width); svg.setAttribute("height", height); svg.setAttribute("class", "chart"); svg.setAttribute("data-title", title);
  const add = (tag, attrs, text) => { const n = document.createElementNS(ns, tag); for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v); if (text !== undefined) n.textContent = text; svg.append(n); return n; };
  add("text", { x: 8, y: 14, class: "title" }, title);
  const pts = series.flatMap((s) => s.points);
  if (!pts.length) { add("text", { x: 8, y: 40 }, "no points yet"); return svg; }
  const [x0, x1] = [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))];
  const [y0, y1] = [Math.min(...pts.map((p) => p[1])), Math.max(...pts.map((p) => p[1]))];
  const L = 46, R = 10, T = 22, B = 22;
  const sx = (x) => L + ((x - x0) / (x1 - x0 || 1)) * (width - L - R);
  const sy = (y) => height - B - ((y - y0) / (y1 - y0 || 1)) * (height - T - B);
  add("line", { x1: L, y1: height - B, x2: width - R, y2: height - B, stroke: "#ccc" });
  add("text", { x: 4, y: T + 8 }, y1.toPrecision(3)); add("text", { x: 4, y: height - B }, y0.toPrecision(3));
  add("text", { x: L, y: height - 6 }, `step ${x0}`); add("text", { x: width - R - 50, y: height - 6 }, `step ${x1}`);
  series.forEach((s, i) => {
    if (!s.points.length) return;
    add("polyline", { fill: "none", stroke: COLORS[i % COLORS.length], "stroke-width": 1.6, points: s.points.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" "), "data-series": s.name, "data-points": s.points.length });
    if (series.length > 1) add("text", { x: width - R - 110, y: T + 12 * (i + 1), fill: COLORS[i % COLORS.length], style: `fill:${COLORS[i % COLORS.length]}` }, s.name);
  });
  return svg;
}
const curve = (metrics, key) => metrics.filter((m) => typeof m[key] === "number").map((m) => [m.step, m[key]]);

// ------------------------------------------------------------------ runs
async function launch() {
  $("#launch-state").textContent = "launching …";
  try {
    const res = await api("/api/runs", { config: state.config, steps: state.plannedSteps });
    $("#launch-state").textContent = `launched ${res.name}`;
    state.detail = res.name;
    switchTab("runs");
  } catch (e) { $("#launch-state").textContent = String(e.message || e); $("#launch-state").className = "fits no"; }
}
const fmtNum = (v) => (typeof v === "number" ? (Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(3)) : "—");
async function refreshRuns() {
  const { runs } = await api("/api/runs").catch(() => ({ runs: [] }));
  state.runs = runs;
  const methods = $("#filter-method");
  for (const m of new Set(runs.map((r) => r.method))) if (m && ![...methods.options].some((o) => o.value === m)) methods.append(el("option", { value: m }, m));
  const text = $("#filter-text").value.toLowerCase(), status = $("#filter-status").value, method = methods.value;
  const rows = runs.filter((r) => (!text || (r.name + " " + r.model).toLowerCase().includes(text)) && (!status || r.status === status) && (!method || r.method === method));
  $("#runs-table tbody").replaceChildren(...rows.map((r) => {
    const box = el("input", { type: "checkbox", "data-run": r.name, onclick: (ev) => { ev.stopPropagation(); box.checked ? state.selected.add(r.name) : state.selected.delete(r.name); } });
    box.checked = state.selected.has(r.name);
    const actions = el("td", {});
    if (r.status === "running") actions.append(el("button", { "data-action": "stop", onclick: (ev) => { ev.stopPropagation(); api(`/api/runs/${r.name}/stop`, {}).then(refreshRuns); } }, "Stop"));
    if (r.status === "stopped") actions.append(el("button", { "data-action": "resume", onclick: (ev) => { ev.stopPropagation(); api(`/api/runs/${r.name}/resume`, {}).then(refreshRuns).catch((e) => alert(e.message)); } }, "Resume"));
    return el("tr", { "data-run": r.name, class: r.name === state.detail ? "selected" : "", onclick: () => { state.detail = r.name; refreshDetail(); refreshRuns(); } },
      el("td", {}, box), el("td", {}, r.name), el("td", {}, el("span", { class: `status ${r.status}`, "data-status": r.status }, r.status)),
      el("td", {}, r.method), el("td", {}, r.model), el("td", {}, r.adapter),
      el("td", {}, r.key_metric ? `${r.key_metric}: ${fmtNum(r.before)} → ${fmtNum(r.after)}` : "—"),
      el("td", {}, r.total_steps ? `${r.step} / ${r.total_steps}` : String(r.step)),
      el("td", {}, r.eta_seconds != null ? fmtS(r.eta_seconds) : "—"),
      el("td", {}, r.wall_seconds != null ? fmtS(r.wall_seconds) : "—"),
      el("td", {}, r.report ? el("a", { href: `/runs/${r.name}/report.html`, target: "_blank", class: "report-link" }, "report") : "—"),
      actions);
  }));
  renderPlayRuns();
}
async function refreshDetail() {
  if (!state.detail) return;
  const d = await api(`/api/runs/${state.detail}`).catch(() => null);
  const box = $("#run-detail");
  if (!d) return;
  box.hidden = false;
  const m = d.metrics;
  const parts = [el("h2", {}, `${d.name} · ${d.status}${d.eta_seconds != null ? " · ETA " + fmtS(d.eta_seconds) : ""}`),
    el("div", { class: "charts", id: "run-charts" },
      chart("loss", [{ name: "loss", points: curve(m, "loss") }, { name: "eval_loss", points: curve(m, "eval_loss") }]),
      chart("learning rate", [{ name: "lr", points: curve(m, "lr") }]),
      chart("tokens / s", [{ name: "tokens_per_second", points: curve(m, "tokens_per_second") }]))];
  if (d.r_matrix) {
    const r = d.r_matrix;
    parts.push(el("h2", {}, "R matrix (score on each stage after training each stage)"),
      el("table", { class: "table" }, el("tr", {}, el("th", {}, ""), ...r.columns.map((c) => el("th", {}, c))),
        ...r.values.map((row, i) => el("tr", {}, el("th", {}, r.rows[i]), ...row.map((v) => el("td", {}, fmtNum(v)))))));
  }
  parts.push(el("div", { class: "log" }, d.log.join("\n")));
  box.replaceChildren(...parts);
}

// ------------------------------------------------------------------ compare
async function compare() {
  const names = [...state.selected];
  switchTab("compare");
  if (names.length < 2) { $("#compare").replaceChildren(el("p", { class: "muted" }, "Select two or more runs.")); return; }
  const { runs, diff } = await api("/api/compare", { names });
  const metrics = [...new Set(names.flatMap((n) => Object.keys((runs[n].summary || {}).after || {})))];
  const ba = el("table", { class: "table", id: "compare-metrics" }, el("tr", {}, el("th", {}, "metric"), ...names.map((n) => el("th", {}, `${n}: before → after`))),
    ...metrics.map((k) => el("tr", {}, el("td", {}, k), ...names.map((n) => { const s = runs[n].summary || {}; return el("td", {}, `${fmtNum((s.before || {})[k])} → ${fmtNum((s.after || {})[k])}`); }))));
  const cd = el("table", { class: "table diff", id: "compare-diff" }, el("tr", {}, el("th", {}, "config key"), ...names.map((n) => el("th", {}, n))),
    ...diff.map((row) => el("tr", {}, el("td", {}, row.key), ...names.map((n) => el("td", {}, shown(row.values[n]))))));
  $("#compare").replaceChildren(el("div", { class: "panel" }, el("h2", {}, `Comparing ${names.join(", ")}`),
    el("div", { class: "charts" }, chart("loss", names.map((n) => ({ name: n, points: curve(runs[n].metrics, "loss") })), { width: 520, height: 220 }),
      chart("learning rate", names.map((n) => ({ name: n, points: curve(runs[n].metrics, "lr") })), { width: 520, height: 220 }))),
    el("div", { class: "panel" }, el("h2", {}, "Before / after"), ba), el("div", { class: "panel" }, el("h2", {}, "Config diff"), cd));
}

// ------------------------------------------------------------------ playground
function renderPlayRuns() {
  const box = $("#play-runs");
  const ready = (state.runs || []).filter((r) => r.status === "finished");
  const ticked = new Set([...box.querySelectorAll("input:checked")].map((i) => i.value));
  box.replaceChildren(...ready.map((r) => { const cb = el("input", { type: "checkbox", value: r.name, "data-play": r.name }); cb.checked = ticked.has(r.name); return el("label", { style: "margin-right:12px" }, cb, ` ${r.name}`); }));
}
async function loadModels() {
  const adapters = [...document.querySelectorAll("#play-runs input:checked")].map((i) => i.value);
  $("#play-state").textContent = "starting the server …";
  try {
    const res = await api("/api/play/start", { base: $("#play-base").value, adapters });
    state.playModels = res.models;
    if (!$("#play-base").value) $("#play-base").value = res.base;
    $("#play-state").textContent = `ready: ${res.models.join(", ")}`;
    $("#play-answers").replaceChildren(...res.models.map((m) => el("div", { class: "answer", "data-model": m }, el("h3", {}, m), el("pre", {}))));
  } catch (e) { $("#play-state").textContent = String(e.message || e); }
}
async function send() {
  const prompt = $("#play-prompt").value;
  await Promise.all((state.playModels || []).map(async (model) => {
    const out = $(`.answer[data-model="${CSS.escape(model)}"] pre`);
    out.textContent = "";
    const res = await fetch("/api/play/chat", { method: "POST", headers: headers(), body: JSON.stringify({ model, prompt, max_tokens: 48 }) });
    const reader = res.body.getReader(), decoder = new TextDecoder();
    for (;;) { const { done, value } = await reader.read(); if (done) break; out.textContent += decoder.decode(value, { stream: true }); }
    out.parentElement.setAttribute("data-chars", String(out.textContent.length));
    out.parentElement.append(el("div", { class: "muted" }, `${out.textContent.length} characters streamed`));
    out.parentElement.setAttribute("data-done", "1");
  }));
}

// ------------------------------------------------------------------ wiring
function switchTab(name) {
  document.querySelectorAll("nav button").forEach((b) => b.classList.toggle("active", b.dataset.tab === name));
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.id === `tab-${name}`));
  if (name === "runs") { refreshRuns(); refreshDetail(); }
}
async function startFrom(yamlText) {
  clearTimeout(checkTimer);  // a check of the previous form still waiting must not overwrite this one
  $("#yaml").value = yamlText;
  await runCheck(true);
}
async function main() {
  [state.info, state.spec] = await Promise.all([api("/api/info"), api("/api/form")]);
  $("#project").textContent = `project ${state.info.project} · runs ${state.info.runs}`;
  $("#method").replaceChildren(...state.info.methods.map((m) => el("option", { value: m }, m)));
  $("#method").value = state.config.method;
  $("#method").addEventListener("change", () => { state.config.method = $("#method").value; renderForm(); scheduleCheck(); });
  document.querySelectorAll("nav button").forEach((b) => b.addEventListener("click", () => switchTab(b.dataset.tab)));
  $("#start-quickstart").addEventListener("click", () => startFrom(state.info.quickstart));
  $("#yaml").addEventListener("input", () => scheduleCheck(true));
  $("#preview-button").addEventListener("click", preview);
  $("#launch-button").addEventListener("click", launch);
  $("#compare-button").addEventListener("click", compare);
  ["#filter-text", "#filter-status", "#filter-method"].forEach((s) => $(s).addEventListener("input", refreshRuns));
  $("#play-load").addEventListener("click", loadModels);
  $("#play-send").addEventListener("click", send);
  renderForm();
  scheduleCheck();
  refreshRuns();
  setInterval(() => { if ($("#tab-runs").classList.contains("active")) { refreshRuns(); refreshDetail(); } }, 1500);
  document.body.setAttribute("data-ready", "1");
}
main();
