// rivalis-fleet dashboard: a client of the public REST API and SSE stream, nothing else.
// The admin key is asked for once and traded for a token (POST /v1/tokens); only the
// token is kept, in sessionStorage. Every value shown comes from the API and is written
// with textContent, never parsed as HTML.
"use strict";

(function () {
  const TOKEN_KEY = "rivalis-fleet.token";
  const TOKEN_TTL_S = 8 * 3600;
  const REFRESH_MS = 2000;
  const EVENT_REFRESH_MS = 150;
  const CHART_WINDOW_MS = 10 * 60 * 1000; // the most the chart shows
  const CHART_MIN_SPAN_MS = 10 * 1000;
  const CHART_STEP_MS = 1000;
  const FEED_LIMIT = 100;
  const ROOMS_PER_TYPE = 50;
  const EVENT_TYPES = [
    "instance:join", "instance:leave", "instance:stale",
    "room:create", "room:destroy", "room:update", "sync",
  ];

  const state = {
    session: null, // {token, scope, expiresAt}
    stats: null,
    instances: [],
    instanceCount: 0,
    stale: new Map(), // instance id -> lastSyncAt when it went stale
    samples: [], // {t, rooms, connections}
    source: null,
    refreshTimer: null,
    pollTimer: null,
    tickTimer: null,
    refreshing: false,
    again: false,
  };

  const $ = (id) => document.getElementById(id);

  function el(tag, props, children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [name, value] of Object.entries(props)) {
        if (name === "text") node.textContent = value;
        else if (name === "className") node.className = value;
        else node.setAttribute(name, value);
      }
    }
    for (const child of children || []) node.append(child);
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    return node;
  }

  function format(n) {
    return n === null || n === undefined ? "∞" : Number(n).toLocaleString("en-US");
  }

  function age(ms) {
    const s = Math.max(0, ms) / 1000;
    if (s < 10) return (Math.round(s * 10) / 10) + " s";
    if (s < 120) return Math.round(s) + " s";
    if (s < 7200) return Math.round(s / 60) + " min";
    return Math.round(s / 3600) + " h";
  }

  // --- the session --------------------------------------------------------------

  function claims(token) {
    // What a token says of itself (docs/tokens-and-metrics.md): scope and expiry, for
    // the view only; the orchestrator checks the signature on every call.
    try {
      const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const payload = JSON.parse(atob(part + "===".slice((part.length + 3) % 4)));
      return { token: token, scope: payload.scope === "admin" ? "admin" : "read", expiresAt: payload.exp };
    } catch (error) {
      return { token: token, scope: "read", expiresAt: null };
    }
  }

  function loadSession() {
    const url = new URL(window.location.href);
    const fromUrl = url.searchParams.get("token");
    if (fromUrl) {
      // A link carrying ?token=: keep it, and take it out of the address bar.
      url.searchParams.delete("token");
      window.history.replaceState(null, "", url.pathname + url.search + url.hash);
      const session = claims(fromUrl);
      saveSession(session);
      return session;
    }
    try {
      const saved = JSON.parse(window.sessionStorage.getItem(TOKEN_KEY) || "null");
      if (saved && saved.token && (!saved.expiresAt || saved.expiresAt > Date.now())) return saved;
    } catch (error) {
      // an unreadable entry: sign in again
    }
    return null;
  }

  function saveSession(session) {
    state.session = session;
    window.sessionStorage.setItem(TOKEN_KEY, JSON.stringify(session));
  }

  function signOut(message) {
    window.sessionStorage.removeItem(TOKEN_KEY);
    state.session = null;
    stopLive();
    window.clearInterval(state.pollTimer);
    window.clearInterval(state.tickTimer);
    $("main").hidden = true;
    $("sign-out").hidden = true;
    $("session").textContent = "";
    $("login").hidden = false;
    $("login-message").textContent = message || "";
    $("login-key").focus();
  }

  async function signIn(event) {
    event.preventDefault();
    const keyInput = $("login-key");
    const scope = $("login-scope").value;
    const button = event.submitter || $("login-form").querySelector("button");
    button.disabled = true;
    $("login-message").textContent = "";
    try {
      const response = await fetch("/v1/tokens", {
        method: "POST",
        headers: { "Authorization": "Bearer " + keyInput.value, "Content-Type": "application/json" },
        body: JSON.stringify({ scope: scope, ttlS: TOKEN_TTL_S }),
        cache: "no-store",
      });
      const body = await response.json().catch(() => ({}));
      if (response.status !== 201) {
        const cause = body.cause || "HTTP " + response.status;
        $("login-message").textContent = cause === "UNAUTHORIZED" ? "That key was not accepted." : "Refused: " + cause;
        return;
      }
      keyInput.value = ""; // the key goes no further than this request
      saveSession(body.data);
      start();
    } catch (error) {
      $("login-message").textContent = "The orchestrator did not answer.";
    } finally {
      button.disabled = false;
    }
  }

  // --- the API --------------------------------------------------------------------

  async function api(method, path, body) {
    const options = {
      method: method,
      headers: { "Authorization": "Bearer " + state.session.token },
      cache: "no-cache",
    };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(path, options);
    const text = await response.text();
    let value = null;
    try {
      value = text ? JSON.parse(text) : null;
    } catch (error) {
      value = null;
    }
    if (response.status === 401) {
      signOut("The session ended (expired or its key was rotated out). Sign in again.");
      throw new Error("UNAUTHORIZED");
    }
    if (!response.ok) throw new Error((value && value.cause) || "HTTP " + response.status);
    return value;
  }

  async function refresh() {
    if (!state.session) return;
    if (state.refreshing) {
      state.again = true;
      return;
    }
    state.refreshing = true;
    try {
      const [stats, instances] = await Promise.all([
        api("GET", "/v1/stats"),
        api("GET", "/v1/instances?limit=200"),
      ]);
      state.stats = stats.data;
      state.instances = instances.data;
      state.instanceCount = instances.count === undefined ? instances.data.length : instances.count;
      render();
    } catch (error) {
      // a failed refresh leaves the last view (401 has already signed out); say why
      if (state.session) $("stat-updated").textContent = "not updated: " + error.message;
    } finally {
      state.refreshing = false;
      if (state.again) {
        state.again = false;
        scheduleRefresh();
      }
    }
  }

  function scheduleRefresh() {
    if (state.refreshTimer !== null) return;
    state.refreshTimer = window.setTimeout(() => {
      state.refreshTimer = null;
      refresh();
    }, EVENT_REFRESH_MS);
  }

  // --- the live stream ----------------------------------------------------------------

  function startLive() {
    stopLive();
    const source = new EventSource("/v1/events?token=" + encodeURIComponent(state.session.token));
    state.source = source;
    source.onopen = () => setLive(true);
    source.onerror = () => {
      setLive(false);
      if (source.readyState === EventSource.CLOSED) {
        // refused (an expired token?): a refresh finds out, then try again later
        refresh();
        window.setTimeout(() => { if (state.session && state.source === source) startLive(); }, 5000);
      }
    };
    for (const type of EVENT_TYPES) {
      source.addEventListener(type, (event) => onEvent(type, event.data));
    }
  }

  function stopLive() {
    if (state.source) state.source.close();
    state.source = null;
    setLive(false);
  }

  function setLive(on) {
    const pill = $("live");
    pill.textContent = on ? "live" : "offline";
    pill.classList.toggle("off", !on);
  }

  function onEvent(type, data) {
    let payload = null;
    try {
      payload = JSON.parse(data);
    } catch (error) {
      return;
    }
    if (type === "instance:stale" && payload && payload.id) state.stale.set(payload.id, payload.lastSyncAt);
    if (type !== "sync") addToFeed(type, payload);
    scheduleRefresh();
  }

  function describe(type, p) {
    if (!p) return "";
    if (type.startsWith("instance:")) {
      const labels = Object.entries(p.labels || {}).map(([k, v]) => k + "=" + v).join(" ");
      return p.name + (labels ? " (" + labels + ")" : "");
    }
    const owner = nameOf(p.instanceId);
    return p.id + " · " + p.type + (owner ? " on " + owner : "");
  }

  function addToFeed(type, payload) {
    feedLine(type, describe(type, payload));
  }

  function feedLine(type, text) {
    const feed = $("feed");
    const now = new Date();
    const item = el("li", null, [
      el("time", { text: now.toTimeString().slice(0, 8), datetime: now.toISOString() }),
      el("span", { className: "type " + type.replace(":", "-"), text: type }),
      el("span", { className: "what", text: text }),
    ]);
    feed.prepend(item);
    while (feed.children.length > FEED_LIMIT) feed.lastElementChild.remove();
  }

  // --- rendering ------------------------------------------------------------------

  function nameOf(instanceId) {
    const found = state.instances.find((i) => i.id === instanceId);
    return found ? found.name : "";
  }

  function isStale(instance) {
    if (!state.stale.has(instance.id)) return false;
    if (state.stale.get(instance.id) !== instance.lastSyncAt) {
      state.stale.delete(instance.id); // it answered a poll since
      return false;
    }
    return true;
  }

  function render() {
    const stats = state.stats;
    const rooms = state.instances.flatMap((i) => i.rooms);
    const reserved = rooms.reduce((sum, r) => sum + (r.reservedSeats || 0), 0);
    const draining = state.instances.filter((i) => i.status === "draining").length;
    const stale = state.instances.filter(isStale).length;
    $("stat-instances").textContent = format(stats.instances);
    $("stat-instances-sub").textContent = draining + " draining · " + stale + " stale";
    $("stat-rooms").textContent = format(stats.rooms);
    $("stat-types").textContent = stats.roomTypes.length ? stats.roomTypes.join(", ") : "no room types";
    $("stat-connections").textContent = format(stats.connections);
    $("stat-reserved").textContent = format(reserved);
    $("stat-hash").textContent = stats.stateHash;
    $("stat-updated").textContent = "updated " + new Date().toTimeString().slice(0, 8);
    renderInstances();
    renderRooms(rooms);
    renderTypes(stats.roomTypes);
    sample(stats);
  }

  function statusPill(instance) {
    const status = isStale(instance) ? "stale" : instance.status;
    return el("span", { className: "pill " + status, text: status });
  }

  function renderInstances() {
    const body = $("instances").querySelector("tbody");
    const admin = state.session.scope === "admin";
    const rows = state.instances.map((instance) => {
      const labels = Object.entries(instance.labels).map(([k, v]) => el("span", { className: "chip", text: k + "=" + v }));
      const cap = instance.capacity || {};
      const action = el("td", { className: "admin-only" });
      if (admin) {
        const draining = instance.status === "draining";
        const button = el("button", {
          type: "button",
          className: "secondary",
          text: draining ? "Undrain" : "Drain",
          "data-instance": instance.id,
          "data-action": draining ? "undrain" : "drain",
        });
        action.append(button);
      }
      const ageCell = el("td", { className: "num age", "data-synced": String(instance.lastSyncAt) });
      return el("tr", { "data-id": instance.id }, [
        el("td", { className: "name" }, [instance.name, el("span", { className: "id mono", text: instance.id })]),
        el("td", null, [statusPill(instance)]),
        el("td", null, labels),
        el("td", { className: "num", text: instance.rooms.length + " / " + format(cap.maxRooms) }),
        el("td", { className: "num", text: format(instance.connections) + " / " + format(cap.maxConnections) }),
        ageCell,
        action,
      ]);
    });
    body.replaceChildren(...rows);
    $("instances-count").textContent = state.instanceCount > rows.length
      ? rows.length + " of " + format(state.instanceCount)
      : String(rows.length);
    $("instances-empty").hidden = rows.length > 0;
    tickAges();
  }

  function tickAges() {
    const now = Date.now();
    for (const cell of document.querySelectorAll("td.age")) {
      const ms = now - Number(cell.dataset.synced);
      cell.textContent = age(ms) + " ago";
      cell.classList.toggle("old", ms > 15000);
    }
  }

  function metadataText(metadata) {
    return Object.entries(metadata || {})
      .map(([k, v]) => k + "=" + (typeof v === "string" ? v : JSON.stringify(v)))
      .join(" ");
  }

  function renderRooms(rooms) {
    const byType = new Map();
    for (const room of rooms) {
      if (!byType.has(room.type)) byType.set(room.type, []);
      byType.get(room.type).push(room);
    }
    const sections = [];
    for (const type of [...byType.keys()].sort()) {
      const list = byType.get(type).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      const connections = list.reduce((sum, r) => sum + r.connections, 0);
      const rows = list.slice(0, ROOMS_PER_TYPE).map((room) => {
        const seats = room.maxConnections === null || room.maxConnections === undefined
          ? format(room.connections) + " / ∞"
          : format(room.connections) + " / " + format(room.maxConnections);
        const flags = [];
        if (room.locked) flags.push(el("span", { className: "chip locked", text: "locked" }));
        if (room.local) flags.push(el("span", { className: "chip", text: "local" }));
        return el("tr", { "data-room": room.id }, [
          el("td", { className: "mono", text: room.id }),
          el("td", { text: nameOf(room.instanceId) }),
          el("td", { className: "num", text: seats }),
          el("td", { className: "num", text: format(room.reservedSeats || 0) }),
          el("td", null, flags),
          el("td", { className: "mono", text: metadataText(room.metadata) }),
        ]);
      });
      const head = el("tr", null, ["Room", "Instance", "Seats", "Reserved", "", "Metadata"].map(
        (text, i) => el("th", { className: i === 2 || i === 3 ? "num" : "", text: text })));
      const more = list.length > ROOMS_PER_TYPE ? " (first " + ROOMS_PER_TYPE + " shown)" : "";
      sections.push(el("section", { "data-type": type }, [
        el("h3", null, [type, el("span", { className: "muted", text: list.length + " rooms · " + format(connections) + " connections" + more })]),
        el("table", { className: "table" }, [el("thead", null, [head]), el("tbody", null, rows)]),
      ]));
    }
    $("room-types").replaceChildren(...sections);
    $("rooms-count").textContent = String(rooms.length);
    $("rooms-empty").hidden = rooms.length > 0;
  }

  function renderTypes(types) {
    const select = $("create-type");
    const current = select.value;
    const known = [...select.options].map((o) => o.value).join("\n");
    if (known === types.join("\n")) return;
    select.replaceChildren(...types.map((t) => el("option", { value: t, text: t })));
    if (types.includes(current)) select.value = current;
  }

  // --- the chart --------------------------------------------------------------------

  function sample(stats) {
    const now = Date.now();
    const last = state.samples[state.samples.length - 1];
    const point = { t: now, rooms: stats.rooms, connections: stats.connections };
    if (last && now - last.t < CHART_STEP_MS) state.samples[state.samples.length - 1] = { ...point, t: last.t };
    else state.samples.push(point);
    while (state.samples.length && state.samples[0].t < now - CHART_WINDOW_MS) state.samples.shift();
    drawChart(now);
  }

  function drawChart(now) {
    const chart = $("chart");
    const width = 400;
    const height = 140;
    const pad = 6;
    const maxRooms = Math.max(1, ...state.samples.map((s) => s.rooms));
    const maxConnections = Math.max(1, ...state.samples.map((s) => s.connections));
    // The samples since the page opened, up to the last 10 minutes, across the width.
    const first = state.samples.length ? state.samples[0].t : now;
    const span = Math.min(CHART_WINDOW_MS, Math.max(CHART_MIN_SPAN_MS, now - first));
    const x = (t) => ((t - (now - span)) / span) * width;
    const y = (value, max) => height - pad - (value / (max * 1.15)) * (height - 2 * pad);
    const line = (points, key, max) => points
      .map((s) => x(s.t).toFixed(1) + "," + y(s[key], max).toFixed(1))
      .join(" ");
    const nodes = [];
    for (const fraction of [0.25, 0.5, 0.75]) {
      nodes.push(svg("line", { x1: 0, x2: width, y1: height * fraction, y2: height * fraction, class: "grid-line" }));
    }
    if (state.samples.length) {
      // the last value holds until now
      const points = state.samples.concat([{ ...state.samples[state.samples.length - 1], t: now }]);
      nodes.push(svg("polyline", { points: line(points, "connections", maxConnections), class: "connections" }));
      nodes.push(svg("polyline", { points: line(points, "rooms", maxRooms), class: "rooms" }));
    }
    chart.replaceChildren(...nodes);
    $("axis-start").textContent = "−" + age(span);
    $("axis-middle").textContent = "−" + age(span / 2);
    $("chart-rooms-max").textContent = "(max " + format(maxRooms) + ")";
    $("chart-connections-max").textContent = "(max " + format(maxConnections) + ")";
  }

  // --- admin actions ----------------------------------------------------------------

  async function onInstanceAction(event) {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    button.disabled = true;
    try {
      await api("POST", "/v1/instances/" + button.dataset.instance + "/" + button.dataset.action);
      button.textContent = button.dataset.action === "drain" ? "Draining…" : "Undraining…";
    } catch (error) {
      button.disabled = false;
      feedLine("refused", button.dataset.action + " " + nameOf(button.dataset.instance) + ": " + error.message);
    }
    scheduleRefresh();
  }

  function parseLabels(text) {
    const labels = {};
    for (const pair of text.split(/[\s,]+/).filter(Boolean)) {
      const at = pair.indexOf("=");
      if (at <= 0) throw new Error("labels are key=value pairs");
      labels[pair.slice(0, at)] = pair.slice(at + 1);
    }
    return labels;
  }

  async function onCreateRoom(event) {
    event.preventDefault();
    const message = $("create-message");
    message.className = "message";
    message.textContent = "";
    const body = { type: $("create-type").value };
    const roomId = $("create-id").value.trim();
    if (roomId) body.roomId = roomId;
    const button = $("create-room").querySelector("button");
    button.disabled = true;
    try {
      const labels = parseLabels($("create-labels").value);
      if (Object.keys(labels).length) body.placement = { labels: labels };
      const created = await api("POST", "/v1/rooms", body);
      const room = created.data;
      message.className = "message ok";
      message.textContent = "Created " + room.id + " on " + (nameOf(room.instanceId) || room.instanceId) + ".";
      $("create-id").value = "";
    } catch (error) {
      message.className = "message error";
      message.textContent = "Not created: " + error.message;
    } finally {
      button.disabled = false;
      scheduleRefresh();
    }
  }

  // --- start --------------------------------------------------------------------------

  async function start() {
    $("login").hidden = true;
    const session = state.session;
    const admin = session.scope === "admin";
    for (const node of document.querySelectorAll(".admin-only")) node.hidden = !admin;
    $("session").textContent = session.scope + " token" + (session.expiresAt
      ? " · until " + new Date(session.expiresAt).toTimeString().slice(0, 5) : "");
    $("sign-out").hidden = false;
    $("main").hidden = false;
    startLive();
    await refresh();
    window.clearInterval(state.pollTimer);
    window.clearInterval(state.tickTimer);
    state.pollTimer = window.setInterval(refresh, REFRESH_MS);
    state.tickTimer = window.setInterval(() => {
      tickAges();
      if (state.samples.length) drawChart(Date.now());
    }, 1000);
  }

  function init() {
    $("login-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", () => signOut(""));
    $("instances").addEventListener("click", onInstanceAction);
    $("create-room").addEventListener("submit", onCreateRoom);
    const session = loadSession();
    if (session) {
      state.session = session;
      start();
    } else {
      signOut("");
    }
  }

  document.addEventListener("DOMContentLoaded", init);
})();
