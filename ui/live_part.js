// The live parts of a training job, drawn in the browser: on the Train page the progress of the run, its pace and
// times, and the running loss and learning rate, report by report ("main"); in the sidebar of every page, the
// progress in a line ("sidebar"). They read the job's state, which the server publishes as a small JSON file
// (ui/live_publish.py) when it changes, once a second, and less often while it does not (an evaluation, the
// start): nothing reruns on the server for them, so an open tab costs the training run next to nothing. When the
// state says an epoch ended (main) or the run did, the part tells Streamlit (a trigger value), whose rerun of its
// fragment redraws the Altair charts of the epochs, or the page.

const SVG = "http://www.w3.org/2000/svg";
const POLL_MS = 1000, SLOWEST_MS = 4000;

function el(tag, attrs = {}, parent = null, ns = null) {
  const node = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

function niceTicks(low, high, count) {
  const span = high - low || Math.abs(high) || 1;
  const raw = span / count, magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw);
  const ticks = [];
  for (let t = Math.ceil(low / step) * step; t <= high + step * 1e-9; t += step) ticks.push(+t.toFixed(12));
  return ticks;
}

function formatTick(value, log) {
  if (log) return value.toExponential(0).replace("e-", "e-").replace("e+0", "");
  const a = Math.abs(value);
  return a >= 100 ? value.toFixed(0) : a >= 1 ? +value.toFixed(2) + "" : +value.toPrecision(2) + "";
}

// A line chart of one or more series [[x, y], ...] in an <svg>, with axes and a title: drawn anew each time.
function drawChart(svg, title, series, { log = false, yLabel = "" } = {}) {
  const width = Math.max(240, svg.parentElement.clientWidth || 400), height = 240;
  const margin = { left: 58, right: 12, top: 26, bottom: 36 };
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.replaceChildren();
  const t = (v) => (log ? Math.log10(v) : v);
  const points = series.flatMap((s) => s.points).filter(([, y]) => Number.isFinite(y) && (!log || y > 0));
  el("text", { x: margin.left, y: 16, class: "title" }, svg, SVG).textContent = title;
  if (!points.length) return;
  let [x0, x1] = [Math.min(...points.map((p) => p[0])), Math.max(...points.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...points.map((p) => t(p[1]))), Math.max(...points.map((p) => t(p[1])))];
  if (x1 === x0) x1 = x0 + 1e-6;
  if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
  const pad = (y1 - y0) * 0.05;
  [y0, y1] = [y0 - pad, y1 + pad];
  const sx = (x) => margin.left + ((x - x0) / (x1 - x0)) * (width - margin.left - margin.right);
  const sy = (y) => height - margin.bottom - ((y - y0) / (y1 - y0)) * (height - margin.top - margin.bottom);
  const axes = el("g", { class: "axes" }, svg, SVG);
  for (const tick of niceTicks(x0, x1, 6)) {
    el("line", { x1: sx(tick), x2: sx(tick), y1: margin.top, y2: height - margin.bottom, class: "grid" }, axes, SVG);
    el("text", { x: sx(tick), y: height - margin.bottom + 14, class: "tick", "text-anchor": "middle" }, axes, SVG)
      .textContent = formatTick(tick, false);
  }
  for (const tick of log ? niceTicks(Math.floor(y0), Math.ceil(y1), 4).filter((v) => v >= y0 && v <= y1)
                         : niceTicks(y0, y1, 5)) {
    el("line", { x1: margin.left, x2: width - margin.right, y1: sy(tick), y2: sy(tick), class: "grid" }, axes, SVG);
    el("text", { x: margin.left - 6, y: sy(tick) + 4, class: "tick", "text-anchor": "end" }, axes, SVG)
      .textContent = formatTick(log ? Math.pow(10, tick) : tick, log);
  }
  el("text", { x: (margin.left + width - margin.right) / 2, y: height - 4, class: "label", "text-anchor": "middle" },
     axes, SVG).textContent = "epoch";
  el("text", { x: 12, y: (margin.top + height - margin.bottom) / 2, class: "label", "text-anchor": "middle",
               transform: `rotate(-90 12 ${(margin.top + height - margin.bottom) / 2})` }, axes, SVG)
    .textContent = yLabel + (log ? " (log scale)" : "");
  for (const s of series) {
    const shown = s.points.filter(([, y]) => Number.isFinite(y) && (!log || y > 0));
    if (!shown.length) continue;
    const d = shown.map(([x, y], i) => `${i ? "L" : "M"}${sx(x).toFixed(1)},${sy(t(y)).toFixed(1)}`).join("");
    el("path", { d: shown.length === 1 ? d + "h0.01" : d, stroke: s.colour, "stroke-width": s.width,
                 fill: "none", "stroke-linecap": "round" }, svg, SVG);
  }
}

// The exponential moving average the Smoothing slider sets, over the rows sent (every `stride`-th report).
function smoothed(points, smoothing, stride) {
  const keep = Math.pow(smoothing, stride);
  let average = null;
  return points.map(([x, y]) => [x, (average = average === null ? y : keep * average + (1 - keep) * y)]);
}

function render(root, state, data) {
  if (data.mode === "sidebar") {
    root.querySelector(".bar-fill").style.width = `${Math.round(1000 * state.sidebar.fraction) / 10}%`;
    root.querySelector(".progress-text").textContent = state.sidebar.text;
    return;
  }
  const p = state.progress;
  root.querySelector(".bar-fill").style.width = `${Math.round(1000 * p.fraction) / 10}%`;
  root.querySelector(".progress-text").textContent = p.text;
  const pace = root.querySelector(".pace");
  if (pace.innerHTML !== state.line) pace.innerHTML = state.line;
  root.dataset.version = state.version;
  root.dataset.batch = p.batch ?? "";
  const charts = root.querySelector(".charts");
  charts.hidden = !state.loss.length;
  if (!state.loss.length) return;
  drawChart(root.querySelector(".loss svg"), "Running training loss", [
    { points: state.loss, colour: "#eba2bc", width: 1.2 },
    { points: smoothed(state.loss, data.smoothing, state.stride), colour: data.loss_colour, width: 2.2 },
  ], { yLabel: "training loss" });
  drawChart(root.querySelector(".lr svg"), "Learning rate", [{ points: state.lr, colour: data.lr_colour, width: 1.6 }],
            { log: state.lr_log, yLabel: "learning rate" });
}

const LAYOUT = {
  main: `<div class="progress"><div class="progress-text"></div><div class="bar"><div class="bar-fill"></div></div>
    </div><div class="pace"></div>
    <div class="charts" hidden><div class="loss"><svg></svg></div><div class="lr"><svg></svg></div></div>`,
  sidebar: `<div class="progress sidebar"><div class="progress-text"></div><div class="bar"><div class="bar-fill">
    </div></div></div>`,
};

// One poll per published file and page, whatever the number of parts drawing it (the sidebar's and the main one).
const polls = new Map();

function subscribe(url, listener) {
  let poll = polls.get(url);
  if (!poll) {
    poll = { listeners: new Set(), seen: null, wait: POLL_MS, timer: null };
    polls.set(url, poll);
    const tick = async () => {
      let state = null;
      try {
        const response = await fetch(`${url}?v=${Date.now()}`, { cache: "no-store" });
        state = response.ok ? await response.json() : null;
      } catch (error) {
        state = null;  // the server restarts: the next poll reads it
      }
      if (state) {
        poll.wait = state.version === poll.seen ? Math.min(SLOWEST_MS, poll.wait * 1.5) : POLL_MS;  // nothing new
        poll.seen = state.version;
        for (const listen of poll.listeners) listen(state);
      }
      if (poll.listeners.size) poll.timer = setTimeout(tick, poll.wait);
      else polls.delete(url);
    };
    poll.timer = setTimeout(tick, POLL_MS);
  }
  poll.listeners.add(listener);
  return () => poll.listeners.delete(listener);
}

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  let root = parentElement.querySelector(".cifar-live");
  if (!root) {
    root = el("div", { class: `cifar-live ${data.mode}` }, parentElement);
    root.innerHTML = LAYOUT[data.mode];
  }
  root.data = data;  // what the last rerun drew: a state that differs from it asks for a rerun
  let asked = null, drawnVersion = null;
  const listen = (state) => {
    const drawn = root.data;
    const changed = state.job !== drawn.job || state.status !== "running"
      || (drawn.mode === "main" && state.epochs !== drawn.epochs);
    if (changed && asked !== state.version) {
      asked = state.version;
      setTriggerValue("changed", state.version);
    }
    if (state.job === drawn.job && state.status === "running" && state.version !== drawnVersion) {
      drawnVersion = state.version;
      render(root, state, drawn);
    }
  };
  if (data.state) {
    render(root, data.state, data);
    drawnVersion = data.state.version;
  }
  if (root.unsubscribe) root.unsubscribe();
  root.unsubscribe = subscribe(data.url, listen);
  return () => root.unsubscribe();
}
