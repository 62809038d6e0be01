// pc-eventd dashboard: the page's state is built from the server's feed (/events):
//   snapshot     the last event the daemons keep of every process (seq 0: the stream's are
//                newer), then the newest event of each type of every process the stream holds
//                and its newest pressure event of each resource (the current state, the last
//                crash, given up, silent, under pressure), once per fresh page
//   lifecycle    a lifecycle event {seq, event}     (id "L:R": where the page is in the streams)
//   lost         a loss marker                      (id)
//   remediation  a remediator's outcome {seq, event} (id)
//   live         the backlog is over
//   nats         {connected}: whether the server reaches NATS
// Everything a process or an event says is put into the page as text (textContent), never as
// markup. Filters live in the URL, so a filtered view can be bookmarked and shared.
//
// A process's conditions come from the newest events the page holds of it (by stream
// sequence): given up while its last given_up is newer than its last start or restart and it
// does not run; silent while its last silent is newer than its last output_resumed and it runs;
// under memory or CPU pressure while the last pressure event of that resource is a
// resource_pressure and it runs (a stopped process has no usage; the daemon says
// resource_recovered once a new run is back under the threshold).
"use strict";

const SEVERITY_RANK = { debug: 0, info: 1, warning: 2, error: 3, critical: 4 };
// A process with this many crashes within CRASH_WINDOW_MS is in a crash loop.
const CRASH_LOOP = 3;
const CRASH_WINDOW_MS = 10 * 60 * 1000;
// The timeline keeps this many events in memory and shows this many rows.
const TIMELINE_KEPT = 20000;
const TIMELINE_SHOWN = 200;
// The events that start or end a run.
const RUN_STEPS = new Set(["started", "restarted", "stopped", "crashed"]);
// The events that begin a run.
const RUN_STARTS = ["started", "restarted"];
const NUMERIC = new Set(["restarts", "exit", "pid"]);
const FILTERS = ["source", "ns", "process", "type", "severity", "q"];

const state = {
  processes: new Map(), // key → process
  timeline: [], // items, newest first
  seen: new Set(), // timeline item keys
  lastId: null, // the id of the last frame with one: where to resume
  live: false,
  sources: new Set(),
  namespaces: new Set(),
  filter: {},
  view: null, // {source, process: "ns/name"} in the one-process view
};

// ---- the feed ------------------------------------------------------------------------------

let feed = null;
let reconnectTimer = null;

function connect() {
  const url = state.lastId === null
    ? "/events"
    : "/events?last_event_id=" + encodeURIComponent(state.lastId);
  feed = new EventSource(url);
  feed.onopen = () => banner("banner-server", false);
  feed.onerror = () => {
    banner("banner-server", true);
    // The browser retries a dropped connection by itself (sending Last-Event-ID); an answer
    // that is not a feed closes it for good, so open a new one from where the page is.
    if (feed.readyState === EventSource.CLOSED && reconnectTimer === null) {
      reconnectTimer = setTimeout(() => { reconnectTimer = null; connect(); }, 1000);
    }
  };
  feed.addEventListener("snapshot", (e) => onSnapshot(JSON.parse(e.data)));
  feed.addEventListener("lifecycle", (e) => { track(e); onLifecycle(JSON.parse(e.data)); });
  feed.addEventListener("lost", (e) => { track(e); onLost(JSON.parse(e.data)); });
  feed.addEventListener("remediation", (e) => { track(e); onRemediation(JSON.parse(e.data)); });
  feed.addEventListener("live", () => { state.live = true; document.body.dataset.live = "true"; schedule(true); });
  feed.addEventListener("nats", (e) => banner("banner-nats", !JSON.parse(e.data).connected));
}

function track(e) {
  if (e.lastEventId) state.lastId = e.lastEventId;
}

function banner(id, shown) {
  document.getElementById(id).hidden = !shown;
}

// ---- the model -----------------------------------------------------------------------------

function processKey(source, ns, name) {
  return source + "\u0000" + ns + "\u0000" + name;
}

function onSnapshot(stored) {
  for (const { seq, summary, event } of stored) {
    if (event) applyToProcess(seq, summary, event);
  }
  schedule(true);
}

function onLifecycle({ seq, summary, event }) {
  if (!event) return;
  applyToProcess(seq, summary, event);
  addItem({
    key: "l" + seq,
    seq,
    id: event.id,
    at: Date.parse(event.timestamp),
    timestamp: event.timestamp,
    source: event.source,
    ns: event.namespace,
    name: event.process,
    type: event.type,
    severity: event.severity,
    text: summary,
    kind: "lifecycle",
    output: event.type === "crashed" ? event.output : undefined,
  });
}

function onLost({ summary, marker }) {
  addItem({
    key: "x" + marker.id,
    seq: 0,
    id: marker.id,
    at: Date.parse(marker.timestamp),
    timestamp: marker.timestamp,
    source: marker.source,
    ns: "",
    name: "",
    type: "events_lost",
    severity: "error",
    text: summary + ": the record has a gap here",
    kind: "lost",
  });
}

function onRemediation({ seq, summary, event }) {
  if (!event) return;
  addItem({
    key: "r" + seq,
    seq,
    id: event.id,
    at: Date.parse(event.timestamp),
    timestamp: event.timestamp,
    source: event.source || "",
    ns: event.namespace,
    name: event.process,
    type: "remediation",
    severity: event.severity,
    text: summary,
    kind: "remediation",
  });
}

function applyToProcess(seq, summary, event) {
  const key = processKey(event.source, event.namespace, event.process);
  let p = state.processes.get(key);
  if (!p) {
    p = {
      key, source: event.source, ns: event.namespace, name: event.process, seq: 0, event: null,
      crashes: [], runSeq: 0, crashed: false,
      byType: new Map(), // type → {seq, summary}: its newest event of each type
      pressure: new Map(), // resource → {seq, on, summary}: its newest pressure event of each
    };
    state.processes.set(key, p);
    state.sources.add(event.source);
    state.namespaces.add(event.namespace);
    structureChanged = true;
  }
  if (event.type === "crashed" && !p.crashes.some((c) => c.seq === seq)) {
    p.crashes.push({ seq, at: Date.parse(event.timestamp) });
    if (p.crashes.length > CRASH_LOOP * 4) p.crashes.shift();
  }
  // Whether its last run ended in a crash: the newest of its crashes, starts and restarts.
  if (RUN_STEPS.has(event.type) && seq > p.runSeq) {
    p.runSeq = seq;
    p.crashed = event.type === "crashed";
  }
  const last = p.byType.get(event.type);
  if (!last || seq > last.seq) {
    p.byType.set(event.type, { seq, summary });
    dirtyProcesses.add(key);
  }
  const resource = event.pressure && event.pressure.resource;
  if (resource && (event.type === "resource_pressure" || event.type === "resource_recovered")) {
    const known = p.pressure.get(resource);
    if (!known || seq > known.seq) {
      p.pressure.set(resource, { seq, on: event.type === "resource_pressure", summary });
      dirtyProcesses.add(key);
    }
  }
  if (seq > p.seq || p.event === null) {
    p.seq = seq;
    p.event = event;
    dirtyProcesses.add(key);
  }
  if (state.view && state.view.key === key) viewEvent(seq, summary, event);
}

function addItem(item) {
  if (state.seen.has(item.key)) return;
  state.seen.add(item.key);
  // Mostly the newest: find its place from the front.
  let at = 0;
  while (at < state.timeline.length && newer(state.timeline[at], item)) at++;
  state.timeline.splice(at, 0, item);
  if (state.timeline.length > TIMELINE_KEPT) {
    for (const old of state.timeline.splice(TIMELINE_KEPT)) state.seen.delete(old.key);
  }
  if (at === 0) newItems.push(item); else timelineChanged = true;
  schedule(false);
}

// Whether `a` comes before `b` in the timeline (newest first): by time, then by stream order.
function newer(a, b) {
  if (a.at !== b.at) return a.at > b.at;
  if (a.kind !== b.kind) return a.kind > b.kind;
  return a.seq > b.seq;
}

function inCrashLoop(p, now) {
  const recent = p.crashes.filter((c) => now - c.at <= CRASH_WINDOW_MS);
  return recent.length >= CRASH_LOOP;
}

// The stream sequence of the newest of `p`'s events of these types; -1 without one.
function newestOf(p, types) {
  return Math.max(-1, ...types.map((t) => (p.byType.has(t) ? p.byType.get(t).seq : -1)));
}

// Its last given_up ({seq, summary}) while that is newer than its last start and it does not
// run; else null.
function givenUp(p) {
  const last = p.byType.get("given_up");
  if (!last || p.event.state.is_running || newestOf(p, RUN_STARTS) > last.seq) return null;
  return last;
}

// Its last silent while that is newer than its last output_resumed and it runs; else null. A
// new run does not end a silence: the daemon says output_resumed once the process prints.
function silentNow(p) {
  const last = p.byType.get("silent");
  if (!last || !p.event.state.is_running || newestOf(p, ["output_resumed"]) > last.seq) return null;
  return last;
}

// The resources it is under pressure of while it runs: [resource, {seq, on, summary}], sorted.
function pressuresNow(p) {
  if (!p.event.state.is_running) return [];
  return [...p.pressure].filter(([, last]) => last.on).sort(([a], [b]) => a.localeCompare(b));
}

// ---- filters -------------------------------------------------------------------------------

function readFilters() {
  const params = new URLSearchParams(location.search);
  for (const name of FILTERS) {
    const value = params.get(name) || "";
    const input = document.getElementById("f-" + name);
    if (input.tagName === "SELECT") ensureOption(input, value);
    input.value = value;
    state.filter[name] = value;
  }
  const viewSource = params.get("view_source");
  const viewProcess = params.get("view");
  state.view = viewProcess === null ? null : openViewState(viewSource || "", viewProcess);
}

function writeUrl() {
  const params = new URLSearchParams();
  for (const name of FILTERS) {
    if (state.filter[name]) params.set(name, state.filter[name]);
  }
  if (state.view) {
    params.set("view_source", state.view.source);
    params.set("view", state.view.process);
  }
  const query = params.toString();
  history.replaceState(null, "", query ? "?" + query : location.pathname);
}

function ensureOption(select, value) {
  if (!value || [...select.options].some((o) => o.value === value)) return;
  const option = document.createElement("option");
  option.value = value;
  option.textContent = value;
  select.appendChild(option);
}

function onFilterInput() {
  for (const name of FILTERS) state.filter[name] = document.getElementById("f-" + name).value.trim();
  writeUrl();
  schedule(true);
}

function matchesText(fields) {
  const q = state.filter.q.toLowerCase();
  return !q || fields.some((f) => String(f).toLowerCase().includes(q));
}

function itemShown(item) {
  const f = state.filter;
  if (f.source && item.source !== f.source) return false;
  if (f.ns && item.ns !== f.ns) return false;
  if (f.process && !item.name.toLowerCase().includes(f.process.toLowerCase())) return false;
  if (f.type && item.type !== f.type) return false;
  if (f.severity && (SEVERITY_RANK[item.severity] ?? 0) < SEVERITY_RANK[f.severity]) return false;
  const printed = (item.output && item.output.lines) || [];
  return matchesText([item.text, item.source, item.ns, item.name, item.type, ...printed]);
}

// A process is shown when it had an event of the chosen type, when its condition is as severe
// as chosen (given up: critical; down after a crash: error; failing its readiness probe,
// silent or under pressure: warning), and when the free text is in its name, status or the
// summary of its last event of any type.
function processShown(p) {
  const f = state.filter;
  if (f.source && p.source !== f.source) return false;
  if (f.ns && p.ns !== f.ns) return false;
  if (f.process && !p.name.toLowerCase().includes(f.process.toLowerCase())) return false;
  if (f.type && !p.byType.has(f.type)) return false;
  if (f.severity && SEVERITY_RANK[condition(p)] < SEVERITY_RANK[f.severity]) return false;
  const summaries = [...p.byType.values()].map((last) => last.summary);
  return matchesText([p.name, p.ns, p.source, p.event.state.status, ...summaries]);
}

function condition(p) {
  const s = p.event.state;
  if (givenUp(p)) return "critical";
  if (failed(p) || s.status === "Error") return "error";
  if (s.has_ready_probe && s.is_ready === "Not Ready") return "warning";
  if (silentNow(p) || pressuresNow(p).length) return "warning";
  return "info";
}

// ---- rendering -----------------------------------------------------------------------------

let scheduled = false;
let fullRender = false;
let structureChanged = false;
let timelineChanged = false;
const dirtyProcesses = new Set();
let newItems = [];
const rows = new Map(); // process key → its <tr>
let renderMarksLeft = 20;

function schedule(full) {
  fullRender = fullRender || full;
  // The backlog arrives in one go: show it once, when it is over.
  if (!state.live && !full) return;
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(flush);
}

function flush() {
  scheduled = false;
  if (fullRender || structureChanged) {
    fullRender = structureChanged = timelineChanged = false;
    dirtyProcesses.clear();
    newItems = [];
    refreshFilterOptions();
    renderProcesses();
    renderTimeline();
  } else {
    for (const key of dirtyProcesses) updateRow(key);
    dirtyProcesses.clear();
    if (timelineChanged) {
      timelineChanged = false;
      renderTimeline();
    } else {
      prependItems(newItems);
    }
    newItems = [];
  }
  renderCounts();
  // For the benchmark (benches/dashboard.rs): when the first renders ended, with how many rows.
  if (renderMarksLeft > 0) {
    renderMarksLeft--;
    performance.mark("rendered", { detail: { rows: rows.size } });
  }
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function refreshFilterOptions() {
  // One source: naming it on every timeline row says nothing.
  document.body.classList.toggle("one-source", state.sources.size <= 1);
  for (const [id, values] of [["f-source", state.sources], ["f-ns", state.namespaces]]) {
    const select = document.getElementById(id);
    for (const value of [...values].sort()) ensureOption(select, value);
  }
}

function renderProcesses() {
  const container = document.getElementById("process-groups");
  rows.clear();
  const groups = new Map();
  for (const p of state.processes.values()) {
    if (!p.event || !processShown(p)) continue;
    const group = p.source + "\u0000" + p.ns;
    if (!groups.has(group)) groups.set(group, []);
    groups.get(group).push(p);
  }
  const fragment = document.createDocumentFragment();
  const now = Date.now();
  for (const group of [...groups.keys()].sort()) {
    const members = groups.get(group).sort((a, b) => a.name.localeCompare(b.name));
    const box = el("div", "group");
    const title = el("h3", "", members[0].source + " ");
    title.appendChild(el("span", "ns", members[0].ns));
    box.appendChild(title);
    const table = el("table");
    const columns = el("colgroup");
    const head = el("tr");
    for (const column of ["name", "status", "ready", "restarts", "exit", "pid", "since"]) {
      columns.appendChild(el("col", "c-" + column));
      head.appendChild(el("th", NUMERIC.has(column) ? "num" : "", column === "name" ? "process" : column));
    }
    table.appendChild(columns);
    table.appendChild(el("thead")).appendChild(head);
    const body = el("tbody");
    for (const p of members) {
      const row = buildRow(p, now);
      rows.set(p.key, row);
      body.appendChild(row);
    }
    table.appendChild(body);
    box.appendChild(table);
    fragment.appendChild(box);
  }
  container.replaceChildren(fragment);
  if (!groups.size) {
    container.appendChild(el("p", "empty", state.processes.size ? "No process matches the filters." : "No process has published an event yet."));
  }
}

function buildRow(p, now) {
  const row = el("tr");
  row.dataset.key = p.key;
  const name = el("td", "name");
  const link = el("a", "", p.name);
  link.href = "#";
  link.addEventListener("click", (e) => { e.preventDefault(); openView(p.source, p.ns + "/" + p.name); });
  name.appendChild(link);
  row.appendChild(name);
  for (const className of ["status", "ready", "num restarts", "num exit", "num pid", "when since"]) {
    row.appendChild(el("td", className));
  }
  fillRow(row, p, now);
  return row;
}

function fillRow(row, p, now) {
  const e = p.event;
  const s = e.state;
  const loop = inCrashLoop(p, now);
  const gaveUp = givenUp(p);
  row.className = "st-" + statusClass(p) + (loop ? " crash-loop" : "") + (gaveUp ? " given-up" : "") +
    (e.reason === "removed" ? " removed" : "");
  row.dataset.status = s.status;
  row.dataset.type = e.type;
  const cells = row.children;
  const name = cells[0];
  for (const old of name.querySelectorAll(".badge")) old.remove();
  if (loop) name.appendChild(el("span", "badge", "crash loop"));
  for (const [resource, last] of pressuresNow(p)) {
    const badge = el("span", "badge badge-warn pressure", resource + " pressure");
    badge.dataset.resource = resource;
    badge.title = last.summary;
    name.appendChild(badge);
  }
  const silence = silentNow(p);
  if (silence) {
    const badge = el("span", "badge badge-warn silent", "silent");
    badge.title = silence.summary;
    name.appendChild(badge);
  }
  cells[1].textContent = gaveUp ? "given up (" + s.status + ")" : failed(p) ? "crashed (" + s.status + ")" : s.status;
  cells[1].title = gaveUp ? gaveUp.summary : "";
  cells[2].textContent = s.has_ready_probe ? s.is_ready : "—";
  cells[3].textContent = String(s.restarts);
  cells[4].textContent = s.is_running ? "—" : String(s.exit_code);
  cells[5].textContent = s.is_running && s.pid > 0 ? String(s.pid) : "—";
  cells[6].dataset.at = String(Date.parse(e.timestamp));
  cells[6].title = e.timestamp;
  cells[6].textContent = ago(Date.parse(e.timestamp), now);
}

// Whether the process is down after a crash.
function failed(p) {
  return p.crashed && !p.event.state.is_running;
}

function statusClass(p) {
  const e = p.event;
  if (condition(p) === "critical") return "crit";
  if (condition(p) === "error") return "bad";
  if (condition(p) === "warning" || e.state.status === "Restarting") return "warn";
  if (!e.state.is_running) return "off";
  if (e.state.status === "Running") return "ok";
  return "info";
}

// Updates a process's row in place; a process that comes into or leaves the filtered list
// redraws the list.
function updateRow(key) {
  const p = state.processes.get(key);
  const row = rows.get(key);
  if (processShown(p) !== Boolean(row)) {
    schedule(true);
  } else if (row) {
    fillRow(row, p, Date.now());
  }
}

function itemNode(item, now) {
  const li = el("li", item.kind + (item.severity === "critical" ? " critical" : ""));
  li.dataset.key = item.key;
  li.dataset.id = item.id;
  li.dataset.type = item.type;
  const when = el("span", "when", ago(item.at, now));
  when.dataset.at = String(item.at);
  when.title = item.timestamp;
  li.appendChild(when);
  li.appendChild(el("span", "sev sev-" + item.severity, item.severity));
  const what = el("span", "what", item.text + " ");
  if (item.source) what.appendChild(el("span", "src", item.source));
  li.appendChild(what);
  if (item.output) {
    // Folded by default: one line, the last one printed. Kept open across redraws.
    const output = outputNode(item.output, Boolean(item.open));
    if (output.tagName === "DETAILS") output.addEventListener("toggle", () => { item.open = output.open; });
    li.appendChild(output);
  }
  return li;
}

// What a crashed process printed last (`output` of its event): a <details> whose summary is
// the last line and what was left out, and whose body is every line; or a line saying why
// there are none. Every line goes in as text.
function outputNode(output, open) {
  const lines = Array.isArray(output.lines) ? output.lines : [];
  if (!lines.length) {
    return el("div", "output none", output.unavailable ? "output unavailable: " + output.unavailable : "printed nothing");
  }
  const notes = [lines.length === 1 ? "1 line" : lines.length + " lines"];
  if (output.truncated) notes.push("older output left out");
  if (output.redacted > 0) notes.push(output.redacted + (output.redacted === 1 ? " secret" : " secrets") + " redacted");
  const box = el("details", "output");
  box.open = open;
  const head = el("summary");
  head.appendChild(el("span", "last", lines[lines.length - 1]));
  head.appendChild(el("span", "notes", notes.join(" · ")));
  box.appendChild(head);
  const body = el("pre");
  if (output.truncated) body.appendChild(el("span", "cut", "…\n"));
  body.appendChild(document.createTextNode(lines.join("\n")));
  box.appendChild(body);
  return box;
}

function renderTimeline() {
  const list = document.getElementById("events");
  const fragment = document.createDocumentFragment();
  const now = Date.now();
  let shown = 0;
  let matching = 0;
  for (const item of state.timeline) {
    if (!itemShown(item)) continue;
    matching++;
    if (shown < TIMELINE_SHOWN) {
      fragment.appendChild(itemNode(item, now));
      shown++;
    }
  }
  list.replaceChildren(fragment);
  const more = document.getElementById("timeline-more");
  more.hidden = matching <= shown;
  more.textContent = (matching - shown) + " older events match; open a process for its whole history.";
}

function prependItems(items) {
  const list = document.getElementById("events");
  const now = Date.now();
  // items arrived oldest first; each goes on top
  for (const item of items) {
    if (itemShown(item)) list.insertBefore(itemNode(item, now), list.firstChild);
  }
  while (list.children.length > TIMELINE_SHOWN) list.lastChild.remove();
}

function renderCounts() {
  let crashed = 0;
  let gaveUp = 0;
  let loops = 0;
  const now = Date.now();
  for (const p of state.processes.values()) {
    if (!p.event) continue;
    const status = statusClass(p);
    if (status === "bad" || status === "crit") crashed++;
    if (status === "crit") gaveUp++;
    if (inCrashLoop(p, now)) loops++;
  }
  document.getElementById("counts").textContent =
    state.processes.size + " processes on " + state.sources.size +
    (state.sources.size === 1 ? " source · " : " sources · ") +
    crashed + " failed · " + gaveUp + " given up · " + loops + " in a crash loop · " +
    state.timeline.length + " events";
}

function ago(at, now) {
  if (Number.isNaN(at)) return "?";
  const s = Math.max(0, Math.round((now - at) / 1000));
  if (s < 60) return s + "s ago";
  if (s < 3600) return Math.floor(s / 60) + "m ago";
  if (s < 86400) return Math.floor(s / 3600) + "h ago";
  return Math.floor(s / 86400) + "d ago";
}

function refreshTimes() {
  const now = Date.now();
  for (const node of document.querySelectorAll("[data-at]")) {
    node.textContent = ago(Number(node.dataset.at), now);
  }
}

// ---- one process ---------------------------------------------------------------------------

function openViewState(source, process) {
  const slash = process.indexOf("/");
  const ns = slash < 0 ? "default" : process.slice(0, slash);
  const name = slash < 0 ? process : process.slice(slash + 1);
  return { source, process: ns + "/" + name, key: processKey(source, ns, name), oldest: null, shownSeqs: new Set() };
}

function openView(source, process) {
  state.view = openViewState(source, process);
  writeUrl();
  showView();
}

function closeView() {
  state.view = null;
  writeUrl();
  document.getElementById("process-view").hidden = true;
  document.getElementById("overview").hidden = false;
  schedule(true);
}

function showView() {
  const view = state.view;
  document.getElementById("overview").hidden = true;
  document.getElementById("process-view").hidden = false;
  document.getElementById("pv-title").textContent = view.process + " on " + view.source;
  document.getElementById("pv-events").replaceChildren();
  document.getElementById("pv-chart").replaceChildren();
  renderViewState();
  loadHistory(null);
}

function renderViewState() {
  const p = state.processes.get(state.view.key);
  const line = document.getElementById("pv-state");
  if (!p || !p.event) {
    line.textContent = "No current state known.";
    return;
  }
  const s = p.event.state;
  const parts = ["status " + s.status, "ready " + s.is_ready, "restarts " + s.restarts, "exit " + s.exit_code,
    "pid " + (s.is_running && s.pid > 0 ? s.pid : "—"), "since " + p.event.timestamp];
  const gaveUp = givenUp(p);
  const silence = silentNow(p);
  const conditions = [];
  if (gaveUp) conditions.push(el("span", "cond cond-crit", gaveUp.summary));
  for (const [, last] of pressuresNow(p)) conditions.push(el("span", "cond cond-warn", last.summary));
  if (silence) conditions.push(el("span", "cond cond-warn", silence.summary));
  line.replaceChildren(parts.join(" · "));
  for (const node of conditions) line.append(" ", node);
}

async function loadHistory(before) {
  const view = state.view;
  const params = new URLSearchParams({ source: view.source, process: view.process, limit: "50" });
  if (before !== null) params.set("before", String(before));
  const older = document.getElementById("pv-older");
  let page;
  try {
    const response = await fetch("/api/history?" + params);
    if (!response.ok) throw new Error(await response.text());
    page = await response.json();
  } catch (err) {
    document.getElementById("pv-last-crash").textContent = "cannot read the history now: " + err.message;
    return;
  }
  if (state.view !== view) return;
  const list = document.getElementById("pv-events");
  const now = Date.now();
  for (const { seq, summary, event } of page.events) {
    if (view.shownSeqs.has(seq)) continue;
    view.shownSeqs.add(seq);
    list.appendChild(viewNode(seq, summary, event, now));
    view.oldest = view.oldest === null ? seq : Math.min(view.oldest, seq);
  }
  older.hidden = !page.more;
  older.onclick = () => loadHistory(view.oldest);
  if (before === null) renderSummary(page.summary);
}

function viewNode(seq, summary, event, now) {
  return itemNode({
    key: "l" + seq, id: event.id, at: Date.parse(event.timestamp), timestamp: event.timestamp,
    source: "", ns: event.namespace, name: event.process, type: event.type,
    severity: event.severity, text: summary, kind: "lifecycle",
    output: event.type === "crashed" ? event.output : undefined,
  }, now);
}

// A live event of the process in view goes on top of its history.
function viewEvent(seq, summary, event) {
  const view = state.view;
  if (view.shownSeqs.has(seq)) return;
  view.shownSeqs.add(seq);
  const list = document.getElementById("pv-events");
  list.insertBefore(viewNode(seq, summary, event, Date.now()), list.firstChild);
  renderViewState();
  if (event.type === "crashed" && (view.lastCrashSeq === undefined || seq > view.lastCrashSeq)) {
    renderLastCrash({ seq, timestamp: event.timestamp, exit_code: event.exit_code, output: event.output });
  }
}

function renderSummary(summary) {
  const view = state.view;
  // A crash that came live while the history was read is newer than the history's.
  if (!(view.lastCrashSeq > (summary.last_crash ? summary.last_crash.seq : -1))) renderLastCrash(summary.last_crash);
  document.getElementById("pv-chart").replaceChildren(chart(summary.restarts_per_hour, summary.crashes_per_hour));
}

// Its last crash: the exit code and time, then what it printed last, unfolded.
function renderLastCrash(crash) {
  const box = document.getElementById("pv-last-crash");
  if (!crash) {
    box.textContent = "none in the stream's retention";
    return;
  }
  state.view.lastCrashSeq = crash.seq;
  box.replaceChildren(el("p", "", "exit code " + crash.exit_code + " at " + crash.timestamp));
  if (crash.output) box.appendChild(outputNode(crash.output, true));
}

// Bars per hour, the oldest left: restarts over crashes.
function chart(restarts, crashes) {
  const ns = "http://www.w3.org/2000/svg";
  const width = 480, height = 120, bottom = 105;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 " + width + " " + height);
  svg.setAttribute("width", String(width));
  svg.setAttribute("height", String(height));
  svg.setAttribute("role", "img");
  const max = Math.max(1, ...restarts.map((r, i) => r + crashes[i]));
  const step = width / restarts.length;
  const bar = (x, y, h, className) => {
    const rect = document.createElementNS(ns, "rect");
    rect.setAttribute("x", String(x + 1));
    rect.setAttribute("y", String(y));
    rect.setAttribute("width", String(step - 2));
    rect.setAttribute("height", String(h));
    rect.setAttribute("class", className);
    svg.appendChild(rect);
  };
  restarts.forEach((r, i) => {
    const rh = (r / max) * 90;
    const ch = (crashes[i] / max) * 90;
    bar(i * step, bottom - rh, rh, "restarts");
    bar(i * step, bottom - rh - ch, ch, "crashes");
  });
  const label = (x, text) => {
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", String(x));
    t.setAttribute("y", "118");
    t.textContent = text;
    svg.appendChild(t);
  };
  label(0, "24h ago");
  label(width - 28, "now");
  label(width / 2 - 60, "restarts (amber), crashes (red); max " + max + "/h");
  return svg;
}

// ---- start ---------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  readFilters();
  for (const name of FILTERS) {
    const input = document.getElementById("f-" + name);
    input.addEventListener("input", onFilterInput);
    input.addEventListener("change", onFilterInput);
  }
  document.getElementById("f-clear").addEventListener("click", () => {
    for (const name of FILTERS) document.getElementById("f-" + name).value = "";
    onFilterInput();
  });
  document.getElementById("filters").addEventListener("submit", (e) => e.preventDefault());
  document.getElementById("pv-close").addEventListener("click", closeView);
  if (state.view) showView();
  setInterval(refreshTimes, 10000);
  connect();
});
