// tapedeck web UI: streams overview (#/) and stream view (#/stream/<name>).
// Plain ES modules, no build step; talks only to tapedeck's own /api/v1.

import { Timeline, fmtClock, fmtDateTime } from './timeline.js';

const API = '/api/v1';
const ZOOMS = [
  { label: '10 min', ms: 600e3 },
  { label: '1 h', ms: 3600e3 },
  { label: '6 h', ms: 6 * 3600e3 },
  { label: '24 h', ms: 24 * 3600e3 },
  { label: '7 d', ms: 7 * 86400e3 },
];
const OVERVIEW_REFRESH_MS = 3000;
const THUMB_REFRESH_MS = 5000;
const BITRATE_REFRESH_MS = 15000;
const STREAM_REFRESH_MS = 3000;
const HLS_TYPE = 'application/vnd.apple.mpegurl';
// `?player=hlsjs` in the page URL uses hls.js even where the browser plays HLS itself (tests).
const FORCE_HLSJS = new URLSearchParams(location.search).get('player') === 'hlsjs';

/// Loads the hls.js bundled into the server at build time (npm, never a CDN), once.
let hlsJsLoading = null;
function loadHlsJs() {
  if (!hlsJsLoading) {
    hlsJsLoading = new Promise((resolve) => {
      const s = document.createElement('script');
      s.src = '/ui/vendor/hls.min.js';
      s.onload = () => resolve(window.Hls && window.Hls.isSupported() ? window.Hls : null);
      s.onerror = () => resolve(null);
      document.head.append(s);
    });
  }
  return hlsJsLoading;
}

// ---------- small helpers ----------

const $ = (sel, root = document) => root.querySelector(sel);

function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else if (v === true) e.setAttribute(k, '');
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// ---------- auth: an API key (asked for on the first 401) and playback tokens ----------

const KEY_STORAGE = 'tapedeck.key';
let apiKey = localStorage.getItem(KEY_STORAGE) || '';
// Playback tokens per stream (for <video>, <img> and download links, which cannot send a key).
const tokens = new Map();

function askForKey(message) {
  const k = window.prompt(message || 'This tapedeck needs an API key (viewer or admin):', '');
  if (k === null) return false;
  apiKey = k.trim();
  localStorage.setItem(KEY_STORAGE, apiKey);
  tokens.clear();
  return apiKey !== '';
}

async function api(path, { method = 'GET', body } = {}, retried = false) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  if (apiKey) init.headers.authorization = `Bearer ${apiKey}`;
  const r = await fetch(API + path, init);
  if (r.status === 401 && !retried && askForKey(apiKey ? 'That key was refused; API key:' : undefined)) {
    return api(path, { method, body }, true);
  }
  if (r.status === 204) return null;
  const text = await r.text();
  let v = null;
  try {
    v = text ? JSON.parse(text) : null;
  } catch {
    v = null;
  }
  if (!r.ok) {
    const e = v && v.error;
    throw new ApiError(r.status, e ? e.code : 'HTTP', e ? e.message : `${r.status} ${r.statusText}`);
  }
  return v;
}

/// With a key in use, makes sure a playback token for the stream is at hand (12 h tokens,
/// renewed an hour before they expire).
async function ensureToken(name) {
  if (!apiKey) return;
  const t = tokens.get(name);
  if (t && t.expiresMs - Date.now() > 3600e3) return;
  try {
    const v = await api(`${streamPath(name)}/playback-tokens`, { method: 'POST', body: {} });
    tokens.set(name, { token: v.token, expiresMs: Date.parse(v.expires) });
  } catch {
    tokens.delete(name);
  }
}

/// A media URL of a stream with its playback token, when one is in use.
function withToken(name, url) {
  const t = tokens.get(name);
  if (!t) return url;
  return `${url}${url.includes('?') ? '&' : '?'}token=${encodeURIComponent(t.token)}`;
}

const enc = encodeURIComponent;
const streamPath = (name) => `/streams/${enc(name)}`;
const streamUrl = (name, rest = '') => `${API}${streamPath(name)}${rest}`;

function fmtBytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = n;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v >= 100 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}

function fmtBitrate(bps) {
  if (!Number.isFinite(bps) || bps <= 0) return '—';
  if (bps >= 1e6) return `${(bps / 1e6).toFixed(2)} Mbit/s`;
  return `${Math.round(bps / 1e3)} kbit/s`;
}

function fmtDuration(ms) {
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  const hrs = Math.floor(s / 3600);
  return `${hrs} h ${Math.floor((s % 3600) / 60)} min`;
}

function fmtRetention(s) {
  if (s.retention_hours === 0) return 'live only';
  const hrs = s.retention_hours;
  const t = hrs % 24 === 0 && hrs >= 48 ? `${hrs / 24} days` : `${hrs} h`;
  return s.retention_bytes ? `${t}, max ${fmtBytes(s.retention_bytes)}` : t;
}

function parseTags(text) {
  const tags = {};
  for (const part of text.split(/[\n,]/)) {
    const p = part.trim();
    if (!p) continue;
    const i = p.indexOf('=');
    if (i <= 0) throw new Error(`tag "${p}" should look like key=value`);
    tags[p.slice(0, i).trim()] = p.slice(i + 1).trim();
  }
  return tags;
}

const tagsText = (tags) => Object.entries(tags || {}).map(([k, v]) => `${k}=${v}`).join(', ');

function producerCommand(name) {
  return (
    'ffmpeg -re -i input.mp4 -c copy -f mp4 ' +
    '-movflags frag_keyframe+empty_moov+default_base_moof ' +
    `-method PUT ${location.origin}${streamUrl(name, '/ingest')}`
  );
}

let toastTimer = null;
function toast(msg, kind = 'info') {
  const t = $('#toast');
  t.textContent = msg;
  t.dataset.kind = kind;
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (t.hidden = true), kind === 'error' ? 8000 : 3000);
}

async function copyText(text) {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
    } else {
      const ta = h('textarea', { class: 'offscreen', readonly: true });
      ta.value = text;
      document.body.append(ta);
      ta.select();
      document.execCommand('copy');
      ta.remove();
    }
    toast('Copied');
  } catch {
    toast('Could not copy; select the text and copy it by hand', 'error');
  }
}

function badge(s) {
  const live = s.status === 'live';
  return h('span', { class: `badge ${s.status}`, dataset: { status: s.status } }, live ? 'Live' : s.status === 'idle' ? 'Idle' : 'Empty');
}

// Toggles an element's [hidden] by a condition.
const show = (e, on) => (e.hidden = !on);

// ---------- router ----------

let current = null; // the view on screen: { destroy() }

function route() {
  if (current) current.destroy();
  current = null;
  const main = $('#main');
  main.replaceChildren();
  const m = location.hash.match(/^#\/stream\/([^/?]+)/);
  if (m) current = new StreamView(main, decodeURIComponent(m[1]));
  else current = new Overview(main);
}

window.addEventListener('hashchange', route);

// ---------- overview ----------

class Overview {
  constructor(main) {
    this.cards = new Map(); // name -> {node, parts, stream, thumbAt, rateAt}
    this.timers = [];
    this.filter = '';
    document.title = 'tapedeck';
    $('#crumbs').replaceChildren();
    this.search = h('input', {
      type: 'search', id: 'search', placeholder: 'Filter by name', 'aria-label': 'Filter streams by name',
      oninput: () => {
        this.filter = this.search.value.trim().toLowerCase();
        this.applyFilter();
      },
    });
    this.grid = h('div', { class: 'grid', id: 'grid' });
    this.empty = h('p', { class: 'muted empty', hidden: true });
    main.append(
      h('div', { class: 'toolbar' },
        h('h1', {}, 'Streams'),
        h('div', { class: 'toolbar-actions' },
          this.search,
          h('button', { type: 'button', class: 'primary', id: 'new-stream', onclick: () => this.openCreate() }, 'New stream'))),
      this.grid,
      this.empty,
    );
    this.refresh();
    this.timers.push(setInterval(() => this.refresh(), OVERVIEW_REFRESH_MS));
  }

  destroy() {
    this.timers.forEach(clearInterval);
    this.destroyed = true;
  }

  async refresh() {
    let streams = [];
    try {
      let after = null;
      for (let page = 0; page < 20; page++) {
        const q = after ? `?limit=1000&after=${enc(after)}` : '?limit=1000';
        const r = await api(`/streams${q}`);
        streams = streams.concat(r.streams);
        if (!r.next) break;
        after = r.next;
      }
    } catch (e) {
      if (!this.destroyed) this.showEmpty(`Cannot reach the server: ${e.message}`);
      return;
    }
    if (this.destroyed) return;
    // With a key in use, thumbnails need each stream's playback token.
    await Promise.all(streams.map((s) => ensureToken(s.name)));
    const seen = new Set();
    for (const s of streams) {
      seen.add(s.name);
      let c = this.cards.get(s.name);
      if (!c) {
        c = this.makeCard(s);
        this.cards.set(s.name, c);
      }
      this.updateCard(c, s);
    }
    for (const [name, c] of this.cards) {
      if (!seen.has(name)) {
        c.node.remove();
        this.cards.delete(name);
      }
    }
    // Keep the grid in name order.
    const order = [...this.cards.keys()].sort();
    order.forEach((n) => this.grid.append(this.cards.get(n).node));
    this.applyFilter();
  }

  showEmpty(text) {
    this.empty.textContent = text;
    this.empty.hidden = false;
  }

  applyFilter() {
    let visible = 0;
    for (const [name, c] of this.cards) {
      const on = !this.filter || name.toLowerCase().includes(this.filter);
      c.node.hidden = !on;
      if (on) visible++;
    }
    if (this.cards.size === 0) this.showEmpty('No streams yet. Create one, or just start sending video: ingest creates the stream.');
    else if (visible === 0) this.showEmpty(`No stream matches "${this.search.value}".`);
    else this.empty.hidden = true;
  }

  makeCard(s) {
    const p = {};
    p.img = h('img', { class: 'thumb-img', alt: `Latest frame of ${s.name}`, width: 320, height: 180, hidden: true });
    p.placeholder = h('div', { class: 'thumb-placeholder' }, 'No picture yet');
    p.img.addEventListener('load', () => {
      show(p.img, true);
      show(p.placeholder, false);
    });
    p.img.addEventListener('error', () => {
      show(p.img, false);
      show(p.placeholder, true);
    });
    p.badge = h('span');
    p.codecs = h('dd', { class: 'codecs' });
    p.bitrate = h('dd', { class: 'bitrate' });
    p.bytes = h('dd', { class: 'bytes' });
    p.retention = h('dd', { class: 'retention' });
    p.last = h('dd', { class: 'last' });
    const cmd = producerCommand(s.name);
    p.cmd = h('code', { class: 'cmd' }, cmd);
    const link = `#/stream/${enc(s.name)}`;
    const node = h('article', { class: 'card', dataset: { stream: s.name } },
      h('a', { class: 'thumb', href: link, tabindex: '-1', 'aria-hidden': 'true' }, p.img, p.placeholder),
      h('div', { class: 'card-body' },
        h('div', { class: 'card-title' }, h('a', { href: link, class: 'name' }, s.name), p.badge),
        h('dl', { class: 'facts' },
          h('dt', {}, 'Codecs'), p.codecs,
          h('dt', {}, 'Bitrate'), p.bitrate,
          h('dt', {}, 'Stored'), p.bytes,
          h('dt', {}, 'Retention'), p.retention,
          h('dt', {}, 'Latest'), p.last),
        h('details', { class: 'producer' },
          h('summary', {}, 'Producer command'),
          p.cmd,
          h('button', { type: 'button', class: 'small copy-cmd', onclick: () => copyText(cmd) }, 'Copy'))));
    return { node, p, stream: s, thumbAt: 0, rateAt: 0 };
  }

  updateCard(c, s) {
    const p = c.p;
    const prev = c.stream;
    c.stream = s;
    p.badge.replaceWith((p.badge = badge(s)));
    c.node.dataset.status = s.status;
    const codecs = s.codecs || '—';
    p.codecs.textContent = s.resolution ? `${codecs} · ${s.resolution}` : codecs;
    p.bytes.textContent = `${fmtBytes(s.bytes)} in ${s.fragment_count} fragment${s.fragment_count === 1 ? "" : "s"}`;
    p.retention.textContent = fmtRetention(s);
    p.last.textContent = s.last_time ? fmtDateTime(Date.parse(s.last_time)) : 'nothing recorded';
    const now = Date.now();
    // Thumbnail: only when there is media (latest.jpg is a 404 otherwise); refresh while live.
    const changed = !prev || prev.last_fragment !== s.last_fragment;
    if (s.fragment_count > 0 && (c.thumbAt === 0 || (changed && now - c.thumbAt >= THUMB_REFRESH_MS))) {
      c.thumbAt = now;
      const url = withToken(s.name, `${streamUrl(s.name, '/latest.jpg')}?width=320&v=${s.last_fragment}`);
      // Load off-screen first so the card never flashes empty.
      const img = new Image();
      img.onload = () => {
        p.img.src = url;
      };
      img.onerror = () => {
        show(p.img, false);
        show(p.placeholder, true);
      };
      img.src = url;
    } else if (s.fragment_count === 0) {
      show(p.img, false);
      show(p.placeholder, true);
    }
    if (s.fragment_count > 0 && (c.rateAt === 0 || now - c.rateAt >= BITRATE_REFRESH_MS)) {
      c.rateAt = now;
      this.updateBitrate(c);
    } else if (s.fragment_count === 0) {
      p.bitrate.textContent = '—';
    }
  }

  // Average bitrate of what was recorded in the last hour (bytes over recorded time from the
  // timeline API), or over everything stored when the last hour has nothing.
  async updateBitrate(c) {
    const name = c.stream.name;
    try {
      const now = Date.now();
      let t = await api(`${streamPath(name)}/timeline?start=${now - 3600e3}&end=${now}`);
      let label = 'last hour';
      if (!t.recorded_us) {
        t = await api(`${streamPath(name)}/timeline`);
        label = 'all stored';
      }
      const bps = t.recorded_us ? (t.bytes * 8) / (t.recorded_us / 1e6) : NaN;
      c.p.bitrate.textContent = Number.isFinite(bps) ? `${fmtBitrate(bps)} avg (${label})` : '—';
    } catch {
      c.p.bitrate.textContent = '—';
    }
  }

  openCreate() {
    const err = h('p', { class: 'error', role: 'alert', hidden: true });
    const name = h('input', { name: 'name', id: 'create-name', required: true, pattern: '[A-Za-z0-9_.\\-]{1,256}', autocomplete: 'off', placeholder: 'frontdoor' });
    const hours = h('input', { name: 'retention_hours', id: 'create-retention', type: 'number', min: '0', step: '1', placeholder: 'server default' });
    const tags = h('input', { name: 'tags', id: 'create-tags', placeholder: 'site=home, floor=1', autocomplete: 'off' });
    const dlg = h('dialog', { class: 'dialog', id: 'create-dialog', 'aria-labelledby': 'create-title' });
    const form = h('form', { method: 'dialog' },
      h('h2', { id: 'create-title' }, 'New stream'),
      h('label', { for: 'create-name' }, 'Name'), name,
      h('p', { class: 'hint' }, 'Letters, digits, "_", "." and "-".'),
      h('label', { for: 'create-retention' }, 'Retention (hours)'), hours,
      h('p', { class: 'hint' }, '0 keeps only the last few minutes (live only).'),
      h('label', { for: 'create-tags' }, 'Tags'), tags,
      err,
      h('div', { class: 'dialog-actions' },
        h('button', { type: 'button', onclick: () => dlg.close() }, 'Cancel'),
        h('button', { type: 'submit', class: 'primary', id: 'create-submit' }, 'Create')));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      err.hidden = true;
      const body = { name: name.value.trim() };
      try {
        if (hours.value !== '') body.retention_hours = Number(hours.value);
        const t = parseTags(tags.value);
        if (Object.keys(t).length) body.tags = t;
        await api('/streams', { method: 'POST', body });
      } catch (ex) {
        err.textContent = ex.message;
        err.hidden = false;
        return;
      }
      dlg.close();
      toast(`Created ${body.name}`);
      this.refresh();
    });
    dlg.append(form);
    dlg.addEventListener('close', () => dlg.remove());
    document.body.append(dlg);
    dlg.showModal();
    name.focus();
  }
}

// ---------- playlists: media time → wall clock ----------

// Parses a media playlist into segments: {n (first fragment), pdt (ms), dur (s), start (s on
// the playlist's own timeline, summed EXTINF)}.
function parsePlaylist(text) {
  const segs = [];
  let pdt = null;
  let dur = null;
  let t = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('#EXT-X-PROGRAM-DATE-TIME:')) pdt = Date.parse(line.slice(25).trim());
    else if (line.startsWith('#EXTINF:')) dur = parseFloat(line.slice(8));
    else if (line && !line.startsWith('#') && dur !== null) {
      const m = line.match(/segments\/(\d+)\.m4s/);
      segs.push({ n: m ? Number(m[1]) : null, pdt, dur, start: t });
      t += dur;
      if (pdt !== null) pdt += dur * 1000;
      dur = null;
    }
  }
  return { segs, ended: text.includes('#EXT-X-ENDLIST') };
}

// ---------- stream view ----------

class StreamView {
  constructor(main, name) {
    this.name = name;
    this.timers = [];
    this.stream = null;
    this.zoom = ZOOMS[1];
    this.follow = true; // the timeline window ends at now
    this.windowEnd = Date.now();
    this.mode = null; // 'live' | 'archive' | null
    this.liveSegs = new Map(); // fragment number -> {pdt, dur}
    this.newestFetched = null; // newest segment number the player fetched
    this.archive = null; // {segs, from, to}
    this.selection = null;
    document.title = `${name} · tapedeck`;
    $('#crumbs').replaceChildren(h('span', { class: 'sep' }, '/'), h('span', {}, name));
    this.build(main);
    this.load();
  }

  destroy() {
    this.destroyed = true;
    this.timers.forEach(clearInterval);
    if (this.observer) this.observer.disconnect();
    this.timeline.destroy();
    if (this.hls) this.hls.destroy();
    this.video.removeAttribute('src');
    this.video.load();
  }

  build(main) {
    const n = this.name;
    this.video = h('video', { id: 'player', muted: true, autoplay: true, playsinline: true, controls: true });
    this.video.muted = true;
    this.modeLabel = h('span', { class: 'mode', id: 'mode' });
    this.position = h('span', { class: 'position', id: 'position' }, '—');
    this.delay = h('span', { class: 'delay', id: 'delay' });
    this.playerMsg = h('p', { class: 'player-msg', id: 'player-msg', hidden: true });
    this.liveBtn = h('button', { type: 'button', id: 'go-live', onclick: () => this.playLive() }, 'Go live');
    this.badgeSlot = h('span');
    this.zoomBtns = ZOOMS.map((z) =>
      h('button', { type: 'button', class: 'zoom', 'aria-pressed': String(z === this.zoom), dataset: { zoom: z.label }, onclick: () => this.setZoom(z) }, z.label));
    const tlRoot = h('div', { id: 'timeline' });
    this.timeline = new Timeline(tlRoot, {
      onPlay: (ms) => this.playArchiveAt(ms),
      onSelect: (a, b) => this.select(a, b),
      frameUrl: (ms) => withToken(n, `${streamUrl(n, '/frame.jpg')}?at=${ms}&width=160`),
    });
    this.windowLabel = h('span', { class: 'window-label muted' });

    // Clip panel.
    this.clipStart = h('input', { type: 'datetime-local', step: '1', id: 'clip-start', onchange: () => this.selectFromInputs() });
    this.clipEnd = h('input', { type: 'datetime-local', step: '1', id: 'clip-end', onchange: () => this.selectFromInputs() });
    this.clipInfo = h('p', { class: 'muted', id: 'clip-info' }, 'Drag on the timeline or enter a start and end.');
    this.clipLink = h('a', { class: 'button primary disabled', id: 'clip-download', 'aria-disabled': 'true' }, 'Download clip');
    this.clipCopy = h('button', { type: 'button', id: 'clip-copy', disabled: true, onclick: () => copyText(new URL(this.clipLink.href, location.href).href) }, 'Copy link');
    this.holdReason = h('input', { id: 'hold-reason', placeholder: 'Reason (optional)', autocomplete: 'off', 'aria-label': 'Hold reason' });
    this.holdBtn = h('button', { type: 'button', id: 'hold-add', disabled: true, onclick: () => this.addHold() }, 'Hold this range');
    this.holdList = h('ul', { class: 'holds', id: 'holds' });

    // Settings panel.
    this.setHours = h('input', { type: 'number', min: '0', step: '1', id: 'set-hours' });
    this.setBytes = h('input', { type: 'number', min: '0', step: '1', id: 'set-bytes', placeholder: 'no quota' });
    this.setTags = h('input', { id: 'set-tags', autocomplete: 'off', placeholder: 'key=value, key=value' });
    this.setErr = h('p', { class: 'error', role: 'alert', hidden: true });

    main.append(
      h('div', { class: 'stream-head' },
        h('a', { href: '#/', class: 'back' }, '← All streams'),
        h('h1', {}, n), this.badgeSlot,
        h('span', { class: 'grow' }),
        this.liveBtn),
      h('section', { class: 'player-wrap', 'aria-label': 'Player' },
        h('div', { class: 'video-box' }, this.video, this.playerMsg),
        h('div', { class: 'player-bar' }, this.modeLabel, this.position, this.delay)),
      h('section', { class: 'timeline-wrap', 'aria-label': 'Timeline' },
        h('div', { class: 'timeline-bar' },
          h('div', { class: 'seg', role: 'group', 'aria-label': 'Zoom' }, this.zoomBtns),
          h('div', { class: 'seg', role: 'group', 'aria-label': 'Move' },
            h('button', { type: 'button', id: 'tl-earlier', 'aria-label': 'Earlier', onclick: () => this.pan(-0.5) }, '‹'),
            h('button', { type: 'button', id: 'tl-now', onclick: () => this.pan(0) }, 'Now'),
            h('button', { type: 'button', id: 'tl-later', 'aria-label': 'Later', onclick: () => this.pan(0.5) }, '›')),
          this.windowLabel),
        tlRoot),
      h('div', { class: 'panels' },
        h('section', { class: 'panel', 'aria-labelledby': 'clip-title' },
          h('h2', { id: 'clip-title' }, 'Clip'),
          h('div', { class: 'row' },
            h('label', {}, 'Start', this.clipStart),
            h('label', {}, 'End', this.clipEnd)),
          this.clipInfo,
          h('div', { class: 'row actions' }, this.clipLink, this.clipCopy),
          h('h3', {}, 'Holds'),
          h('p', { class: 'muted small' }, 'Held media is kept past retention and disk budgets.'),
          h('div', { class: 'row' }, this.holdReason, this.holdBtn),
          this.holdList),
        h('section', { class: 'panel', 'aria-labelledby': 'settings-title' },
          h('h2', { id: 'settings-title' }, 'Settings'),
          h('form', { class: 'settings', onsubmit: (e) => this.saveSettings(e) },
            h('label', { for: 'set-hours' }, 'Retention (hours)'), this.setHours,
            h('label', { for: 'set-bytes' }, 'Size quota (bytes, 0 = none)'), this.setBytes,
            h('label', { for: 'set-tags' }, 'Tags'), this.setTags,
            this.setErr,
            h('div', { class: 'row actions' }, h('button', { type: 'submit', class: 'primary', id: 'settings-save' }, 'Save'))),
          h('h3', {}, 'Producer'),
          h('code', { class: 'cmd' }, producerCommand(n)),
          h('div', { class: 'row actions' },
            h('button', { type: 'button', class: 'small', onclick: () => copyText(producerCommand(n)) }, 'Copy command')),
          h('h3', {}, 'Danger zone'),
          h('button', { type: 'button', class: 'danger', id: 'delete-stream', onclick: () => this.confirmDelete() }, 'Delete stream…'))),
    );

    this.video.addEventListener('error', () => this.onVideoError());
    this.video.addEventListener('ended', () => this.onEnded());
    this.watchSegmentFetches();
    this.timers.push(setInterval(() => this.tick(), 250));
    this.timers.push(setInterval(() => this.refresh(), STREAM_REFRESH_MS));
  }

  async load() {
    await this.refresh();
    if (this.destroyed || !this.stream) return;
    await ensureToken(this.name);
    this.fillSettings();
    this.loadHolds();
    // Without a native HLS player (Firefox, say), play through hls.js over MSE when bundled.
    if (FORCE_HLSJS || this.video.canPlayType(HLS_TYPE) === '') {
      this.HlsJs = await loadHlsJs();
      if (this.destroyed) return;
    }
    if (!this.canPlay()) {
      this.message('This browser has no HLS player (Safari, Chromium and Edge have one; hls.js is not bundled into this build). Download clips below, or open the stream in a player: ' +
        `${location.origin}${streamUrl(this.name, '/hls/master.m3u8')}`);
    } else if (this.stream.status === 'live') {
      this.playLive();
    } else if (this.stream.fragment_count > 0) {
      this.message('Not live. Click the timeline to play the archive.');
      this.setMode(null);
    } else {
      this.message('Nothing recorded yet. Start a producer (command under Settings).');
      this.setMode(null);
    }
  }

  canPlay() {
    return Boolean(this.HlsJs) || this.video.canPlayType(HLS_TYPE) !== '';
  }

  /// Plays a playlist URL with the native player, or with hls.js where that is in use.
  setSource(url) {
    if (!this.HlsJs) {
      this.video.src = url;
      return;
    }
    if (this.hls) this.hls.destroy();
    this.hls = new this.HlsJs({ lowLatencyMode: true });
    this.hls.loadSource(url);
    this.hls.attachMedia(this.video);
  }

  async refresh() {
    try {
      this.stream = await api(streamPath(this.name));
    } catch (e) {
      if (e.status === 404) {
        this.message(`There is no stream named "${this.name}".`);
        this.timers.forEach(clearInterval);
      } else toast(`Cannot load the stream: ${e.message}`, 'error');
      return;
    }
    if (this.destroyed) return;
    this.badgeSlot.replaceChildren(badge(this.stream));
    this.liveBtn.disabled = this.stream.status !== 'live' || !this.canPlay();
    await this.loadTimeline();
    if (this.mode === 'live') this.loadLivePlaylist();
  }

  // ----- timeline window -----

  windowRange() {
    if (this.follow) this.windowEnd = Date.now() + this.zoom.ms * 0.02;
    return [this.windowEnd - this.zoom.ms, this.windowEnd];
  }

  setZoom(z) {
    const centre = this.follow ? null : this.windowEnd - this.zoom.ms / 2;
    this.zoom = z;
    this.zoomBtns.forEach((b) => b.setAttribute('aria-pressed', String(b.dataset.zoom === z.label)));
    if (centre !== null) this.windowEnd = Math.min(centre + z.ms / 2, Date.now() + z.ms * 0.02);
    this.loadTimeline();
  }

  pan(frac) {
    if (frac === 0) this.follow = true;
    else {
      this.windowRange();
      this.windowEnd += frac * this.zoom.ms;
      const max = Date.now() + this.zoom.ms * 0.02;
      this.follow = this.windowEnd >= max;
      if (this.follow) this.windowEnd = max;
    }
    this.loadTimeline();
  }

  async loadTimeline() {
    const [a, b] = this.windowRange();
    const seq = (this.tlSeq = (this.tlSeq || 0) + 1);
    let t;
    try {
      t = await api(`${streamPath(this.name)}/timeline?start=${Math.round(a)}&end=${Math.round(b)}`);
    } catch (e) {
      if (e.status !== 404) toast(`Timeline: ${e.message}`, 'error');
      return;
    }
    if (this.destroyed || seq !== this.tlSeq) return;
    this.timeline.start = a;
    this.timeline.end = b;
    this.timeline.setData(t.spans, t.gaps);
    const rec = t.recorded_us / 1e6;
    this.windowLabel.textContent = `${fmtDateTime(a)} – ${this.follow ? 'now' : fmtDateTime(b)} · ${t.spans.length} span${t.spans.length === 1 ? '' : 's'}, ${fmtDuration(rec * 1000)} recorded`;
  }

  // ----- playback -----

  message(text) {
    this.playerMsg.textContent = text || '';
    this.playerMsg.hidden = !text;
  }

  setMode(mode) {
    this.mode = mode;
    this.modeLabel.textContent = mode === 'live' ? 'LIVE' : mode === 'archive' ? 'ARCHIVE' : '';
    this.modeLabel.className = `mode ${mode || ''}`;
    this.modeLabel.dataset.mode = mode || '';
    if (mode !== 'live') this.delay.textContent = '';
  }

  playLive() {
    if (!this.canPlay() || !this.stream || this.stream.status !== 'live') return;
    this.message('');
    this.archive = null;
    this.liveSegs.clear();
    this.newestFetched = null;
    this.liveDelays = [];
    this.setMode('live');
    this.loadLivePlaylist();
    this.setSource(withToken(this.name, streamUrl(this.name, '/hls/live.m3u8')));
    this.video.play().catch(() => {});
  }

  // Keeps the PDT and duration of every segment the live playlist has listed.
  async loadLivePlaylist() {
    try {
      const r = await fetch(withToken(this.name, streamUrl(this.name, '/hls/live.m3u8')));
      if (!r.ok) return;
      const { segs } = parsePlaylist(await r.text());
      for (const s of segs) if (s.n !== null) this.liveSegs.set(s.n, s);
    } catch {
      /* the next refresh tries again */
    }
  }

  // Which media segments the browser's HLS player fetched (resource timing sees its requests).
  watchSegmentFetches() {
    const re = new RegExp(`/streams/${this.name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/hls/(?:segments|parts)/(\\d+)\\.`);
    if (typeof PerformanceObserver === 'undefined') return;
    this.observer = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        const m = e.name.match(re);
        if (m && this.mode === 'live') {
          const n = Number(m[1]);
          if (this.newestFetched === null || n > this.newestFetched) this.newestFetched = n;
        }
      }
    });
    this.observer.observe({ type: 'resource', buffered: false });
    performance.setResourceTimingBufferSize(2000);
    performance.addEventListener('resourcetimingbufferfull', () => performance.clearResourceTimings());
  }

  // Wall-clock time (ms, producer time) of what is on screen, or null when unknown.
  playingTime() {
    const v = this.video;
    const ct = v.currentTime;
    if (this.mode === 'archive' && this.archive) {
      const segs = this.archive.segs;
      let s = segs[0];
      for (const x of segs) {
        if (x.start <= ct + 1e-3) s = x;
        else break;
      }
      if (!s || s.pdt === null) return null;
      return s.pdt + Math.min(ct - s.start, s.dur) * 1000;
    }
    if (this.mode === 'live') {
      // Anchored at the newest segment the player fetched: its end is the end of the buffer;
      // walk back from there through the playlist's segments (exact across discontinuities).
      const n = this.newestFetched;
      if (n === null || v.buffered.length === 0) return null;
      const seg = this.liveSegs.get(n);
      if (!seg) return null;
      let behind = v.buffered.end(v.buffered.length - 1) - ct; // seconds before the buffer's end
      let cur = seg;
      let k = n;
      while (behind > cur.dur + 1e-3) {
        behind -= cur.dur;
        // segments are named by their first fragment; find the previous listed one
        let prev = null;
        for (let j = k - 1; j >= k - 50 && j >= 0; j--) {
          if (this.liveSegs.has(j)) {
            prev = this.liveSegs.get(j);
            k = j;
            break;
          }
        }
        if (!prev) return cur.pdt + (cur.dur - behind) * 1000;
        cur = prev;
      }
      return cur.pdt + (cur.dur - behind) * 1000;
    }
    return null;
  }

  tick() {
    const v = this.video;
    if (!this.mode) {
      this.timeline.setPlayhead(null);
      return;
    }
    const t = this.playingTime();
    if (t === null || v.readyState < 2) {
      this.position.textContent = this.mode === 'live' ? 'connecting…' : 'loading…';
      return;
    }
    this.position.textContent = fmtDateTime(t);
    this.position.dataset.ms = String(Math.round(t));
    this.position.dataset.currentTime = v.currentTime.toFixed(3);
    this.timeline.setPlayhead(t);
    if (this.mode === 'live') {
      const d = (Date.now() - t) / 1000;
      this.liveDelays.push(d);
      if (this.liveDelays.length > 8) this.liveDelays.shift();
      const sorted = [...this.liveDelays].sort((a, b) => a - b);
      const med = sorted[Math.floor(sorted.length / 2)];
      this.delay.textContent = `${Math.max(0, med).toFixed(1)} s behind`;
      this.delay.dataset.seconds = med.toFixed(2);
    }
  }

  // Plays the archive from `ms` to the end of the recording it falls in (or to now).
  async playArchiveAt(ms) {
    if (!this.canPlay()) {
      toast('This browser cannot play HLS natively', 'error');
      return;
    }
    // Until the new source plays, nothing on screen is at a known time.
    this.setMode(null);
    this.video.pause();
    delete this.position.dataset.ms;
    this.position.dataset.requestedMs = String(Math.round(ms));
    this.position.textContent = 'loading…';
    const spans = this.timeline.spans;
    const span = spans.find((s) => ms >= s.start_us / 1000 && ms <= s.end_us / 1000);
    const now = Date.now();
    const live = this.stream && this.stream.status === 'live';
    const last = spans.length ? spans[spans.length - 1] : null;
    // Up to the end of this span; for the span that is still being recorded, up to now.
    let end = span ? span.end_us / 1000 : ms + 3600e3;
    if (live && span && span === last) end = now;
    // One archive playlist covers at most a day (the server's default limits.max_playlist_secs);
    // the player asks again when the user moves past it.
    end = Math.min(Math.max(end, ms + 1000), now, ms + 12 * 3600e3);
    // The playlist starts with the segment (GOP) holding `ms`; the player then seeks into it.
    const from = Math.floor(ms);
    const url = withToken(this.name, `${streamUrl(this.name, '/hls/archive.m3u8')}?start=${from}&end=${Math.ceil(end)}`);
    let text;
    try {
      const r = await fetch(url);
      text = await r.text();
      if (!r.ok) {
        const e = JSON.parse(text).error;
        throw new Error(e ? e.message : `${r.status}`);
      }
    } catch (e) {
      toast(`Cannot play from ${fmtDateTime(ms)}: ${e.message}`, 'error');
      return;
    }
    const pl = parsePlaylist(text);
    if (!pl.segs.length) {
      toast(`Nothing recorded at ${fmtDateTime(ms)}`, 'error');
      return;
    }
    // Position on the playlist timeline of `ms`.
    let offset = 0;
    for (const s of pl.segs) {
      if (s.pdt !== null && ms >= s.pdt) offset = s.start + Math.min((ms - s.pdt) / 1000, s.dur);
    }
    this.message('');
    this.setMode('archive');
    this.archive = { segs: pl.segs, requested: ms, url };
    this.timeline.setPlayhead(ms);
    const v = this.video;
    this.setSource(url);
    const seek = () => {
      if (offset > 0.05) v.currentTime = offset;
      v.play().catch(() => {});
    };
    v.addEventListener('loadedmetadata', seek, { once: true });
  }

  onEnded() {
    if (this.mode === 'archive' && this.stream && this.stream.status === 'live') this.playLive();
    else if (this.mode === 'archive') this.message('End of the recording. Pick another point on the timeline.');
  }

  onVideoError() {
    const v = this.video;
    if (!v.getAttribute('src')) return;
    const err = v.error ? v.error.message || `code ${v.error.code}` : 'unknown error';
    if (this.mode === 'live') {
      this.message(this.stream && this.stream.status === 'live' ? `Live playback stopped (${err}). Press "Go live" to reconnect.` : 'The producer stopped; the stream is no longer live. Click the timeline to play the archive.');
    } else {
      this.message(`Playback failed: ${err}`);
    }
    this.setMode(null);
  }

  // ----- clips and holds -----

  select(a, b) {
    this.selection = [Math.round(a), Math.round(b)];
    this.clipStart.value = toLocalInput(a);
    this.clipEnd.value = toLocalInput(b);
    this.updateClip();
  }

  selectFromInputs() {
    const a = fromLocalInput(this.clipStart.value);
    const b = fromLocalInput(this.clipEnd.value);
    if (a === null || b === null) return;
    this.selection = [Math.min(a, b), Math.max(a, b)];
    this.timeline.setSelection(a, b);
    this.updateClip();
  }

  updateClip() {
    const sel = this.selection;
    const ok = sel && sel[1] - sel[0] >= 1000;
    this.clipLink.classList.toggle('disabled', !ok);
    this.clipCopy.disabled = !ok;
    this.holdBtn.disabled = !ok;
    if (!ok) {
      this.clipLink.removeAttribute('href');
      this.clipLink.setAttribute('aria-disabled', 'true');
      this.clipInfo.textContent = 'Select at least one second.';
      return;
    }
    const [a, b] = sel;
    const href = withToken(this.name, `${streamUrl(this.name, '/clip.mp4')}?start=${new Date(a).toISOString()}&end=${new Date(b).toISOString()}`);
    this.clipLink.href = href;
    this.clipLink.removeAttribute('aria-disabled');
    this.clipLink.setAttribute('download', `${this.name}-${new Date(a).toISOString().replace(/[:.]/g, '-')}.mp4`);
    this.clipLink.dataset.startMs = String(a);
    this.clipLink.dataset.endMs = String(b);
    this.clipInfo.textContent = `${fmtDateTime(a)} – ${fmtClock(b)} (${fmtDuration(b - a)}); the clip starts at the keyframe at or before the start.`;
  }

  async loadHolds() {
    let r;
    try {
      r = await api(`${streamPath(this.name)}/holds`);
    } catch (e) {
      toast(`Holds: ${e.message}`, 'error');
      return;
    }
    this.holdList.replaceChildren(
      ...r.holds.map((hd) =>
        h('li', { dataset: { id: hd.id } },
          h('span', {}, `${fmtDateTime(hd.start_us / 1000)} – ${fmtDateTime(hd.end_us / 1000)}`, hd.reason ? h('span', { class: 'muted' }, ` · ${hd.reason}`) : null),
          h('button', { type: 'button', class: 'small', 'aria-label': `Remove hold ${hd.id}`, onclick: () => this.removeHold(hd.id) }, 'Remove'))),
    );
    if (!r.holds.length) this.holdList.append(h('li', { class: 'muted' }, 'No holds.'));
  }

  async addHold() {
    if (!this.selection) return;
    const [a, b] = this.selection;
    try {
      await api(`${streamPath(this.name)}/holds`, { method: 'POST', body: { start: a, end: b, reason: this.holdReason.value.trim() } });
      this.holdReason.value = '';
      toast('Range held');
    } catch (e) {
      toast(`Hold: ${e.message}`, 'error');
    }
    this.loadHolds();
  }

  async removeHold(id) {
    try {
      await api(`${streamPath(this.name)}/holds/${enc(id)}`, { method: 'DELETE' });
      toast('Hold removed');
    } catch (e) {
      toast(`Remove hold: ${e.message}`, 'error');
    }
    this.loadHolds();
  }

  // ----- settings -----

  fillSettings() {
    const s = this.stream;
    this.setHours.value = String(s.retention_hours);
    this.setBytes.value = s.retention_bytes ? String(s.retention_bytes) : '';
    this.setTags.value = tagsText(s.tags);
  }

  async saveSettings(e) {
    e.preventDefault();
    this.setErr.hidden = true;
    try {
      const body = { tags: parseTags(this.setTags.value) };
      if (this.setHours.value !== '') body.retention_hours = Number(this.setHours.value);
      body.retention_bytes = this.setBytes.value === '' ? 0 : Number(this.setBytes.value);
      this.stream = await api(streamPath(this.name), { method: 'PATCH', body });
      this.fillSettings();
      toast('Settings saved');
    } catch (ex) {
      this.setErr.textContent = ex.message;
      this.setErr.hidden = false;
    }
  }

  confirmDelete() {
    const name = this.name;
    const input = h('input', { id: 'delete-confirm', autocomplete: 'off', 'aria-describedby': 'delete-text' });
    const go = h('button', { type: 'submit', class: 'danger', id: 'delete-go', disabled: true }, `Delete ${name}`);
    input.addEventListener('input', () => (go.disabled = input.value !== name));
    const err = h('p', { class: 'error', role: 'alert', hidden: true });
    const dlg = h('dialog', { class: 'dialog', 'aria-labelledby': 'delete-title' });
    const form = h('form', { method: 'dialog' },
      h('h2', { id: 'delete-title' }, `Delete ${name}?`),
      h('p', { id: 'delete-text' }, 'All of its recordings and holds are deleted. This cannot be undone. Type ', h('strong', {}, name), ' to confirm.'),
      input, err,
      h('div', { class: 'dialog-actions' },
        h('button', { type: 'button', onclick: () => dlg.close() }, 'Cancel'), go));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      if (input.value !== name) return;
      try {
        await api(streamPath(name), { method: 'DELETE' });
      } catch (ex) {
        err.textContent = ex.message;
        err.hidden = false;
        return;
      }
      dlg.close();
      toast(`Deleted ${name}`);
      location.hash = '#/';
    });
    dlg.append(form);
    dlg.addEventListener('close', () => dlg.remove());
    document.body.append(dlg);
    dlg.showModal();
    input.focus();
  }
}

const pad = (n) => String(n).padStart(2, '0');
function toLocalInput(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
function fromLocalInput(v) {
  if (!v) return null;
  const t = new Date(v).getTime(); // datetime-local values parse as local time
  return Number.isFinite(t) ? t : null;
}

route();
