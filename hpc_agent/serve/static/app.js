// hpc-agent serve: the live page. It polls /api/delta?since=<journal offset> and merges what
// changed (trials, configurations, the head); nothing here needs a reload. See docs/serve.md.
"use strict";

const POLL_MS = 2000, HIDDEN_POLL_MS = 10000, MAX_BACKOFF_MS = 15000;
const LEDGER_MAX_ROWS = 2000;  // drawn at once; filter or sort to reach the others
const S = { epoch: "", offset: 0, flightTag: "", now: 0, skew: 0, trials: new Map(), configs: new Map(), head: null, flight: [],
            driver: null, sort: { key: "config", dir: 1 }, xaxis: "n", plot: null, failures: 0,
            analyzedSeen: "", championSeen: "" };

const $ = (sel) => document.querySelector(sel);
function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function fmt(v, digits = 6) {
  if (v === null || v === undefined || v === "") return "";
  if (typeof v !== "number") return String(v);
  return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(digits)));
}
function dur(s) {
  if (s === null || s === undefined) return "";
  if (s < 10) return `${s.toFixed(1)}s`;
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h ? `${h}h${String(m).padStart(2, "0")}m` : m ? `${m}m${String(r).padStart(2, "0")}s` : `${r}s`;
}
function params(p) {
  return Object.entries(p || {}).map(([k, v]) => `${k}=${typeof v === "number" ? fmt(v, 4) : v}`).join(", ");
}
function trialLink(id) { return `<a class="trial-link" data-trial="${esc(id)}" href="#trial/${esc(id)}">${esc(id)}</a>`; }
function diffHtml(text) {
  return esc(text).split("\n").map((l) =>
    l.startsWith("+") && !l.startsWith("+++") ? `<span class="add">${l}</span>` :
    l.startsWith("-") && !l.startsWith("---") ? `<span class="del">${l}</span>` : l).join("\n");
}

// ------------------------------------------------------------------ polling

async function getJSON(url) {
  const r = await fetch(url, { credentials: "same-origin", cache: "no-store" });
  if (r.status === 403) throw Object.assign(new Error("the token was refused: open the URL hpc-agent serve printed"), { fatal: true });
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.json();
}

async function poll() {
  let wait = document.hidden ? HIDDEN_POLL_MS : POLL_MS;
  try {
    const d = await getJSON(`api/delta?since=${S.offset}&epoch=${encodeURIComponent(S.epoch)}&flight=${S.flightTag}`);
    merge(d);
    S.failures = 0;
    setConn("", "");
  } catch (e) {
    if (e.fatal) { setConn("token refused", "down"); showError(e.message); return; }
    S.failures += 1;
    wait = Math.min(MAX_BACKOFF_MS, POLL_MS * 2 ** S.failures);
    setConn("server unreachable: retrying", "down");
  }
  setTimeout(poll, wait);
}

function setConn(text, cls) { const el = $("#conn"); el.textContent = text; el.className = "badge " + cls; el.hidden = !text; }
function showError(text) { const el = $("#error"); el.textContent = text; el.hidden = !text; }

function merge(d) {
  if (d.full) { S.trials.clear(); S.configs.clear(); }
  S.epoch = d.epoch; S.offset = d.offset;
  for (const t of d.trials || []) S.trials.set(t.id, t);
  for (const c of d.configs || []) S.configs.set(c.config, c);
  if (d.flight) S.flight = d.flight;
  S.flightTag = d.flight_tag || ""; S.driver = d.driver;
  S.skew = d.now - Date.now() / 1000;  // the server's clock, for the elapsed times
  showError(d.error || "");
  if (d.head) {
    S.head = d.head;
    renderHead(); renderPlot(); renderLedger(); refreshLazy();
  }
  renderDriver(); renderFlight(); renderLive();
  $("#updated").textContent = "updated " + new Date(d.now * 1000).toLocaleTimeString();
}

// ------------------------------------------------------------------ the head

function renderDriver() {
  const el = $("#driver"), h = S.head || {};
  if (S.driver) { el.textContent = `driver running (pid ${S.driver.pid} on ${S.driver.host})`; el.className = "badge live"; }
  else { el.textContent = "driver not running" + (h.last_run_end ? ` (last run: ${h.last_run_end})` : ""); el.className = "badge stopped"; }
}

// what changes with the trials in flight as well as with the journal
function renderLive() {
  const h = S.head;
  if (!h) return;
  const c = h.counts, running = S.flight.filter((f) => f.state === "running").length;
  const inflight = [...new Set(S.flight.map((f) => f.gen))].sort((a, b) => a - b);
  $("#generations-detail").textContent = `${h.generations.planned} planned · ${h.schedule}` +
    (inflight.length ? ` · in flight: ${inflight.slice(-6).join(", ")}` : "") +
    (h.stopped ? ` · stopped: ${h.stopped}` : "") + (h.cancelled ? " · cancelled" : "");
  const live = { ...c, submitted: Math.max(0, c.submitted - running), running };
  $("#counts").textContent = Object.entries(live).filter(([, n]) => n).map(([k, n]) => `${n} ${k}`).join(" · ");
}

function renderHead() {
  const h = S.head;
  document.title = `${h.name}: hpc-agent`;
  $("#name").textContent = h.name;
  $("#goal").textContent = h.goal;
  document.querySelectorAll(".metric-name").forEach((el) => { el.textContent = `${h.metric} (${h.mode})`; });
  const g = h.generations;
  // async: generations are sized to the free slots, their number is no target (the budget is)
  $("#generations").textContent = `${g.done} done` + (g.target && h.schedule !== "async" ? ` / ${g.target}` : "");
  $("#trial-count").textContent = String(S.trials.size);
  const ch = h.champion;
  $("#champion-value").textContent = ch && ch.objective !== null ? fmt(ch.objective) : "–";
  $("#champion-detail").innerHTML = ch ? `<span id="champion-config">${esc(ch.config)}</span> (${ch.runs} run(s), ${trialLink(ch.trial)})` +
    (ch.margin !== null ? `<br>margin ${fmt(ch.margin, 3)} over the champion it replaced` + (ch.margin_sigma !== null ? ` (${ch.margin_sigma} σ)` : "") : "") : "none yet";
  $("#noise").textContent = h.noise.sigma === null ? "–" : `σ ${fmt(h.noise.sigma, 3)}`;
  $("#verdicts").textContent = (h.noise.sigma === null ? h.noise.text + "; " : `n = ${h.noise.n}, from ${h.noise.from}; `) +
    `${h.verdicts.keep} keep · ${h.verdicts.discard} discard · ${h.verdicts.crash} crash`;
  const b = h.budget || {};
  $("#budget").textContent = b.text || "–";
  const p = h.planner || {};
  let pl = p.name ? `${p.name}: generation ${p.generation}` + (p.planning ? " (planning now)" : p.seconds !== null && p.seconds !== undefined ? `, took ${fmt(p.seconds, 3)} s` : "") : "–";
  if (p.note) pl += ` · ${p.note}`;
  if (p.llm) pl += ` · LLM ${p.llm.model || ""} ${p.llm.purpose || ""}: ${p.llm.tokens_in ?? "?"} in, ${p.llm.tokens_out ?? "?"} out` +
    (p.llm.latency_s ? `, ${fmt(p.llm.latency_s, 3)} s` : "") + (p.llm.error ? ` · error: ${p.llm.error}` : "");
  $("#planner").textContent = pl;
}

// ------------------------------------------------------------------ the progress plot

function plotData() {
  const done = [...S.trials.values()].filter((t) => t.state === "completed" && t.objective !== null && t.purpose === "")
    .sort((a, b) => (a.ended_at - b.ended_at) || (a.id < b.id ? -1 : 1));
  const xs = done.map((t, i) => (S.xaxis === "t" ? t.ended_at : i + 1));
  const ys = done.map((t) => t.objective);
  const min = S.head.mode === "min", kept = S.head.champions || [];
  const champ = [];
  let best = null, k = 0, cur = null;
  for (const t of done) {
    if (kept.length) {
      while (k < kept.length && kept[k].t <= t.ended_at) { cur = kept[k].objective; k += 1; }
      champ.push(cur);
    } else {
      best = best === null ? t.objective : min ? Math.min(best, t.objective) : Math.max(best, t.objective);
      champ.push(best);
    }
  }
  return [xs, ys, champ];
}

function renderPlot() {
  const el = $("#plot"), data = plotData();
  const width = Math.max(320, el.clientWidth || 900);
  const kept = (S.head.champions || []).length > 0;
  if (S.plot && S.plot._xaxis === S.xaxis && S.plot._kept === kept) { S.plot.setData(data); return; }
  if (S.plot) S.plot.destroy();
  S.plot = new uPlot({
    width, height: 280,
    scales: { x: { time: S.xaxis === "t" } },
    axes: [{ label: S.xaxis === "t" ? "" : "trial (in the order they ended)" }, { label: S.head.metric, size: 70 }],
    series: [
      { label: S.xaxis === "t" ? "ended" : "trial #" },
      { label: "trial", stroke: "#0550ae", paths: () => null, points: { show: true, size: 5, fill: "#0550ae80" } },
      { label: kept ? "champion (kept)" : "best so far", stroke: "#1a7f37", width: 2, paths: uPlot.paths.stepped({ align: 1 }), points: { show: false } },
    ],
  }, data, el);
  S.plot._xaxis = S.xaxis; S.plot._kept = kept;
}

// ------------------------------------------------------------------ in flight and the ledger

function renderFlight() {
  const rows = S.flight.map((f) => {
    const last = Object.entries(f.last || {}).filter(([k]) => k === f.metric || k === "step").map(([k, v]) => `${k} ${fmt(v)}`).join(", ");
    return `<tr><td>${trialLink(f.id)}</td><td class="num">${f.gen}</td><td>${esc(f.job_id || "")}</td><td>${esc(f.state)}</td>` +
      `<td class="num">${f.started_at ? dur(Date.now() / 1000 + S.skew - f.started_at) : ""}</td><td class="num">${f.attempt}</td><td>${esc(last)}</td></tr>`;
  });
  $("#flight tbody").innerHTML = rows.join("") || `<tr><td colspan="7" class="dim">nothing in flight</td></tr>`;
  $("#flight-count").textContent = `(${S.flight.length})`;
}

function genFilter(text) {
  const m = /^\s*(\d+)\s*(?:-\s*(\d+))?\s*$/.exec(text || "");
  if (!m) return () => true;
  const lo = +m[1], hi = m[2] === undefined ? lo : +m[2];
  return (g) => g >= lo && g <= hi;
}

function renderLedger() {
  const sources = new Set([...S.configs.values()].map((c) => c.source));
  const sel = $("#f-source"), chosen = sel.value;
  const have = new Set([...sel.options].map((o) => o.value));
  for (const s of [...sources].sort()) if (!have.has(s)) sel.add(new Option(s, s));
  sel.value = chosen;
  const verdict = $("#f-verdict").value, inGen = genFilter($("#f-gen").value), text = $("#f-text").value.toLowerCase();
  const { key, dir } = S.sort;
  const rows = [...S.configs.values()].filter((c) => c.purpose === "" &&
    (!verdict || c.verdict === verdict) && inGen(c.gen) && (!chosen || c.source === chosen) &&
    (!text || c.hypothesis.toLowerCase().includes(text) || c.config.includes(text)));
  rows.sort((a, b) => {
    const x = a[key], y = b[key];
    if (x === y) return a.config < b.config ? -1 : 1;
    if (x === null || x === undefined || x === "") return 1;
    if (y === null || y === undefined || y === "") return -1;
    return (x < y ? -1 : 1) * dir;
  });
  $("#ledger tbody").innerHTML = rows.slice(0, LEDGER_MAX_ROWS).map((c) =>
    `<tr class="${esc(c.verdict)}" data-config="${esc(c.config)}"><td>${c.trials.length ? trialLink(c.trials[0]) : esc(c.config)}</td>` +
    `<td class="num">${c.gen}</td><td>${esc(c.source)}</td><td class="num">${fmt(c.objective)}</td><td class="num">${c.runs}</td>` +
    `<td title="${esc(c.reason)}">${esc(c.verdict)}</td><td class="num">${fmt(c.improvement, 3)}</td>` +
    `<td>${esc(c.hypothesis)}${c.patched ? " <small>[patch]</small>" : ""}</td></tr>`).join("");
  const all = [...S.configs.values()].filter((c) => c.purpose === "").length;
  $("#ledger-count").textContent = `(${rows.length} of ${all} configurations` +
    (rows.length > LEDGER_MAX_ROWS ? `; the first ${LEDGER_MAX_ROWS} shown: filter or sort for the others)` : ")");
  document.querySelectorAll("#ledger th").forEach((th) => {
    th.className = th.dataset.key === key ? (dir > 0 ? "sorted-asc" : "sorted-desc") : "";
  });
}

// ------------------------------------------------------------------ lineage and analyses (on demand)

function refreshLazy() {
  const h = S.head, champ = h.champion ? `${h.champion.config}:${h.champion.objective}` : "";
  if ($("#lineage-box").open && champ !== S.championSeen) loadLineage();
  if ($("#analyses-box").open && h.analyzed.join(",") !== S.analyzedSeen) loadAnalyses();
}

async function loadLineage() {
  const h = S.head;
  S.championSeen = h && h.champion ? `${h.champion.config}:${h.champion.objective}` : "";
  const d = await getJSON("api/lineage");
  if (d.error) { $("#lineage").textContent = d.error; return; }
  if (!d.steps.length) { $("#lineage").innerHTML = `<p class="dim">no champion yet</p>`; return; }
  const changed = d.steps.filter((s) => s.diff).length;
  $("#lineage").innerHTML = `<p>${changed} kept code change(s) from the base code to the champion, oldest first; each diff is against its parent's code.</p>` +
    d.steps.map((s) => `<div class="step"><b>${trialLink(s.trial)}</b> generation ${s.gen}, ${esc(s.source)}: ` +
      `${esc(h.metric)} ${s.objective === null ? "not completed" : fmt(s.objective)} (n=${s.n})` +
      (s.hypothesis ? `<br><i>${esc(s.hypothesis)}</i>` : "") + `<br><small>${esc(params(s.params))}</small>` +
      (s.diff ? `<pre>${diffHtml(s.diff)}</pre>` : `<br><small>the parent's code, unchanged</small>`) + `</div>`).join("");
}

async function loadAnalyses() {
  S.analyzedSeen = S.head ? S.head.analyzed.join(",") : "";
  const d = await getJSON("api/analyses");
  // rendered by the server with markdown-it-py, raw HTML in the markdown escaped
  $("#analyses").innerHTML = d.analyses.map((a) => `<div class="analysis"><h3>generation ${a.gen}</h3>${a.html}</div>`).join("") ||
    `<p class="dim">no analysis yet</p>`;
}

// ------------------------------------------------------------------ a trial's page

async function showTrial(id, holdout) {
  $("#campaign").hidden = true; $("#trial-page").hidden = false;
  $("#trial-id").textContent = id;
  const body = $("#trial-body");
  body.textContent = "loading…";
  let d;
  try { d = await getJSON(`api/trial/${encodeURIComponent(id)}` + (holdout ? "?holdout=1" : "")); }
  catch (e) { body.textContent = e.message; return; }
  const t = d.trial;
  $("#trial-state").textContent = `generation ${t.gen} · ${t.state}` + (t.objective !== null ? ` · ${d.metric} ${fmt(t.objective)}` : "") + (d.is_best ? " (the best trial)" : "");
  const kv = [["proposed by", t.source + (d.planner && d.planner !== t.source ? ` (generation planned by ${d.planner})` : "")],
    ["hypothesis", d.hypothesis || "–"], ["params", params(d.params) + `, seed=${t.seed}`], ["config", t.config],
    ["verdict", d.verdict || (d.config ? d.config.verdict : "")], ["parent", d.parent || "none (the base code)"],
    ["state", `${t.state}; ${t.attempt} attempt(s)` + (t.reason ? `: ${t.reason}` : "")], ["job", t.job_id || ""],
    ["time", t.duration_s ? dur(t.duration_s) : ""], ["folder", d.folder]].concat(d.again.map((a) => ["run again", a]));
  let html = `<div class="kv">${kv.map(([k, v]) => `<div>${esc(k)}</div><div>${esc(v)}</div>`).join("")}</div>`;
  html += `<h3>rerun</h3><code class="cmd" id="rerun-cmd">${esc(d.rerun)}</code> &nbsp; <small>(everything in the terminal: <code class="cmd">${esc(d.show)}</code>)</small>`;
  html += `<h3>curves</h3>` + (d.holdout_hidden.length ? `<label><input type="checkbox" id="show-holdout"> show the held-out metrics (${esc(d.holdout_hidden.join(", "))})</label>` : "") +
    (holdout ? `<label><input type="checkbox" id="show-holdout" checked> show the held-out metrics</label>` : "") +
    `<div class="curves" id="curves"></div>` + (d.metric_problem ? `<p class="dim">${esc(d.metric_problem)}</p>` : "");
  html += `<h3>code change against the base</h3>` + (d.patch.trim() ? `<pre id="patch">${diffHtml(d.patch)}</pre>` : `<p class="dim">the base code (no patch.diff)</p>`);
  html += `<h3>stderr (last lines)</h3><pre id="stderr">${esc(d.stderr_tail) || "(empty)"}</pre>`;
  html += `<h3>provenance</h3>` + provenance(d);
  html += `<h3>logs</h3>` + d.logs.map(([k, p]) => `<div><small>${esc(k)}</small> <code>${esc(p)}</code></div>`).join("");
  body.innerHTML = html;
  const box = $("#show-holdout");
  if (box) box.addEventListener("change", () => showTrial(id, box.checked));
  drawCurves(d);
}

function provenance(d) {
  const r = d.run_record || {};
  let out = r.git === "ok" ? `<div>code: git ${esc(String(r.commit || "").slice(0, 12))} (${esc(r.branch)}), ${r.dirty ? "dirty" : "clean"}, driver run ${d.run}</div>`
    : `<div class="dim">code: ${r.git ? esc(`git ${r.git}`) : "not recorded"}</div>`;
  out += d.attempts.map((a) => `<div>attempt ${esc(a.attempt)}: ${esc(new Date((a.started_at || 0) * 1000).toLocaleString())} on ${esc(a.host)}, ` +
    `job ${esc((a.slurm && a.slurm.job_id) || a.job_id)}, seed ${esc(a.seed)}, Python ${esc(a.python)}` + (a.torch ? `, torch ${esc(a.torch)}` : "") +
    `, ${a.gpus && a.gpus.length ? esc(a.gpus.length + " GPU(s): " + a.gpus.map((g) => g.name).join(", ")) : a.gpu_count ? esc(a.gpu_count + " GPU(s)") : "no GPU"}, ${esc(a.cpus)} CPU(s)</div>`).join("");
  return out || `<p class="dim">none recorded</p>`;
}

function drawCurves(d) {
  const el = $("#curves");
  const names = Object.keys(d.curves).sort((a, b) => (a === d.metric ? -1 : b === d.metric ? 1 : a < b ? -1 : 1));
  for (const name of names) {
    const pts = d.curves[name], div = document.createElement("div");
    el.appendChild(div);
    new uPlot({ width: 380, height: 200, title: name, scales: { x: { time: false } }, legend: { show: false },
      series: [{}, { stroke: name === d.metric ? "#0550ae" : "#777", width: 1.5, points: { show: pts.length < 60 } }],
      axes: [{ label: "step" }, { size: 60 }] }, [pts.map((p) => p[0]), pts.map((p) => p[1])], div);
  }
  if (!names.length) el.innerHTML = `<p class="dim">no metrics logged</p>`;
}

function route() {
  const m = /^#trial\/(.+)$/.exec(location.hash);
  if (m) { showTrial(decodeURIComponent(m[1]), false); return; }
  $("#trial-page").hidden = true; $("#campaign").hidden = false;
  if (S.head) renderPlot();
}

// ------------------------------------------------------------------ wiring

document.querySelectorAll("#ledger th").forEach((th) => th.addEventListener("click", () => {
  S.sort = { key: th.dataset.key, dir: S.sort.key === th.dataset.key ? -S.sort.dir : 1 };
  renderLedger();
}));
for (const id of ["#f-verdict", "#f-source"]) $(id).addEventListener("change", renderLedger);
for (const id of ["#f-gen", "#f-text"]) $(id).addEventListener("input", renderLedger);
document.querySelectorAll("input[name=xaxis]").forEach((r) => r.addEventListener("change", () => { S.xaxis = r.value; if (S.head) renderPlot(); }));
$("#lineage-box").addEventListener("toggle", () => { if ($("#lineage-box").open) loadLineage(); });
$("#analyses-box").addEventListener("toggle", () => { if ($("#analyses-box").open) loadAnalyses(); });
$("#back").addEventListener("click", (e) => { e.preventDefault(); history.pushState(null, "", location.pathname + location.search); route(); });
window.addEventListener("hashchange", route);
if (location.search.includes("token=")) history.replaceState(null, "", location.pathname + location.hash);  // the cookie holds it now
route();
poll();
