// streamfit's live dashboard: polls the API once a second and draws each
// model's readings/s, lag and rolling metrics over time, its recent
// predictions beside their labels, its partitions and any backfill.
// Written here, no library: the binary serves it and needs no network.
"use strict";

const POLL_MS = 1000;
const KEEP = 1800; // samples per model, as the service keeps them
const SVG = "http://www.w3.org/2000/svg";
// the metric chart of a model no labelled reading has reached
const UNSCORED = "nothing scored yet: no reading has come with its label";

const state = {
  token: sessionStorage.getItem("streamfit-token") || "",
  needsToken: document.querySelector('meta[name="streamfit-auth"]').content === "token",
  models: new Map(), // name -> {samples, lastT, card, ...}
  timer: null,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function fmt(x, digits) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  if (typeof x !== "number") return String(x);
  if (digits !== undefined) return x.toFixed(digits);
  if (Math.abs(x) >= 1e6) return (x / 1e6).toFixed(2) + " M";
  if (Math.abs(x) >= 1e4) return (x / 1e3).toFixed(1) + " k";
  if (Number.isInteger(x)) return x.toLocaleString("en");
  return x.toPrecision(4);
}

function clock(ms) {
  return new Date(ms).toISOString().slice(11, 19);
}

class AuthError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path) {
  const headers = {};
  if (state.token) headers.Authorization = "Bearer " + state.token;
  const r = await fetch(path, { headers, cache: "no-store" });
  if (r.status === 401 || r.status === 403) {
    let msg = r.statusText;
    try { msg = (await r.json()).error || msg; } catch (_) { /* not JSON */ }
    throw new AuthError(r.status, msg);
  }
  if (!r.ok) throw new Error(path + " answered " + r.status);
  return r.json();
}

// ---- charts ---------------------------------------------------------------

// A line chart: `series` is [{name, values}], `times` the x values (ms).
function chart(name) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("viewBox", "0 0 300 130");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.dataset.chart = name;
  const cap = el("figcaption");
  const fig = el("figure", {}, svg, cap);
  return { fig, svg, cap };
}

// `none` says why there is nothing to draw when samples came without values.
function drawChart(c, times, series, unit, none) {
  const W = 300, H = 130, L = 34, R = 4, T = 6, B = 16;
  const all = series.flatMap((s) => s.values.filter((v) => v !== null && Number.isFinite(v)));
  c.svg.replaceChildren();
  c.cap.replaceChildren(...series.map((s, i) => el("i", { class: "s" + i }, `${s.name} ${fmt(s.values[s.values.length - 1])}${unit || ""}`)));
  if (times.length < 2 || all.length === 0) {
    const t = document.createElementNS(SVG, "text");
    t.setAttribute("x", 10); t.setAttribute("y", 20);
    t.textContent = times.length < 2 ? "waiting for samples…" : none || "no values yet";
    c.svg.append(t);
    c.svg.dataset.points = "";
    return;
  }
  let lo = Math.min(...all), hi = Math.max(...all);
  if (lo > 0 && lo < hi * 0.5) lo = 0;
  if (hi === lo) { hi = lo + 1; }
  const t0 = times[0], t1 = times[times.length - 1];
  const x = (t) => L + ((t - t0) / Math.max(1, t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  for (const [v, label] of [[hi, fmt(hi)], [lo, fmt(lo)], [(hi + lo) / 2, ""]]) {
    const g = document.createElementNS(SVG, "line");
    g.setAttribute("class", "grid");
    g.setAttribute("x1", L); g.setAttribute("x2", W - R);
    g.setAttribute("y1", y(v)); g.setAttribute("y2", y(v));
    c.svg.append(g);
    if (label) {
      const t = document.createElementNS(SVG, "text");
      t.setAttribute("x", 2); t.setAttribute("y", y(v) + 3);
      t.textContent = label;
      c.svg.append(t);
    }
  }
  for (const [t, anchor] of [[t0, "start"], [t1, "end"]]) {
    const lab = document.createElementNS(SVG, "text");
    lab.setAttribute("x", anchor === "start" ? L : W - R);
    lab.setAttribute("y", H - 3);
    lab.setAttribute("text-anchor", anchor);
    lab.textContent = clock(t);
    c.svg.append(lab);
  }
  let signature = "";
  series.forEach((s, i) => {
    const pts = [];
    s.values.forEach((v, k) => {
      if (v !== null && Number.isFinite(v)) pts.push(x(times[k]).toFixed(1) + "," + y(v).toFixed(1));
    });
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("class", "s" + i);
    line.setAttribute("points", pts.join(" "));
    c.svg.append(line);
    signature += pts.length + ":" + (s.values[s.values.length - 1] ?? "") + ";";
  });
  // what a test (or a person with the inspector) can compare over time
  c.svg.dataset.points = times.length + "@" + t1 + ";" + signature;
}

// ---- one model's card -----------------------------------------------------

function card(name) {
  const title = el("h2", {}, name, el("span", { class: "task" }), el("span", { class: "badge" }));
  const why = el("p", { class: "why" });
  const tiles = el("div", { class: "tiles" });
  const rate = chart("rate"), metric = chart("metric"), lag = chart("lag"), learned = chart("learned");
  const charts = el("div", { class: "charts" }, rate.fig, metric.fig, lag.fig, learned.fig);
  const backfill = el("div", { class: "backfill" });
  const recent = el("table", { class: "recent" });
  const parts = el("table", { class: "partitions" });
  const root = el("section", { class: "card", "data-model": name }, title, why, tiles, charts, backfill,
    el("details", { open: "" }, el("summary", {}, "recent predictions"), recent),
    el("details", { open: "" }, el("summary", {}, "partitions"), parts));
  $("models").append(root);
  return { root, title, why, tiles, rate, metric, lag, learned, backfill, recent, parts };
}

function tile(value, label) {
  return el("div", { class: "tile" }, el("b", {}, value), el("span", {}, label));
}

function row(cells, head) {
  return el("tr", {}, ...cells.map((c) => el(head ? "th" : "td", {}, c)));
}

function render(m, h) {
  const c = m.card;
  const s = m.samples;
  const last = s[s.length - 1] || {};
  const classification = h.model.task === "classification";
  const multiclass = h.model.task === "multiclass";
  // a multiclass model's predictions and labels are class numbers
  const className = (k) => (h.classes && h.classes[k] !== undefined ? h.classes[k] : fmt(k, 0));
  c.title.children[0].textContent = h.model.task + " · v" + h.model.version + " · " + h.input_topic + " → " + h.output_topic;
  c.title.children[1].textContent = h.not_ready ? "not ready" : "ready";
  c.title.children[1].className = "badge" + (h.not_ready ? " wait" : "");
  c.why.textContent = h.not_ready || "";
  const r = last.rolling || {};
  const quality = multiclass
    ? [tile(fmt(r.accuracy, 3), "accuracy (rolling)"), tile(fmt(r.macro_f1, 3), "macro-F1 (rolling)")]
    : classification
      ? [tile(fmt(r.log_loss, 4), "log loss (rolling)"), tile(fmt(r.roc_auc, 3), "ROC AUC (rolling)")]
      : [tile(fmt(r.mae, 3), "MAE (rolling)"), tile(fmt(r.rmse, 3), "RMSE (rolling)")];
  c.tiles.replaceChildren(
    tile(fmt(last.readings_per_second), "readings/s"),
    tile(last.lag === undefined || last.lag < 0 ? "–" : fmt(last.lag), "consumer lag"),
    ...quality,
    tile(fmt(h.model.readings_seen), "readings seen"),
    tile(fmt(h.model.readings_learned), "learned from"),
    tile(fmt(last.dead_lettered), "dead-lettered"),
    tile(fmt(h.partitions.length), "partitions here"),
  );
  const times = s.map((x) => x.t_ms);
  drawChart(c.rate, times, [{ name: "readings/s", values: s.map((x) => x.readings_per_second) }]);
  if (classification || multiclass) {
    drawChart(c.metric, times, [
      { name: "log loss", values: s.map((x) => x.rolling.log_loss ?? null) },
      { name: "error rate", values: s.map((x) => (x.rolling.accuracy === undefined ? null : 1 - x.rolling.accuracy)) },
    ], "", UNSCORED);
  } else {
    drawChart(c.metric, times, [
      { name: "MAE", values: s.map((x) => x.rolling.mae ?? null) },
      { name: "RMSE", values: s.map((x) => x.rolling.rmse ?? null) },
    ], "", UNSCORED);
  }
  drawChart(c.lag, times, [{ name: "lag", values: s.map((x) => (x.lag < 0 ? null : x.lag)) }], "",
    "not known until a reading is read");
  drawChart(c.learned, times, [
    { name: "seen", values: s.map((x) => x.readings_seen) },
    { name: "learned", values: s.map((x) => x.readings_learned) },
  ]);

  const recent = multiclass
    ? h.recent.slice(0, 12).map((p) => row([
      p.key ?? "–",
      p.event_time_ms ? new Date(p.event_time_ms).toISOString().slice(0, 16).replace("T", " ") : "–",
      p.prediction_class ?? className(p.prediction),
      p.label === null || p.label === undefined ? "–" : (p.label_class ?? className(p.label)),
      p.label === null || p.label === undefined ? "–" : (p.label === p.prediction ? "right" : "wrong"),
    ]))
    : null;
  c.recent.replaceChildren(
    row(["key", "event time", "prediction", "label", multiclass ? "" : classification ? "|p − label|" : "error"], true),
    ...(recent || h.recent.slice(0, 12).map((p) => row([
      p.key ?? "–",
      p.event_time_ms ? new Date(p.event_time_ms).toISOString().slice(0, 16).replace("T", " ") : "–",
      fmt(p.prediction, classification ? 3 : 1),
      p.label === null || p.label === undefined ? "–" : fmt(p.label, classification ? 0 : 1),
      p.label === null || p.label === undefined ? "–" : fmt(classification ? Math.abs(p.prediction - p.label) : p.prediction - p.label, classification ? 3 : 1),
    ]))),
  );
  c.parts.replaceChildren(
    row(["partition", "next offset", "end", "lag", "seen", "learned", "version", "updated"], true),
    ...h.partitions.map((p) => row([
      String(p.partition), p.next_offset < 0 ? "–" : fmt(p.next_offset), p.high_watermark < 0 ? "–" : fmt(p.high_watermark),
      p.lag < 0 ? "–" : fmt(p.lag), fmt(p.readings_seen), fmt(p.readings_learned), fmt(p.version),
      p.updated_ms_ago === null ? "–" : (p.updated_ms_ago / 1000).toFixed(1) + " s ago",
    ])),
  );

  const b = h.backfill;
  if (!b) {
    c.backfill.replaceChildren();
  } else {
    const bars = Object.entries(b.partitions || {}).map(([p, x]) => {
      const span = Math.max(1, x.live - x.start);
      const done = Math.min(1, Math.max(0, (x.position - x.start) / span));
      const fill = el("div");
      fill.style.width = (done * 100).toFixed(1) + "%";
      return el("div", {}, `partition ${p}: ${fmt(x.position - x.start)} / ${fmt(span)}`, el("div", { class: "bar" }, fill));
    });
    c.backfill.replaceChildren(
      el("div", {}, `backfill from ${b.from}: ${b.state}, ${fmt(b.readings)} readings at ${fmt(b.readings_per_second)}/s${b.error ? " — " + b.error : ""}`),
      ...bars,
    );
  }
}

// ---- polling --------------------------------------------------------------

function setStatus(text, bad) {
  $("status").textContent = text;
  $("status").className = "status" + (bad ? " bad" : "");
}

function askForToken(message) {
  $("token-form").hidden = false;
  $("token-error").textContent = message || "";
  setStatus("a token is needed", true);
}

async function poll() {
  state.timer = null;
  if (state.needsToken && !state.token) {
    askForToken("");
    return;
  }
  try {
    const list = await api("/v1/models");
    for (const s of list.models) {
      let m = state.models.get(s.name);
      if (!m) {
        m = { samples: [], lastT: 0, card: card(s.name) };
        state.models.set(s.name, m);
      }
      const h = await api(`/v1/models/${encodeURIComponent(s.name)}/history?since=${m.lastT}`);
      if (h.samples.length > 0) {
        m.samples.push(...h.samples);
        if (m.samples.length > KEEP) m.samples.splice(0, m.samples.length - KEEP);
        m.lastT = m.samples[m.samples.length - 1].t_ms;
      }
      $("instance").textContent = "instance " + h.instance;
      render(m, h);
    }
    $("token-form").hidden = true;
    setStatus("live · " + state.models.size + " models · updated " + clock(Date.now()), false);
  } catch (e) {
    if (e instanceof AuthError) {
      if (e.status === 401) { state.token = ""; sessionStorage.removeItem("streamfit-token"); }
      askForToken(e.status === 403 ? "this token may not read model state: give an admin token" : e.message);
      return;
    }
    setStatus("cannot reach the service (" + e.message + "); retrying", true);
  }
  state.timer = setTimeout(poll, POLL_MS);
}

function start() {
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.token = $("token").value.trim();
    sessionStorage.setItem("streamfit-token", state.token);
    $("token").value = "";
    if (state.timer) clearTimeout(state.timer);
    poll();
  });
  poll();
}

start();
