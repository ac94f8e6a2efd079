// The Outpost LAN page. Plain JavaScript, no build step, no third-party
// code: it reads the box's JSON APIs and plays its video endpoints. Text
// from the box is only ever put in the page with textContent.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = {
  session: null,       // {user, cameras, actions, expires} when signed in
  cameras: [],         // from /api/v1/cameras
  camera: "",          // selected camera id
  clockOffset: 0,      // box clock minus this browser's clock, ms
  spans: [],           // the selected camera's recorded spans
  range: { from: 0, to: 0 },
  thumbs: {},          // camera id -> src shown
};

function boxNow() { return new Date(Date.now() + state.clockOffset); }

class APIError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, opts = {}) {
  const res = await fetch(path, Object.assign({ credentials: "same-origin" }, opts));
  if (res.status === 204) return null;
  let body = null;
  try { body = await res.json(); } catch (e) { /* not JSON */ }
  if (res.status === 401 && state.session && path !== "/api/v1/session") sessionEnded();
  if (!res.ok) throw new APIError(res.status, (body && body.error) || res.statusText);
  return body;
}

// sessionEnded: the token expired (or the box forgot it): back to the
// sign-in form, and no more requests that would only be refused.
function sessionEnded() {
  state.session = null;
  state.cameras = [];
  resetViewer();
  loadSession().then(() => setError($("#signin-error"), "your session ended; sign in again"));
}

function show(el, on) { el.hidden = !on; }
function setError(el, err) {
  el.textContent = err ? String(err.message || err) : "";
  show(el, !!err);
}

function fmtBytes(n) {
  const u = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
  return n.toFixed(i ? 1 : 0) + " " + u[i];
}
function fmtDuration(s) {
  s = Math.round(s);
  if (s < 120) return s + " s";
  if (s < 7200) return Math.round(s / 60) + " min";
  if (s < 172800) return (s / 3600).toFixed(1) + " h";
  return (s / 86400).toFixed(1) + " days";
}
function fmtTime(d) { return d.toLocaleString(undefined, { hour12: false }); }

function badge(text, cls) {
  const b = document.createElement("span");
  b.className = "badge " + (cls || text);
  b.textContent = text;
  return b;
}

// ---- installer view ------------------------------------------------------

async function refreshStatus() {
  try {
    const s = await api("/api/v1/status");
    setError($("#status-error"), null);
    if (s.time) state.clockOffset = new Date(s.time).getTime() - Date.now();
    $("#clock").textContent = s.time ? fmtTime(new Date(s.time)) + " (box clock)" : "–";
    $("#firmware").textContent = s.version + " on " + s.board;
    const c = s.cloud;
    $("#device").textContent = c ? c.device_id : "";
    $("#claim").textContent = c ? (c.enrolled ? "claimed" : c.claim_code || "–") : "no fleet";
    const link = $("#link");
    link.replaceChildren();
    if (c) {
      link.append(badge(c.state, c.state === "online" ? "online" : c.state === "offline" ? "offline" : "connecting"));
      if (c.outbox_depth) link.append(" " + c.outbox_depth + " queued");
      if (c.last_error) link.append(" " + c.last_error);
    } else {
      link.textContent = "not configured";
    }
    const u = s.update;
    $("#update").textContent = !u || !u.phase ? "up to date (no update in progress)" :
      u.phase + (u.version ? " v" + u.version : "") + (u.reason ? ": " + u.reason : "");
    const dd = s.data_disk;
    $("#disk").textContent = dd && dd.total_bytes ?
      fmtBytes(dd.avail_bytes) + " free of " + fmtBytes(dd.total_bytes) : "–";
    const r = s.recording;
    $("#retention").textContent = !r ? "–" :
      (r.oldest ? fmtDuration(r.window_s) + " kept (since " + fmtTime(new Date(r.oldest)) + ")" : "nothing recorded yet") +
      ", " + fmtBytes(r.bytes) + " of recordings" +
      (r.budget_bytes ? ", budget " + fmtBytes(r.budget_bytes) : "") +
      (r.max_age_s ? ", at most " + fmtDuration(r.max_age_s) : "");
    renderCameras(s.cameras || []);
  } catch (e) {
    setError($("#status-error"), "status: " + e.message);
  }
}

function renderCameras(cams) {
  const tb = $("#cameras tbody");
  const rows = [];
  for (const c of cams) {
    const tr = document.createElement("tr");
    tr.dataset.camera = c.id;
    const cell = (v) => { const td = document.createElement("td"); td.append(v); tr.append(td); return td; };
    cell(c.id);
    cell(badge(c.state, c.state)).className = "state";
    cell(c.fps ? c.fps.toFixed(1) : "–");
    cell(c.bitrate_bps ? (c.bitrate_bps / 1e6).toFixed(2) + " Mbit/s" : "–");
    cell(c.last_key_frame ? fmtDuration((boxNow() - new Date(c.last_key_frame)) / 1000) + " ago" : "–");
    cell(String(c.reconnects || 0));
    const mine = state.session && state.cameras.some((x) => x.id === c.id);
    const old = mine && tb.querySelector(`tr[data-camera="${CSS.escape(c.id)}"] td.thumb`);
    const td = old || document.createElement("td");
    td.className = "thumb";
    if (!old) td.textContent = !state.session ? "sign in to see" : mine ? "…" : "not in your token";
    tr.append(td);
    rows.push(tr);
  }
  tb.replaceChildren(...rows);
}

// A thumbnail is the last recorded second of a camera, as a paused video:
// the browser shows its first (key) frame.
async function refreshThumbnails() {
  for (const c of state.cameras) {
    const td = document.querySelector(`#cameras tr[data-camera="${CSS.escape(c.id)}"] td.thumb`);
    if (!td) continue;
    if (!c.can_playback) { td.textContent = "not viewable here"; continue; }
    try {
      const to = boxNow(), from = new Date(to - 3600e3);
      const r = await api(`/api/v1/recordings?camera=${encodeURIComponent(c.id)}&start=${from.toISOString()}&end=${to.toISOString()}`);
      const last = r.spans[r.spans.length - 1];
      if (!last) { td.textContent = "nothing recorded yet"; continue; }
      const at = new Date(new Date(last.end) - 2000);
      const src = playbackURL(c.id, at, 1);
      if (state.thumbs[c.id] === src && td.querySelector("video")) continue;
      state.thumbs[c.id] = src;
      const v = document.createElement("video");
      v.className = "thumb";
      v.muted = true;
      v.preload = "auto";
      v.src = src;
      v.title = "recorded " + fmtTime(at);
      td.replaceChildren(v);
    } catch (e) {
      td.textContent = e.status === 403 ? "not viewable here" : "–";
    }
  }
}

// ---- session ---------------------------------------------------------------

async function loadSession() {
  try {
    state.session = await api("/api/v1/session");
  } catch (e) {
    state.session = null;
  }
  const signed = !!state.session;
  show($("#signin"), !signed);
  show($("#viewer"), signed);
  show($("#signout"), signed);
  $("#who").textContent = signed ? "signed in as " + state.session.user : "";
  show($("#update-offer"), signed && (state.session.actions || []).includes("admin"));
  if (!signed) { $("#offer-form").reset(); show($("#offer-result"), false); }
  if (signed) await loadCameras();
}

async function signIn(ev) {
  ev.preventDefault();
  const body = new URLSearchParams({ token: $("#token").value.trim() });
  try {
    await api("/api/v1/session", { method: "POST", body });
    $("#token").value = "";
    setError($("#signin-error"), null);
    await loadSession();
    refreshThumbnails();
  } catch (e) {
    setError($("#signin-error"), e.status === 429 ? "too many failed attempts; try again later" : e.message);
  }
}

async function signOut() {
  await api("/api/v1/session", { method: "DELETE" }).catch(() => {});
  state.session = null;
  state.cameras = [];
  state.thumbs = {};
  resetViewer();
  await loadSession();
  renderCameras([]);
  refreshStatus();
}

// ---- viewer ----------------------------------------------------------------

async function loadCameras() {
  try {
    const r = await api("/api/v1/cameras");
    state.cameras = r.cameras;
  } catch (e) {
    setError($("#viewer-error"), e);
    return;
  }
  const sel = $("#camera");
  sel.replaceChildren(...state.cameras.map((c) => {
    const o = document.createElement("option");
    o.value = c.id;
    o.textContent = c.id + (c.can_live || c.can_playback ? "" : " (not viewable from here)");
    return o;
  }));
  if (!state.cameras.some((c) => c.id === state.camera)) state.camera = state.cameras.length ? state.cameras[0].id : "";
  sel.value = state.camera;
  selectCamera();
}

function current() { return state.cameras.find((c) => c.id === state.camera); }

// resetViewer clears what the last camera (or the last viewer) left on
// the page.
function resetViewer() {
  stopLive();
  const rec = $("#recorded");
  rec.removeAttribute("src");
  rec.load();
  $("#live-state").textContent = "";
  $("#rec-state").textContent = "";
  $("#timeline").replaceChildren();
  $("#ticks").replaceChildren();
  $("#timeline-info").textContent = "";
  show($("#clip-form"), false);
  state.spans = [];
}

function selectCamera() {
  resetViewer();
  state.camera = $("#camera").value;
  setError($("#viewer-error"), null);
  const c = current();
  if (!c) {
    $("#live-state").textContent = "— this token names no camera of this box";
    return;
  }
  startLive();
  loadTimeline();
  show($("#clip-form"), !!c.can_export);
}

// Live video is HLS: native in the browser where it plays HLS (Safari,
// Chromium), otherwise fMP4 segments fed to Media Source Extensions.
let liveRetry = null;
let mse = null;
function startLive() {
  stopLive();
  const c = current();
  const v = $("#live");
  if (!c) return;
  if (!c.can_live) {
    $("#live-state").textContent = "— live video of this camera is not allowed from here";
    return;
  }
  const url = `/api/v1/live/${encodeURIComponent(c.id)}/index.m3u8`;
  $("#live-state").textContent = "— connecting…";
  const forceMSE = new URLSearchParams(location.search).get("player") === "mse";
  if (v.canPlayType("application/vnd.apple.mpegurl") && !forceMSE) {
    v.src = url;
    v.play().catch(() => {});
  } else if (window.MediaSource) {
    mse = new MSEPlayer(v, url, (msg) => { $("#live-state").textContent = "— " + msg; });
    mse.start();
  } else {
    $("#live-state").textContent = "— this browser plays neither HLS nor MSE; use rtsp://" + location.hostname + ":8554/" + c.id;
  }
}
function stopLive() {
  clearTimeout(liveRetry);
  if (mse) { mse.stop(); mse = null; }
  const v = $("#live");
  v.removeAttribute("src");
  v.load();
}

function liveEvents() {
  const v = $("#live");
  v.addEventListener("playing", () => { $("#live-state").textContent = "— playing"; });
  v.addEventListener("error", async () => {
    const src = v.getAttribute("src");
    if (!src || mse) return;
    // Why? 503 while the box starts muxing the camera or the camera is
    // away: try again shortly. 401/403: stop asking.
    const status = await fetch(src, { credentials: "same-origin" }).then((r) => r.status).catch(() => 0);
    if (status === 401) { sessionEnded(); return; }
    if (status === 403) { $("#live-state").textContent = "— live video of this camera is not allowed from here"; return; }
    $("#live-state").textContent = "— waiting for the camera…";
    clearTimeout(liveRetry);
    liveRetry = setTimeout(startLive, 2000);
  });
}

// MSEPlayer plays the box's fMP4 HLS stream in browsers without native
// HLS: it follows the media playlist and appends the init section and each
// new segment to a SourceBuffer.
class MSEPlayer {
  constructor(video, url, report) {
    this.video = video; this.url = url; this.report = report;
    this.seen = new Set(); this.stopped = false; this.queue = Promise.resolve();
  }
  start() {
    this.ms = new MediaSource();
    this.video.src = URL.createObjectURL(this.ms);
    this.ms.addEventListener("sourceopen", () => this.loop(), { once: true });
  }
  stop() { this.stopped = true; }
  async text(u) {
    const r = await fetch(u, { credentials: "same-origin" });
    if (!r.ok) throw new APIError(r.status, r.statusText);
    return r.text();
  }
  async bytes(u) {
    const r = await fetch(u, { credentials: "same-origin" });
    if (!r.ok) throw new APIError(r.status, r.statusText);
    return r.arrayBuffer();
  }
  append(buf) {
    return new Promise((resolve, reject) => {
      this.sb.addEventListener("updateend", resolve, { once: true });
      this.sb.addEventListener("error", reject, { once: true });
      this.sb.appendBuffer(buf);
    });
  }
  async loop() {
    const base = new URL(this.url, location.href);
    while (!this.stopped) {
      try {
        const master = await this.text(base);
        const mline = master.split("\n").find((l) => l && !l.startsWith("#"));
        // Audio is a rendition of its own (#EXT-X-MEDIA): this player
        // follows the video playlist only, so it takes the video codec.
        const all = ((master.match(/CODECS="([^"]+)"/) || [])[1] || "avc1.42E01E").split(",");
        const codecs = all.filter((c) => /^(avc1|avc3|hvc1|hev1)/.test(c.trim())).join(",") || all.join(",");
        const media = new URL(mline, base);
        if (!this.sb) {
          this.sb = this.ms.addSourceBuffer(`video/mp4; codecs="${codecs}"`);
        }
        for (;;) {
          if (this.stopped) return;
          const pl = await this.text(media);
          const lines = pl.split("\n");
          const map = pl.match(/#EXT-X-MAP:URI="([^"]+)"/);
          if (map && !this.seen.has("init:" + map[1])) {
            this.seen.add("init:" + map[1]);
            await this.append(await this.bytes(new URL(map[1], media)));
          }
          const segs = lines.filter((l) => l && !l.startsWith("#"));
          // Start near the live edge: the last two segments.
          if (this.seen.size <= 1) segs.slice(0, Math.max(0, segs.length - 2)).forEach((s) => this.seen.add(s));
          for (const s of segs) {
            if (this.seen.has(s)) continue;
            this.seen.add(s);
            await this.append(await this.bytes(new URL(s, media)));
            // A live stream's timestamps do not start at 0: jump to what
            // is buffered, and back to the live edge after a stall.
            const b = this.video.buffered;
            if (b.length && (this.video.currentTime < b.start(0) || b.end(b.length - 1) - this.video.currentTime > 10)) {
              this.video.currentTime = Math.max(b.start(0), b.end(b.length - 1) - 3);
            }
            if (this.video.paused) this.video.play().catch(() => {});
          }
          await new Promise((r) => setTimeout(r, 1000));
        }
      } catch (e) {
        if (e.status === 401) { this.stopped = true; sessionEnded(); return; }
        if (e.status === 403) { this.stopped = true; this.report("live video of this camera is not allowed from here"); return; }
        this.report("waiting for the camera…");
        await new Promise((r) => setTimeout(r, 2000));
      }
    }
  }
}

function playbackURL(camera, start, seconds) {
  return `/api/v1/recordings/video?camera=${encodeURIComponent(camera)}&start=${start.toISOString()}&duration=${seconds.toFixed(3)}`;
}

async function loadTimeline() {
  const c = current();
  const tl = $("#timeline");
  tl.replaceChildren();
  $("#ticks").replaceChildren();
  state.spans = [];
  if (!c) return;
  const secs = Number($("#range").value);
  const to = boxNow(), from = new Date(to - secs * 1000);
  state.range = { from: from.getTime(), to: to.getTime() };
  if (!c.can_playback) {
    $("#timeline-info").textContent = "recordings of this camera are not viewable from here";
    return;
  }
  try {
    const r = await api(`/api/v1/recordings?camera=${encodeURIComponent(c.id)}&start=${from.toISOString()}&end=${to.toISOString()}`);
    state.spans = r.spans.map((s) => ({ start: new Date(s.start).getTime(), end: new Date(s.end).getTime() }));
  } catch (e) {
    setError($("#viewer-error"), e);
    return;
  }
  const span = state.range.to - state.range.from;
  let recorded = 0;
  for (const s of state.spans) {
    const a = Math.max(s.start, state.range.from), b = Math.min(s.end, state.range.to);
    if (b <= a) continue;
    recorded += b - a;
    const d = document.createElement("div");
    d.className = "span";
    d.style.left = ((a - state.range.from) / span * 100) + "%";
    d.style.width = ((b - a) / span * 100) + "%";
    d.title = fmtTime(new Date(s.start)) + " – " + fmtTime(new Date(s.end));
    tl.append(d);
  }
  const cur = document.createElement("div");
  cur.className = "cursor";
  cur.hidden = true;
  tl.append(cur);
  for (let i = 0; i <= 4; i++) {
    const t = document.createElement("span");
    t.style.left = (i * 25) + "%";
    t.textContent = new Date(state.range.from + span * i / 4).toLocaleTimeString(undefined, { hour12: false });
    $("#ticks").append(t);
  }
  $("#timeline-info").textContent = state.spans.length ?
    `${state.spans.length} span(s), ${fmtDuration(recorded / 1000)} recorded; gaps are hatched. Click to play from a point.` :
    "nothing recorded in this window";
}

// playFrom plays the recording from t (ms, box clock): from t if it falls in
// a span, else from the start of the next span.
function playFrom(t) {
  const c = current();
  const s = state.spans.find((s) => t < s.end);
  if (!c || !s) return;
  t = Math.max(t, s.start);
  const dur = Math.min((s.end - t) / 1000, 600);
  if (dur < 0.5) return;
  const v = $("#recorded");
  v.src = playbackURL(c.id, new Date(t), dur);
  v.play().catch(() => {});
  $("#rec-state").textContent = "— from " + fmtTime(new Date(t));
  const cur = $("#timeline .cursor");
  if (cur) {
    cur.hidden = false;
    cur.style.left = ((t - state.range.from) / (state.range.to - state.range.from) * 100) + "%";
  }
  $("#timeline").setAttribute("aria-valuenow", String(Math.round((t - state.range.from) / (state.range.to - state.range.from) * 100)));
  const local = new Date(t - new Date(t).getTimezoneOffset() * 60000).toISOString().slice(0, 19);
  $("#clip-start").value = local;
}

function timelineClick(ev) {
  const r = $("#timeline").getBoundingClientRect();
  const frac = Math.min(Math.max((ev.clientX - r.left) / r.width, 0), 1);
  playFrom(state.range.from + frac * (state.range.to - state.range.from));
}

function downloadClip(ev) {
  ev.preventDefault();
  const c = current();
  const start = new Date($("#clip-start").value);
  const dur = Number($("#clip-duration").value);
  if (!c || isNaN(start) || !(dur > 0)) return;
  const a = document.createElement("a");
  a.href = `/api/v1/recordings/clip?camera=${encodeURIComponent(c.id)}&start=${start.toISOString()}&duration=${dur}`;
  a.download = "";
  document.body.append(a);
  a.click();
  a.remove();
}

// ---- update from files (admin) ---------------------------------------------

// offerUpdate sends the signed keys document and manifest to the box
// (POST /api/v1/update); the box verifies them before it fetches anything
// and answers at once; progress then shows under "Update".
async function offerUpdate(ev) {
  ev.preventDefault();
  const body = new FormData();
  body.append("keys", $("#offer-keys").files[0]);
  body.append("manifest", $("#offer-manifest").files[0]);
  const out = $("#offer-result");
  try {
    const r = await api("/api/v1/update", { method: "POST", body });
    out.className = "";
    out.textContent = "accepted: installing v" + r.version + " (progress under Update above)";
  } catch (e) {
    out.className = "error";
    out.textContent = e.message;
  }
  show(out, true);
  refreshStatus();
}

// ---- start -----------------------------------------------------------------

document.addEventListener("DOMContentLoaded", async () => {
  $("#signin-form").addEventListener("submit", signIn);
  $("#signout").addEventListener("click", signOut);
  $("#camera").addEventListener("change", selectCamera);
  $("#range").addEventListener("change", loadTimeline);
  $("#timeline").addEventListener("click", timelineClick);
  $("#clip-form").addEventListener("submit", downloadClip);
  $("#offer-form").addEventListener("submit", offerUpdate);
  $("#recorded").addEventListener("error", () => { $("#rec-state").textContent = "— could not play that point"; });
  liveEvents();
  await refreshStatus();
  await loadSession();
  refreshThumbnails();
  setInterval(refreshStatus, 2000);
  setInterval(() => { if (state.session) refreshThumbnails(); }, 30000);
  setInterval(() => { if (state.session) loadTimeline(); }, 60000);
});
