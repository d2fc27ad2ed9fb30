// The operator dashboard: draws the gateway's state (schema 1) and keeps it live over Server-Sent
// Events. Plain JavaScript, no dependencies; every URL is relative (the page may sit under a path
// prefix). Strings from the state are untrusted (node names, errors come off MQTT), so text is only
// ever set through textContent / attributes, never innerHTML.
"use strict";

(function () {
  const SCHEMA = 1;
  const STALE_MS = 5000; // no state for this long: the gateway counts as unreachable
  const REOPEN_MS = 15000; // an open stream silent this long is closed and opened afresh
  const RETRY_MIN_MS = 1000;
  const RETRY_MAX_MS = 5000;
  const ERROR_NOTE_MS = 30000; // how long the "ignored a malformed update" note stays
  const EXITS = ["local", "edge", "cloud", "failed"];
  const HEALTHS = ["online", "late", "offline", "done", "unknown"];
  const SVG_NS = "http://www.w3.org/2000/svg";

  const conn = {
    source: null,
    openedAt: 0,
    lastStateAt: 0, // Date.now() of the last good state (stream or fetch)
    lastState: null,
    streamDown: false,
    refusal: "", // the HTTP status the gateway last refused the stream with
    retryTimer: 0,
    retryMs: RETRY_MIN_MS,
    startedAt: Date.now(),
  };
  const problems = { count: 0, lastAt: 0, text: "" };
  const topo = { key: null, nodes: new Map(), links: [] };

  // ---- small helpers: safe readers and formatters (bad input gives "—", never an exception) ----

  const $ = (id) => document.getElementById(id);
  const num = (x) => (typeof x === "number" && Number.isFinite(x) ? x : null);
  const str = (x) => (typeof x === "string" ? x : x === null || x === undefined ? "" : String(x));
  const arr = (x) => (Array.isArray(x) ? x : []);
  const obj = (x) => (x && typeof x === "object" && !Array.isArray(x) ? x : {});
  const byName = (a, b) => str(a).localeCompare(str(b), undefined, { numeric: true });
  const DASH = "—";

  function fmtRate(bps) {
    const v = num(bps);
    if (v === null) return DASH;
    if (Math.abs(v) < 1000) return `${v.toFixed(v < 10 && v !== 0 ? 1 : 0)} B/s`;
    if (Math.abs(v) < 1e6) return `${(v / 1e3).toFixed(1)} kB/s`;
    return `${(v / 1e6).toFixed(2)} MB/s`;
  }

  function fmtBytes(b) {
    const v = num(b);
    if (v === null || v <= 0) return DASH;
    if (v < 1e3) return `${v} B`;
    if (v < 1e6) return `${(v / 1e3).toFixed(1)} kB`;
    if (v < 1e9) return `${(v / 1e6).toFixed(1)} MB`;
    return `${(v / 1e9).toFixed(2)} GB`;
  }

  const fmtMs = (x) => (num(x) === null ? DASH : `${num(x).toFixed(1)}`);
  const fmtInt = (x) => (num(x) === null ? DASH : Math.round(num(x)).toLocaleString("en-US"));
  const fmtPct = (frac, digits = 1) => (num(frac) === null ? DASH : `${(frac * 100).toFixed(digits)}%`);

  function fmtAge(s) {
    const v = num(s);
    if (v === null) return "";
    if (v < 60) return `${v.toFixed(1)} s`;
    if (v < 3600) return `${Math.round(v / 60)} min`;
    return `${(v / 3600).toFixed(1)} h`;
  }

  function fmtClock(epochS) {
    const d = num(epochS) === null ? new Date() : new Date(epochS * 1000);
    const pad = (n) => String(n).padStart(2, "0");
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function fmtHex(v) {
    const n = num(v);
    if (n === null || n < 0 || !Number.isInteger(n)) return DASH;
    return `0x${n.toString(16).padStart(8, "0")}`;
  }

  /** How many times fewer bytes the device sent than raw offloading would ("56× less"). */
  function fmtSaving(sent, raw) {
    const s = num(sent);
    const r = num(raw);
    if (s === null || r === null || r <= 0) return DASH;
    if (s <= 0) return "nothing sent";
    const ratio = r / s;
    const shown = (x) => (x >= 10 ? Math.round(x).toLocaleString("en-US") : x.toFixed(1));
    return ratio >= 1 ? `${shown(ratio)}× less` : `${shown(1 / ratio)}× more`;
  }

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "text") node.textContent = v;
      else if (k === "className") node.className = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c);
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v;
      else node.setAttribute(k, String(v));
    }
    for (const c of children) node.append(c);
    return node;
  }

  const td = (text, className) => el("td", className ? { text, className } : { text });

  function fillRows(tbodyId, rows, columns, emptyText) {
    const body = $(tbodyId);
    if (rows.length === 0) {
      const cell = el("td", { className: "none", colspan: String(columns), text: emptyText });
      body.replaceChildren(el("tr", {}, cell));
    } else {
      body.replaceChildren(...rows);
    }
  }

  // ---- state → page ----

  function nodesOf(state) {
    const seen = new Map();
    for (const n of arr(state.nodes)) {
      const node = obj(n);
      const name = str(node.name);
      if (name && !seen.has(name)) seen.set(name, { ...node, name });
    }
    return seen;
  }

  function roleOf(node) {
    const role = str(node.role);
    if (role) return role;
    const m = /^(device|edge)_\d+$/.exec(str(node.name));
    return m ? m[1] : "";
  }

  const healthOf = (node) => (HEALTHS.includes(str(node.health)) ? str(node.health) : "unknown");

  function healthLine(node) {
    const health = healthOf(node);
    const age = fmtAge(node.stats_age_s);
    if ((health === "late" || health === "offline") && age) return `${health} · ${age}`;
    return health;
  }

  function renderHeader(state) {
    const broker = obj(state.broker);
    $("namespace").textContent = str(state.namespace) || DASH;
    $("broker-url").textContent = str(broker.url) || DASH;
    const nodes = arr(state.nodes).length;
    const schema =
      state.schema === SCHEMA ? "" : ` · state schema ${str(state.schema)} (page knows ${SCHEMA})`;
    $("updated-at").textContent = `Last update ${fmtClock(state.time)} · ${nodes} nodes${schema}`;
  }

  function renderExits(state) {
    const exits = obj(state.exits);
    const counts = EXITS.map((k) => Math.max(0, num(exits[k]) || 0));
    const total = counts.reduce((a, b) => a + b, 0);
    const windowS = num(exits.window_s);
    $("answered-last-minute").textContent = String(Math.round(total));
    $("exit-window").textContent = windowS === null ? "" : `last ${Math.round(windowS)} s`;
    const minute = windowS === null || Math.round(windowS) === 60;
    const span = minute ? "minute" : `${Math.round(windowS)} s`;
    $("answered-label").textContent = `answered in the last ${span}`;
    const bar = $("exit-bar");
    const segments = [];
    const rows = [];
    EXITS.forEach((name, i) => {
      const share = total > 0 ? counts[i] / total : null;
      const label = `${name}: ${fmtInt(counts[i])} (${fmtPct(share)})`;
      if (counts[i] > 0) {
        const seg = el("div", { className: `seg ${name}`, title: label });
        seg.style.width = `${(share * 100).toFixed(3)}%`;
        segments.push(seg);
      }
      const swatch = el("span", { className: `swatch ${name}` });
      rows.push(
        el("tr", { "data-exit": name },
          el("td", {}, swatch, name), td(fmtInt(counts[i])), td(fmtPct(share))),
      );
    });
    bar.replaceChildren(...segments);
    bar.setAttribute("aria-label", `Exit mix: ${rows.map((r) => r.textContent).join(", ")}`);
    $("exit-rows").replaceChildren(...rows);
    const degraded = Math.max(0, num(exits.degraded) || 0);
    const deg = $("degraded-count");
    deg.textContent = fmtInt(degraded);
    deg.classList.toggle("warn", degraded > 0);
  }

  function renderLatency(state) {
    const latency = obj(state.latency_ms);
    const order = (k) => (EXITS.includes(k) ? EXITS.indexOf(k) : EXITS.length);
    const keys = Object.keys(latency).sort((a, b) => order(a) - order(b) || byName(a, b));
    const rows = keys.map((k) => {
      const row = obj(latency[k]);
      return el("tr", { "data-exit": k },
        el("td", {}, el("span", { className: `swatch ${EXITS.includes(k) ? k : ""}` }), k),
        td(fmtMs(row.p50)), td(fmtMs(row.p99)), td(fmtInt(row.count)));
    });
    fillRows("latency-rows", rows, 4, "No answers in the window yet.");
  }

  function renderBytes(state, nodes) {
    const links = arr(state.links).map(obj).filter((l) => str(l.from) && str(l.to));
    const isDevice = (name) =>
      nodes.has(name) ? roleOf(nodes.get(name)) === "device" : /^device_\d+$/.test(name);
    const raw = new Map();
    for (const r of arr(state.raw).map(obj)) if (str(r.device)) raw.set(str(r.device), r);
    const deviceLinks = links.filter((l) => isDevice(str(l.from)));
    const flow = ["scores", "features"]; // the order data flows up, then any others by name
    const rank = (m) => (flow.includes(m) ? flow.indexOf(m) : flow.length);
    const messages = [...new Set(deviceLinks.map((l) => str(l.message) || "?"))]
      .sort((a, b) => rank(a) - rank(b) || byName(a, b));
    const devices = [...new Set([...raw.keys(), ...deviceLinks.map((l) => str(l.from))])].sort(byName);

    const head = [el("th", { scope: "col", text: "Device" })];
    for (const m of messages) head.push(el("th", { scope: "col", text: m }));
    head.push(el("th", { scope: "col", text: "Sent" }), el("th", { scope: "col", text: "Raw would send" }),
      el("th", { scope: "col", text: "Saving" }));
    $("bytes-head").replaceChildren(el("tr", {}, ...head));

    const rows = devices.map((device) => {
      const mine = deviceLinks.filter((l) => str(l.from) === device);
      const cells = [td(device)];
      for (const m of messages) {
        const hits = mine.filter((l) => (str(l.message) || "?") === m);
        const rate = hits.length ? hits.reduce((a, l) => a + (num(l.bytes_per_s) || 0), 0) : null;
        const cell = td(fmtRate(rate));
        if (hits.length) cell.title = hits.map((l) => `${m} → ${str(l.to)}`).join(", ");
        cells.push(cell);
      }
      const r = obj(raw.get(device));
      const summed = mine.length ? mine.reduce((a, l) => a + (num(l.bytes_per_s) || 0), 0) : null;
      const sent = num(r.sent_bytes_per_s) !== null ? num(r.sent_bytes_per_s) : summed;
      const saving = fmtSaving(sent, r.raw_bytes_per_s);
      cells.push(td(fmtRate(sent)), td(fmtRate(r.raw_bytes_per_s)),
        td(saving, saving.endsWith("less") ? "good" : saving.endsWith("more") ? "bad" : ""));
      return el("tr", { "data-device": device }, ...cells);
    });
    fillRows("bytes-rows", rows, messages.length + 4, "No device traffic yet.");

    const upper = links.filter((l) => !isDevice(str(l.from)))
      .sort((a, b) => byName(a.from, b.from) || byName(a.to, b.to));
    const linkRows = upper.map((l) =>
      el("tr", {}, td(`${str(l.from)} → ${str(l.to)}`), td(str(l.message) || DASH),
        td(fmtRate(l.bytes_per_s))));
    fillRows("link-rows", linkRows, 3, "No traffic above the devices yet.");
  }

  function renderAbsence(state) {
    const rows = arr(state.absence).map(obj).filter((a) => str(a.device))
      .sort((a, b) => byName(a.device, b.device))
      .map((a) => {
        const absent = num(a.absent);
        const answers = num(a.answers);
        let rate = num(a.rate);
        if (rate === null && absent !== null && answers) rate = absent / answers;
        const meter = el("span", { className: "meter" }, el("span"));
        meter.firstChild.style.width = `${Math.min(100, Math.max(0, (rate || 0) * 100))}%`;
        return el("tr", { "data-device": str(a.device) },
          td(str(a.device)), el("td", {}, meter, fmtPct(rate)), td(`${fmtInt(absent)} / ${fmtInt(answers)}`));
      });
    fillRows("absence-rows", rows, 3, "No answers counted yet.");
  }

  function renderAnswers(state) {
    const rows = arr(state.answers).slice(0, 20).map(obj).map((a) => {
      const failed = a.failed === true;
      const exit = failed ? "failed" : str(a.exit) || DASH;
      const badge = el("span", { className: `badge ${EXITS.includes(exit) ? exit : ""}`, text: exit });
      if (failed && str(a.exit)) badge.title = `exit ${str(a.exit)}`;
      const classCell = failed
        ? td(str(a.error) || "failed (no reason given)", "error")
        : td(str(a.class_name) || DASH);
      // missing holds device indices; devices are named device_K
      const missing = arr(a.missing).map((k) => (Number.isInteger(k) ? `device_${k}` : str(k)));
      const flags = el("td", {}, ...arr(a.flags).map((f) => el("span", { className: "flag", text: str(f) })));
      const confidence = failed ? DASH : fmtPct(num(a.confidence));
      return el("tr", { className: failed ? "failed" : "", "data-sample": str(a.sample) },
        td(num(a.sample) === null ? DASH : String(a.sample), "n mono"), classCell,
        el("td", {}, badge), td(confidence, "n"),
        td(missing.length ? missing.join(", ") : DASH), td(fmtMs(a.latency_ms), "n"),
        td(fmtHex(a.model_version), "mono"), flags);
    });
    fillRows("answer-rows", rows, 8, "No answers yet.");
  }

  // ---- topology: a layered drawing, rebuilt when the set of nodes or links changes ----

  const BOX = { w: 108, h: 52, gap: 14, groupGap: 44, margin: 18, row: 84, side: 40 };

  function linkClass(from, to, message) {
    if (message === "scores" && roleOf(to) === "aggregator") return "scores";
    if (message === "features" && roleOf(from) === "device") return "features";
    if (["edge", "cloud"].includes(roleOf(to)) && ["edge", "device"].includes(roleOf(from))) return "up";
    return "other";
  }

  /** Where each node goes: devices in a row, grouped under their edge; edges above their group;
   * the cloud on top; the aggregator right of the devices; other roles (triggers) top right. */
  function layout(nodes) {
    const list = [...nodes.values()].sort((a, b) => byName(a.name, b.name));
    const take = (role) => list.filter((n) => roleOf(n) === role);
    const [devices, aggregators, edges, clouds] = ["device", "aggregator", "edge", "cloud"].map(take);
    const others = list.filter((n) => !["device", "aggregator", "edge", "cloud"].includes(roleOf(n)));
    const boxes = new Map();
    const put = (node, x, y, w) => boxes.set(node.name, { x, y, w, h: BOX.h, node });

    const yCloud = BOX.margin;
    const yEdge = yCloud + (clouds.length ? BOX.h + BOX.row : 0);
    const yDev = yEdge + (edges.length ? BOX.h + BOX.row : 0);
    const { frames, right } = placeGroups(nodes, devices, edges, put, yEdge, yDev);
    const cloudW = BOX.w + 36;
    let x = (BOX.margin + right) / 2 - (clouds.length * (cloudW + BOX.gap) - BOX.gap) / 2;
    for (const c of clouds) {
      put(c, x, yCloud, cloudW);
      x += cloudW + BOX.gap;
    }
    const sideX = right + BOX.side;
    aggregators.forEach((a, i) => put(a, sideX + i * (BOX.w + 20 + BOX.gap), yDev, BOX.w + 20));
    let y = yCloud;
    for (const o of others) {
      const hitsAggregator = aggregators.length && y + BOX.h > yDev - 8 && y < yDev + BOX.h + 8;
      if (hitsAggregator) y = yDev + BOX.h + 40;
      put(o, sideX, y, BOX.w + 20);
      y += BOX.h + 16;
    }
    let width = 0;
    let height = 0;
    for (const b of boxes.values()) {
      width = Math.max(width, b.x + b.w);
      height = Math.max(height, b.y + b.h);
    }
    const busY = yDev + BOX.h + 24;
    return { boxes, frames, yDev, busY, width: width + BOX.margin, height: Math.max(height, busY + 28) + 10 };
  }

  /** Devices left to right, one group per edge (then those under no edge), each edge centred over
   * its group; returns the group frames and the right end of the row. */
  function placeGroups(nodes, devices, edges, put, yEdge, yDev) {
    const upperOf = (dev) => {
      const targets = Object.values(obj(dev.links)).map(str);
      return targets.find((t) => nodes.has(t) && roleOf(nodes.get(t)) === "edge") || "";
    };
    const groups = new Map(edges.map((e) => [e.name, []]));
    groups.set("", []);
    for (const d of devices) groups.get(upperOf(d)).push(d);
    const frames = [];
    const edgeW = BOX.w + 16;
    let x = BOX.margin;
    for (const [edgeName, members] of groups) {
      if (members.length === 0 && !edgeName) continue;
      const row = members.length * (BOX.w + BOX.gap) - BOX.gap;
      const span = Math.max(row, edgeName ? edgeW : 0);
      members.forEach((d, i) => put(d, x + (span - row) / 2 + i * (BOX.w + BOX.gap), yDev, BOX.w));
      if (edgeName) put(nodes.get(edgeName), x + span / 2 - edgeW / 2, yEdge, edgeW);
      if (edgeName && members.length) frames.push({ x: x - 8, w: span + 16 });
      x += span + BOX.groupGap;
    }
    return { frames, right: Math.max(BOX.margin + 200, x - BOX.groupGap) };
  }

  function buildTopology(nodes) {
    const root = $("topology");
    const plan = layout(nodes);
    root.replaceChildren($("topology-title"));
    root.setAttribute("viewBox", `0 0 ${plan.width} ${plan.height}`);
    root.setAttribute("width", String(plan.width));
    root.setAttribute("height", String(plan.height));
    root.style.minWidth = `${Math.round(plan.width * 0.7)}px`; // below that, scroll rather than shrink
    root.style.maxWidth = `${plan.width}px`; // never scale a small deployment up
    $("topology-empty").hidden = plan.boxes.size > 0;

    const defs = svg("defs");
    for (const kind of ["scores", "features", "up", "other"]) {
      const marker = svg("marker", { id: `arrow-${kind}`, viewBox: "0 0 10 10", refX: 9, refY: 5,
        markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
      marker.append(svg("path", { d: "M0,0 L10,5 L0,10 z", class: `arrowhead ${kind}` }));
      defs.append(marker);
    }
    const layers = { frames: svg("g"), links: svg("g"), nodes: svg("g"), labels: svg("g") };
    root.append(defs, layers.frames, layers.links, layers.nodes, layers.labels);
    for (const f of plan.frames) {
      layers.frames.append(svg("rect", { class: "group", x: f.x, y: plan.yDev - 8, width: f.w,
        height: BOX.h + 16, rx: 10 }));
    }
    topo.links = [];
    topo.nodes = new Map();
    drawLinks(plan, layers);
    for (const [name, box] of plan.boxes) {
      const g = svg("g", { class: "node", "data-node": name, "data-role": roleOf(box.node),
        transform: `translate(${box.x},${box.y})` });
      const tip = svg("title");
      const shown = name.length > 16 ? `${name.slice(0, 15)}…` : name;
      const healthText = svg("text", { class: "health", x: box.w / 2, y: 40, "text-anchor": "middle" });
      g.append(tip, svg("rect", { width: box.w, height: box.h, rx: 8 }),
        svg("text", { class: "name", x: box.w / 2, y: 22, "text-anchor": "middle", text: shown }),
        healthText);
      layers.nodes.append(g);
      topo.nodes.set(name, { g, tip, healthText });
    }
  }

  /** Every link between two drawn nodes: scores into an aggregator on a bus (the devices' below
   * their row, the edges' above theirs), the rest as straight arrows. */
  function drawLinks(plan, layers) {
    const { boxes } = plan;
    const drawn = [];
    const incoming = new Map(); // target → its sources, to spread arrow ends over its side
    for (const [name, box] of boxes) {
      for (const [message, target] of Object.entries(obj(box.node.links))) {
        const to = str(target);
        if (!boxes.has(to) || to === name) continue; // e.g. answers → "results" is a topic, not a node
        drawn.push({ from: name, to, message });
        incoming.set(to, [...(incoming.get(to) || []), name]);
      }
    }
    const buses = new Map(); // `${below|above}\u0000${aggregator}` → links
    for (const link of drawn) {
      const a = boxes.get(link.from);
      const b = boxes.get(link.to);
      const kind = linkClass(a.node, b.node, link.message);
      if (kind === "scores") {
        const key = `${a.y >= b.y ? "below" : "above"}\u0000${link.to}`;
        buses.set(key, [...(buses.get(key) || []), link]);
        continue;
      }
      const sources = incoming.get(link.to).sort((p, q) => boxes.get(p).x - boxes.get(q).x);
      const spread = (sources.indexOf(link.from) + 1) / (sources.length + 1);
      const [d, mid] = arrowPath(a, b, spread);
      const path = svg("path", { class: `link ${kind}`, d, "marker-end": `url(#arrow-${kind})`,
        "data-from": link.from, "data-to": link.to, "data-message": link.message });
      const tip = svg("title");
      path.append(tip);
      layers.links.append(path);
      const label = svg("text", { class: "rate", x: mid[0], y: mid[1] + 4, "text-anchor": "middle" });
      const backing = svg("rect", { class: "rate-bg", rx: 3 }); // hides the line behind the words
      layers.labels.append(backing, label);
      topo.links.push({ ...link, paths: [path], tip, label, backing });
    }
    let index = 0;
    for (const [key, links] of buses) {
      const [side, aggName] = key.split("\u0000");
      drawBus(plan, layers, boxes.get(aggName), aggName, links, side, index);
      index += 1;
    }
  }

  /** A straight arrow from box a to box b (bowed when both sit in one row), and its midpoint. */
  function arrowPath(a, b, spread) {
    const x1 = a.x + a.w / 2;
    const x2 = b.x + b.w * spread;
    const mid = (y1, y2) => [(x1 + x2) / 2, (y1 + y2) / 2];
    if (b.y + b.h <= a.y) return [`M${x1},${a.y} L${x2},${b.y + b.h}`, mid(a.y, b.y + b.h)]; // up
    if (a.y + a.h <= b.y) return [`M${x1},${a.y + a.h} L${x2},${b.y}`, mid(a.y + a.h, b.y)]; // down
    const right = b.x > a.x;
    const xa = right ? a.x + a.w : a.x;
    const xb = right ? b.x : b.x + b.w;
    const y = a.y + a.h / 2;
    return [`M${xa},${y} Q${(xa + xb) / 2},${y - 30} ${xb},${y}`, [(xa + xb) / 2, y - 15]];
  }

  /** Scores of many senders into one aggregator: a drop from each sender onto a shared line that
   * runs to the aggregator (below the device row, or above the edge row for the edges). */
  function drawBus(plan, layers, agg, aggName, links, side, index) {
    const senders = links.map((l) => plan.boxes.get(l.from));
    const below = side === "below";
    const y = below ? plan.busY + index * 8 : Math.min(...senders.map((b) => b.y)) - 14;
    const xs = senders.map((b) => (below ? b.x + b.w / 2 : b.x + b.w - 16));
    const drops = senders.map((b, i) => `M${xs[i]},${below ? b.y + b.h : b.y} V${y}`).join(" ");
    const ax = agg.x + agg.w / 2;
    const dropPath = svg("path", { class: "link scores", d: drops });
    const end = below ? agg.y + agg.h : agg.y;
    const busPath = svg("path", { class: "link scores", d: `M${Math.min(...xs)},${y} H${ax} V${end}`,
      "marker-end": "url(#arrow-scores)", "data-to": aggName, "data-message": "scores" });
    const tip = svg("title");
    busPath.append(tip);
    layers.links.append(dropPath, busPath);
    const label = below
      ? svg("text", { class: "rate", x: ax - 10, y: y + 16, "text-anchor": "end" })
      : svg("text", { class: "rate", x: ax + 8, y: y - 6, "text-anchor": "end" });
    layers.labels.append(label);
    const what = below ? "scores" : `${senders.length > 1 ? "edge" : roleOf(senders[0].node)} scores`;
    topo.links.push({ from: null, to: aggName, message: "scores", bus: links.map((l) => l.from),
      what, paths: [dropPath, busPath], tip, label });
  }

  function fitBacking(link) {
    const box = link.label.textContent ? link.label.getBBox() : null;
    const at = box
      ? { x: box.x - 3, y: box.y - 1, width: box.width + 6, height: box.height + 2 }
      : { width: 0, height: 0 };
    for (const [k, v] of Object.entries(at)) link.backing.setAttribute(k, String(v));
  }

  function topologyKey(nodes) {
    const parts = [...nodes.values()].map((n) =>
      [n.name, roleOf(n), Object.entries(obj(n.links)).map(([k, v]) => `${k}>${str(v)}`).sort()]);
    return JSON.stringify(parts.sort((a, b) => byName(a[0], b[0])));
  }

  function renderTopology(state, nodes) {
    const key = topologyKey(nodes);
    if (key !== topo.key) {
      buildTopology(nodes);
      topo.key = key;
    }
    for (const [name, parts] of topo.nodes) {
      const node = obj(nodes.get(name));
      const health = healthOf(node);
      parts.g.setAttribute("data-health", health);
      parts.healthText.textContent = healthLine(node);
      const facts = [`${name} (${roleOf(node) || "no role"})`, `health: ${str(node.health) || "unknown"}`];
      if (num(node.stats_age_s) !== null) facts.push(`stats ${fmtAge(node.stats_age_s)} old`);
      if (num(node.memory_bytes)) facts.push(`memory ${fmtBytes(node.memory_bytes)}`);
      const cache = num(node.cache_samples);
      if (cache !== null) facts.push(`feature cache: ${fmtInt(cache)} samples`);
      parts.tip.textContent = facts.join("\n");
    }
    const rates = new Map();
    for (const l of arr(state.links).map(obj)) {
      const k = `${str(l.from)}\u0000${str(l.to)}\u0000${str(l.message)}`;
      rates.set(k, (rates.get(k) || 0) + (num(l.bytes_per_s) || 0));
    }
    const rateOf = (from, to, message) => {
      const k = `${from}\u0000${to}\u0000${message}`;
      return rates.has(k) ? rates.get(k) : null;
    };
    for (const link of topo.links) {
      if (!link.paths.length) continue;
      let rate;
      if (link.bus) {
        const each = link.bus.map((from) => rateOf(from, link.to, "scores")).filter((r) => r !== null);
        rate = each.length ? each.reduce((a, b) => a + b, 0) : null;
        link.tip.textContent = `${link.what} from ${link.bus.join(", ")} → ${link.to}: ${fmtRate(rate)}`;
        link.label.textContent = rate === null ? link.what : `${link.what} · ${fmtRate(rate)}`;
      } else {
        rate = rateOf(link.from, link.to, link.message);
        link.tip.textContent = `${link.message}: ${link.from} → ${link.to}, ${fmtRate(rate)}`;
        link.label.textContent = rate === null ? "" : fmtRate(rate);
        fitBacking(link);
      }
      for (const p of link.paths) p.classList.toggle("idle", !rate);
    }
  }

  // ---- the feed: one state per event; a bad one is noted and skipped, never fatal ----

  function noteProblem(text) {
    problems.count += 1;
    problems.lastAt = Date.now();
    problems.text = text;
    const note = $("page-error");
    const what = problems.count === 1 ? "1 update" : `${problems.count} updates`;
    note.textContent = `Ignored ${what} the page could not read (last at ${fmtClock(null)}: ${text}).`;
    note.hidden = false;
  }

  const PARTS = [
    ["header", renderHeader],
    ["topology", renderTopology],
    ["exit mix", renderExits],
    ["latency", renderLatency],
    ["bytes", renderBytes],
    ["absence", renderAbsence],
    ["answers", renderAnswers],
  ];

  function render(state) {
    let nodes = new Map();
    try {
      nodes = nodesOf(state);
    } catch (e) {
      noteProblem(`nodes: ${e.message}`);
    }
    for (const [part, draw] of PARTS) {
      try {
        draw(state, nodes);
      } catch (e) {
        noteProblem(`${part}: ${e && e.message ? e.message : e}`);
      }
    }
  }

  function accept(text, fromStream) {
    let state;
    try {
      state = JSON.parse(text);
    } catch (e) {
      noteProblem(`malformed JSON: ${e.message}`);
      return;
    }
    if (!state || typeof state !== "object" || Array.isArray(state)) {
      noteProblem("the update is not a JSON object");
      return;
    }
    conn.lastState = state;
    conn.lastStateAt = Date.now();
    if (fromStream) {
      conn.streamDown = false;
      conn.refusal = "";
    }
    render(state);
    showConnection();
  }

  function showConnection() {
    const banner = $("connection");
    const now = Date.now();
    const stale = conn.lastStateAt ? now - conn.lastStateAt > STALE_MS : now - conn.startedAt > STALE_MS;
    let state;
    let text;
    if (conn.streamDown || stale) {
      state = "gateway-down";
      text = "Gateway unreachable — retrying";
      if (conn.refusal === 401 || conn.refusal === 403) text += ` (HTTP ${conn.refusal}: sign in again)`;
      else if (conn.refusal) text += ` (HTTP ${conn.refusal})`;
      if (conn.lastStateAt) text += ` · last update ${fmtClock(obj(conn.lastState).time)}`;
    } else if (!conn.lastState) {
      state = "connecting";
      text = "Connecting…";
    } else if (obj(conn.lastState.broker).connected === false) {
      state = "broker-down";
      text = `Broker disconnected: ${str(obj(conn.lastState.broker).error) || "no reason given"}`;
    } else {
      state = "live";
      text = `Live · updated ${fmtClock(conn.lastState.time)}`;
    }
    if (banner.getAttribute("data-state") !== state) banner.setAttribute("data-state", state);
    $("connection-text").textContent = text;
    banner.title = text;
    document.body.classList.toggle("stale", state === "gateway-down" && conn.lastStateAt > 0);
    if (problems.count && now - problems.lastAt > ERROR_NOTE_MS) {
      $("page-error").hidden = true;
      problems.count = 0;
    }
  }

  function scheduleReconnect() {
    clearTimeout(conn.retryTimer);
    conn.retryTimer = setTimeout(connect, conn.retryMs);
    conn.retryMs = Math.min(conn.retryMs * 2, RETRY_MAX_MS);
  }

  /** Asks the state URL why the stream was refused (a 401 needs a new sign-in, not patience). */
  function probe() {
    fetch("dashboard/state", { cache: "no-store", credentials: "same-origin" })
      .then((r) => {
        conn.refusal = r.ok ? "" : r.status;
        showConnection();
      })
      .catch(() => {
        conn.refusal = "";
      });
  }

  function connect() {
    clearTimeout(conn.retryTimer);
    if (conn.source) conn.source.close();
    let source;
    try {
      source = new EventSource("dashboard/events");
    } catch (e) {
      conn.streamDown = true;
      scheduleReconnect();
      return;
    }
    conn.source = source;
    conn.openedAt = Date.now();
    const onState = (event) => {
      if (conn.source === source) accept(event.data, true);
    };
    source.addEventListener("state", onState);
    source.addEventListener("message", onState); // an unnamed event carries a state too
    source.addEventListener("open", () => {
      conn.retryMs = RETRY_MIN_MS;
    });
    source.addEventListener("error", () => {
      if (conn.source !== source) return;
      conn.streamDown = true;
      showConnection();
      // The browser retries a dropped stream itself, but gives up for good on an HTTP error
      // (a 503, a 401, a proxy's HTML page): then it is ours to retry.
      if (source.readyState === EventSource.CLOSED) {
        probe();
        scheduleReconnect();
      }
    });
  }

  function tick() {
    const now = Date.now();
    const src = conn.source;
    const silentSince = Math.max(conn.lastStateAt, conn.openedAt);
    if (src && src.readyState !== EventSource.CLOSED && now - silentSince > REOPEN_MS) {
      connect(); // open but silent: a proxy or a hung gateway; start over
    }
    showConnection();
  }

  function start() {
    fetch("dashboard/state", { cache: "no-store", credentials: "same-origin" })
      .then((r) => (r.ok ? r.text() : Promise.reject(new Error(`HTTP ${r.status}`))))
      .then((text) => {
        if (!conn.lastStateAt) accept(text, false);
      })
      .catch(() => {}); // the stream will bring the state, or the banner will say it cannot
    connect();
    setInterval(tick, 1000);
    showConnection();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
