// tapedeck web UI: streams overview (#/) and stream view (#/stream/<name>).
// Plain ES modules, no build step; talks only to tapedeck's own /api/v1.

import { Timeline, fmtClock, fmtDateTime } from './timeline.js';
import { FeedPlayer, UnsupportedCodec, codecsSupported, feedPlayerSupported } from './player.js';

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
/// What "play the most recent minutes" of an idle stream plays.
const RECENT_MS = 5 * 60e3;
// `?player=native` in the page URL uses the browser's own HLS player even where MSE is there (tests).
const FORCE_NATIVE = new URLSearchParams(location.search).get('player') === 'native';

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

// The key lives in localStorage when the user asks to remember it, else for this tab only.
const KEY_STORAGE = 'tapedeck.key';
let apiKey = localStorage.getItem(KEY_STORAGE) || sessionStorage.getItem(KEY_STORAGE) || '';
// Playback tokens per stream (for <video>, <img> and download links, which cannot send a key).
const tokens = new Map();

function setKey(key, remember) {
  apiKey = key;
  tokens.clear();
  localStorage.removeItem(KEY_STORAGE);
  sessionStorage.removeItem(KEY_STORAGE);
  if (key) (remember ? localStorage : sessionStorage).setItem(KEY_STORAGE, key);
  updateKeyButton();
}

/// Headers of every request the page makes itself. `X-Requested-With` tells the server not to
/// answer 401 with a Basic challenge, which would raise the browser's own login dialog.
function authHeaders() {
  const hd = { 'x-requested-with': 'tapedeck-ui' };
  if (apiKey) hd.authorization = `Bearer ${apiKey}`;
  return hd;
}

let keyForm = null; // the open key dialog's promise, shared by concurrent 401s

/// The key form: resolves true when a key was entered, false when dismissed.
function askForKey(refused) {
  if (keyForm) return keyForm;
  keyForm = new Promise((resolve) => {
    const input = h('input', { type: 'password', id: 'key-input', name: 'key', autocomplete: 'current-password', required: true, 'aria-describedby': 'key-text' });
    const remember = h('input', { type: 'checkbox', id: 'key-remember', checked: Boolean(localStorage.getItem(KEY_STORAGE)) || !apiKey });
    const dlg = h('dialog', { class: 'dialog', id: 'key-dialog', 'aria-labelledby': 'key-title' });
    let entered = false;
    const form = h('form', { method: 'dialog' },
      h('h2', { id: 'key-title' }, 'API key'),
      h('p', { id: 'key-text' }, refused ? 'That key was refused. Enter a viewer or admin key:' : 'This tapedeck needs an API key (viewer or admin).'),
      h('label', { for: 'key-input' }, 'Key'), input,
      h('label', { class: 'check' }, remember, 'Remember on this device'),
      h('div', { class: 'dialog-actions' },
        apiKey ? h('button', { type: 'button', id: 'key-forget', onclick: () => { setKey('', false); dlg.close(); } }, 'Forget key') : null,
        h('button', { type: 'button', id: 'key-cancel', onclick: () => dlg.close() }, 'Cancel'),
        h('button', { type: 'submit', class: 'primary', id: 'key-submit' }, 'Use key')));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const k = input.value.trim();
      if (!k) return;
      setKey(k, remember.checked);
      entered = true;
      dlg.close();
    });
    dlg.append(form);
    dlg.addEventListener('close', () => {
      dlg.remove();
      keyForm = null;
      resolve(entered);
    });
    document.body.append(dlg);
    dlg.showModal();
    input.focus();
  });
  return keyForm;
}

/// The top bar's key control: shown once the server asked for a key, to change or forget it.
let keyNeeded = Boolean(apiKey);
function updateKeyButton() {
  const b = $('#key-button');
  if (!b) return;
  b.hidden = !keyNeeded;
  b.textContent = apiKey ? 'API key…' : 'Enter API key';
}

async function api(path, { method = 'GET', body } = {}) {
  let r;
  // Until a key is accepted or the form is dismissed (a refused key asks again, saying so).
  for (;;) {
    const init = { method, headers: authHeaders() };
    if (body !== undefined) {
      init.headers['content-type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    r = await fetch(API + path, init);
    if (r.status !== 401) break;
    keyNeeded = true;
    updateKeyButton();
    if (!(await askForKey(Boolean(apiKey)))) break;
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

/// What a page shows instead of its content when the server needs a key it does not have.
function keyRequiredView(main, retry) {
  main.replaceChildren(
    h('section', { class: 'notice', id: 'key-required' },
      h('h1', {}, 'An API key is needed'),
      h('p', {}, 'This tapedeck has authentication on. Enter a viewer or admin key to see its streams.'),
      h('button', { type: 'button', class: 'primary', id: 'key-enter', onclick: async () => { if (await askForKey(false)) retry(); } }, 'Enter API key')));
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

/// A first stream with nothing but ffmpeg: a test picture with a tone, sent live in 0.2 s
/// chunks (each chunk is stored and playable as it arrives: sub-second live).
function testPatternCommand(name) {
  return (
    'ffmpeg -re -f lavfi -i testsrc2=size=1280x720:rate=25 -f lavfi -i sine=frequency=440 ' +
    '-c:v libx264 -preset veryfast -tune zerolatency -g 50 -pix_fmt yuv420p -c:a aac ' +
    '-f mp4 -movflags frag_keyframe+empty_moov+default_base_moof -frag_duration 200000 ' +
    `-method PUT ${location.origin}${streamUrl(name, '/ingest')}`
  );
}

/// A command in a box with a Copy button.
function commandBox(cmd, id) {
  return h('div', { class: 'cmd-box' },
    h('code', { class: 'cmd', id }, cmd),
    h('button', { type: 'button', class: 'small', onclick: () => copyText(cmd) }, 'Copy'));
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

// What a pulled source (RTSP camera) is doing: an empty span for pushed streams. The title says
// the last error and the next attempt, so a failing camera explains itself on hover.
const SOURCE_LABELS = {
  connecting: 'Camera: connecting', streaming: 'Camera: streaming', retrying: 'Camera: retrying',
  unauthorized: 'Camera: wrong password', unsupported_codec: 'Camera: unsupported codec',
};
function sourceBadge(s) {
  const st = s.source && s.source.status;
  if (!st) return h('span', { class: 'source-state', hidden: true });
  const why = [];
  if (st.last_error && st.state !== 'streaming') why.push(st.last_error);
  if (st.next_attempt) why.push(`next attempt ${fmtDateTime(Date.parse(st.next_attempt))}`);
  if (st.skipped_tracks && st.skipped_tracks.length) why.push(`skipped: ${st.skipped_tracks.join('; ')}`);
  return h('span', { class: `badge source-state ${st.state}`, dataset: { sourceState: st.state }, title: why.join('\n') },
    SOURCE_LABELS[st.state] || `Camera: ${st.state}`);
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
    this.main = main;
    this.empty = h('p', { class: 'muted empty', hidden: true });
    this.firstStream = h('section', { class: 'notice', id: 'first-stream', hidden: true },
      h('h2', {}, 'No streams yet'),
      h('p', {}, 'Send video and the stream is created. To try it with nothing but ffmpeg, run:'),
      commandBox(testPatternCommand('cam1'), 'first-stream-cmd'),
      h('p', { class: 'muted small' }, 'A camera: replace the two lavfi inputs with -rtsp_transport tcp -i rtsp://… and use -c copy. Or create a stream first with "New stream".'));
    main.append(
      h('div', { class: 'toolbar' },
        h('h1', {}, 'Streams'),
        h('div', { class: 'toolbar-actions' },
          this.search,
          h('button', { type: 'button', class: 'primary', id: 'new-stream', onclick: () => this.openCreate() }, 'New stream'))),
      this.grid,
      this.empty,
      this.firstStream,
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
      if (this.destroyed) return;
      if (e.status === 401) {
        this.destroy();
        keyRequiredView(this.main, route);
      } else this.showEmpty(`Cannot reach the server: ${e.message}`);
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
    this.firstStream.hidden = this.cards.size !== 0;
    if (this.cards.size === 0) this.empty.hidden = true;
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
    p.source = h('span');
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
        h('div', { class: 'card-title' }, h('a', { href: link, class: 'name' }, s.name), p.badge, p.source),
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
    p.source.replaceWith((p.source = sourceBadge(s)));
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
    // An RTSP camera tapedeck records itself (optional): URL, transport, credentials.
    const rtspUrl = h('input', { name: 'rtsp_url', id: 'create-rtsp-url', type: 'url', autocomplete: 'off', placeholder: 'rtsp://192.168.1.20:554/stream1' });
    const rtspTransport = h('select', { name: 'rtsp_transport', id: 'create-rtsp-transport' },
      h('option', { value: 'tcp' }, 'TCP (default)'), h('option', { value: 'udp' }, 'UDP'));
    const rtspUser = h('input', { name: 'rtsp_username', id: 'create-rtsp-username', autocomplete: 'off' });
    const rtspPass = h('input', { name: 'rtsp_password', id: 'create-rtsp-password', type: 'password', autocomplete: 'new-password' });
    const camera = h('details', { class: 'camera', id: 'create-camera' },
      h('summary', {}, 'Record an RTSP camera'),
      h('label', { for: 'create-rtsp-url' }, 'Camera URL'), rtspUrl,
      h('p', { class: 'hint' }, 'tapedeck pulls the camera itself (H.264/H.265, AAC) and reconnects when it drops.'),
      h('label', { for: 'create-rtsp-transport' }, 'Transport'), rtspTransport,
      h('label', { for: 'create-rtsp-username' }, 'Username'), rtspUser,
      h('label', { for: 'create-rtsp-password' }, 'Password'), rtspPass,
      h('p', { class: 'hint' }, 'Kept on the server; never shown again.'));
    const dlg = h('dialog', { class: 'dialog', id: 'create-dialog', 'aria-labelledby': 'create-title' });
    const form = h('form', { method: 'dialog' },
      h('h2', { id: 'create-title' }, 'New stream'),
      h('label', { for: 'create-name' }, 'Name'), name,
      h('p', { class: 'hint' }, 'Letters, digits, "_", "." and "-".'),
      h('label', { for: 'create-retention' }, 'Retention (hours)'), hours,
      h('p', { class: 'hint' }, '0 keeps only the last few minutes (live only).'),
      h('label', { for: 'create-tags' }, 'Tags'), tags,
      camera,
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
        if (rtspUrl.value.trim()) {
          const rtsp = { url: rtspUrl.value.trim(), transport: rtspTransport.value };
          if (rtspUser.value) rtsp.username = rtspUser.value;
          if (rtspPass.value) rtsp.password = rtspPass.value;
          body.source = { rtsp };
        }
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
    this.main = main;
    this.timers = [];
    this.stream = null;
    this.zoom = ZOOMS[1];
    this.follow = true; // the timeline window ends at now
    this.windowEnd = Date.now();
    this.mode = null; // what the player plays: 'live' | 'archive' | null
    this.feed = null; // the FeedPlayer in use (MSE browsers)
    this.archive = null; // native HLS archive playback: {segs, requested, url}
    this.selection = null;
    document.title = `${name} · tapedeck`;
    $('#crumbs').replaceChildren(h('span', { class: 'sep' }, '/'), h('span', {}, name));
    main.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
    this.open();
  }

  /// Loads the stream, then draws the page for it (or says why there is none).
  async open() {
    try {
      this.stream = await api(streamPath(this.name));
    } catch (e) {
      if (this.destroyed) return;
      if (e.status === 404) this.notFound();
      else if (e.status === 401) keyRequiredView(this.main, route);
      else this.main.replaceChildren(h('p', { class: 'error', role: 'alert' }, `Cannot load the stream: ${e.message}`));
      return;
    }
    if (this.destroyed) return;
    this.build(this.main);
    this.load();
  }

  notFound() {
    document.title = 'No such stream · tapedeck';
    this.main.replaceChildren(
      h('section', { class: 'notice', id: 'not-found' },
        h('h1', {}, `There is no stream named "${this.name}"`),
        h('p', {}, 'It may have been deleted, or the name is misspelt. Sending video to it creates it:'),
        commandBox(testPatternCommand(this.name), 'not-found-cmd'),
        h('p', {}, h('a', { href: '#/' }, '← All streams'))));
  }

  destroy() {
    this.destroyed = true;
    this.timers.forEach(clearInterval);
    if (this.timeline) this.timeline.destroy();
    this.stopPlayer();
  }

  build(main) {
    const n = this.name;
    this.video = h('video', { id: 'player', muted: true, autoplay: true, playsinline: true, controls: true });
    this.video.muted = true;
    this.modeLabel = h('span', { class: 'mode', id: 'mode' });
    this.position = h('span', { class: 'position', id: 'position' }, '—');
    this.delay = h('span', { class: 'delay', id: 'delay' });
    this.playerMsgText = h('span');
    this.playerMsgAction = h('span');
    this.playerMsg = h('div', { class: 'player-msg', id: 'player-msg', hidden: true }, this.playerMsgText, this.playerMsgAction);
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
    // Where the stream's bytes are: the local disk, and the object store ([storage.object]).
    this.storedWhere = h('p', { class: 'muted small', id: 'stored-where' });

    main.replaceChildren(
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
          this.storedWhere,
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
    this.timers.push(setInterval(() => this.tick(), 250));
    this.timers.push(setInterval(() => this.refresh(), STREAM_REFRESH_MS));
  }

  async load() {
    this.render();
    await this.loadTimeline();
    await ensureToken(this.name);
    this.fillSettings();
    this.loadHolds();
    this.player = FORCE_NATIVE || !feedPlayerSupported() ? (this.video.canPlayType(HLS_TYPE) ? 'native' : null) : 'feed';
    if (!this.player) {
      this.message('This browser can play neither Media Source Extensions nor HLS. Download clips below, or open the stream in a player:', this.playlistLink());
    } else if (this.stream.codecs && !this.canDecode(this.stream.codecs)) {
      this.codecMessage(this.stream.codecs);
    } else if (this.stream.status === 'live') {
      this.playLive();
    } else this.showIdle();
  }

  /// Whether the player in use can decode these RFC 6381 codecs.
  canDecode(codecs) {
    if (this.player === 'feed') return codecsSupported(codecs);
    return this.video.canPlayType(`video/mp4; codecs="${codecs}"`) !== '';
  }

  /// The master playlist's URL, for VLC, mpv, ffplay or Safari.
  playlistUrl() {
    return `${location.origin}${withToken(this.name, streamUrl(this.name, '/hls/master.m3u8'))}`;
  }

  playlistLink() {
    const url = this.playlistUrl();
    return h('span', { class: 'playlist-link' }, h('a', { href: url, id: 'playlist-link' }, url), ' ',
      h('button', { type: 'button', class: 'small', onclick: () => copyText(url) }, 'Copy'));
  }

  async refresh() {
    let s;
    try {
      s = await api(streamPath(this.name));
    } catch (e) {
      if (this.destroyed) return;
      if (e.status === 404) {
        // Deleted while on screen.
        this.destroy();
        this.notFound();
      } else toast(`Cannot load the stream: ${e.message}`, 'error');
      return;
    }
    if (this.destroyed) return;
    const wasLive = this.stream && this.stream.status === 'live';
    this.stream = s;
    this.render();
    // Went live while nothing plays: start live. Went idle while live: say so, keep the last frame.
    if (s.status === 'live' && !wasLive && !this.mode && this.player && this.playerMsg.dataset.reason !== 'codec') this.playLive();
    await this.loadTimeline();
  }

  /// One source of truth: the stream's status from the server, and what the player plays. The
  /// header badge, the player bar and the Go live button are all drawn from these two here.
  render() {
    const s = this.stream;
    const live = s.status === 'live';
    this.badgeSlot.replaceChildren(badge(s), ' ', sourceBadge(s));
    this.liveBtn.disabled = !live || !this.player || this.mode === 'live';
    let label = '';
    let cls = '';
    if (this.mode === 'live') {
      label = live ? 'LIVE' : 'IDLE';
      cls = live ? 'live' : 'idle';
    } else if (this.mode === 'archive') {
      label = 'ARCHIVE';
      cls = 'archive';
    }
    this.modeLabel.textContent = label;
    this.modeLabel.className = `mode ${cls}`;
    this.modeLabel.dataset.mode = cls;
    if (this.mode === 'live' && !live) {
      this.delay.textContent = s.last_time ? `producer stopped at ${fmtClock(Date.parse(s.last_time))}` : 'producer stopped';
      delete this.delay.dataset.seconds;
      if (!this.stoppedShown) {
        this.stoppedShown = true;
        this.liveDelays = [];
        // Paused on the last frame (no spinner waiting for media that is not coming); the
        // feed stays open, so a producer that comes back plays on at once.
        this.video.pause();
        this.message('The producer stopped; this is its last frame.', this.recentButton());
      }
    } else if (this.mode === 'live') {
      if (this.stoppedShown) {
        this.stoppedShown = false;
        this.message('');
        this.video.play().catch(() => {});
      }
    } else this.delay.textContent = '';
  }

  recentButton() {
    const s = this.stream;
    if (!s.last_time) return null;
    return h('button', { type: 'button', class: 'small primary', id: 'play-recent', onclick: () => this.playRecent() }, 'Play the last 5 minutes');
  }

  playRecent() {
    const s = this.stream;
    const end = Date.parse(s.last_time);
    const first = s.first_time ? Date.parse(s.first_time) : end - RECENT_MS;
    this.playArchiveAt(Math.max(first, end - RECENT_MS));
  }

  /// An idle (or empty) stream: its last frame as the poster, and an offer to play the end.
  showIdle() {
    this.setMode(null);
    // Nothing is loaded: native controls would show a 0:00 that means nothing.
    this.video.controls = false;
    const s = this.stream;
    if (s.fragment_count > 0) {
      this.video.poster = withToken(this.name, `${streamUrl(this.name, '/latest.jpg')}?width=960&v=${s.last_fragment}`);
      const when = s.last_time ? fmtDateTime(Date.parse(s.last_time)) : 'a while ago';
      this.message(`Not live. Last recorded ${when}. Click the timeline to play any point.`, this.recentButton());
    } else {
      this.message('Nothing recorded yet. Start a producer (command under Settings); the picture appears here as it arrives.');
    }
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

  message(text, action = null) {
    delete this.playerMsg.dataset.reason;
    this.playerMsgText.textContent = text || '';
    this.playerMsgAction.replaceChildren(...(action ? [' ', action] : []));
    this.playerMsg.hidden = !text;
  }

  setMode(mode) {
    this.mode = mode;
    this.stoppedShown = false;
    this.liveDelays = [];
    delete this.delay.dataset.seconds;
    this.render();
  }

  stopPlayer() {
    if (this.feed) this.feed.stop();
    this.feed = null;
    this.archive = null;
    this.video.pause();
    this.video.removeAttribute('src');
    this.video.load();
  }

  /// The stream's codecs cannot be decoded here: say so plainly, with the playlist for a player
  /// that can (VLC, mpv, ffplay; Safari plays H.265).
  codecMessage(codecs) {
    const what = /^(hvc1|hev1)/.test(codecs) ? 'H.265 (HEVC) video' : `this stream's codecs (${codecs})`;
    this.stopPlayer();
    this.setMode(null);
    this.message(`This browser cannot play ${what}. Download clips below, or open the stream in a player that can:`, this.playlistLink());
    this.playerMsg.dataset.reason = 'codec';
  }

  /// Starts a FeedPlayer on `url`; false when it could not start (the message says why).
  async startFeed(url, opts) {
    this.stopPlayer();
    const feed = new FeedPlayer(this.video, {
      headers: authHeaders,
      codecs: async () => (await api(streamPath(this.name))).codecs,
      onError: (e) => this.onFeedError(feed, e),
    });
    this.feed = feed;
    try {
      await feed.start(url, { ...opts, codecs: this.stream.codecs });
      return true;
    } catch (e) {
      if (e instanceof UnsupportedCodec) this.codecMessage(e.codecs);
      else this.message(`Playback failed: ${e.message}`);
      return false;
    }
  }

  async playLive() {
    if (!this.player || !this.stream || this.stream.status !== 'live') return;
    this.message('');
    this.video.removeAttribute('poster');
    this.video.controls = true;
    this.setMode('live');
    if (this.player === 'feed') {
      if (!(await this.startFeed(`${streamUrl(this.name, '/media')}?start=now`, { live: true }))) this.setMode(null);
      return;
    }
    this.stopPlayer();
    this.video.src = withToken(this.name, streamUrl(this.name, '/hls/live.m3u8'));
    this.video.play().catch(() => {});
  }

  // Producer time (ms) of what is on screen, or null when unknown.
  playingTime() {
    const v = this.video;
    const ct = v.currentTime;
    if (this.feed) return this.feed.producerMsAt(ct);
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
    if (this.mode === 'live' && typeof v.getStartDate === 'function') {
      // Safari's native player: the program date-time of the playlist's start.
      const d = v.getStartDate().getTime();
      return Number.isFinite(d) ? d + ct * 1000 : null;
    }
    return null;
  }

  tick() {
    const v = this.video;
    if (!this.mode) {
      this.timeline.setPlayhead(null);
      return;
    }
    if (this.feed && this.mode === 'live' && this.stream.status === 'live') this.feed.holdLiveEdge();
    const t = this.playingTime();
    if (t === null || v.readyState < 2) {
      this.position.textContent = this.mode === 'live' ? 'connecting…' : 'loading…';
      return;
    }
    this.position.textContent = fmtDateTime(t);
    this.position.dataset.ms = String(Math.round(t));
    this.position.dataset.currentTime = v.currentTime.toFixed(3);
    this.timeline.setPlayhead(t);
    if (this.mode === 'live' && this.stream.status === 'live') {
      const d = (Date.now() - t) / 1000;
      this.liveDelays.push(d);
      if (this.liveDelays.length > 8) this.liveDelays.shift();
      const sorted = [...this.liveDelays].sort((a, b) => a - b);
      const med = sorted[Math.floor(sorted.length / 2)];
      this.delay.textContent = `${Math.max(0, med).toFixed(1)} s behind`;
      this.delay.dataset.seconds = med.toFixed(2);
    }
  }

  // Plays the archive from `ms` on: with the feed player through everything recorded after it
  // (gaps are skipped), with a native player to the end of the recording it falls in.
  async playArchiveAt(ms) {
    if (!this.player) {
      toast('This browser has no way to play video here; download a clip instead', 'error');
      return;
    }
    // Until the new source plays, nothing on screen is at a known time.
    this.stopPlayer();
    this.video.removeAttribute('poster');
    this.video.controls = true;
    this.setMode(null);
    delete this.position.dataset.ms;
    this.position.dataset.requestedMs = String(Math.round(ms));
    this.position.textContent = 'loading…';
    this.timeline.setPlayhead(ms);
    if (this.player === 'feed') {
      this.message('');
      this.setMode('archive');
      const from = Math.floor(ms);
      if (!(await this.startFeed(`${streamUrl(this.name, '/media')}?start=${from}&follow=false`, { live: false, seekToMs: ms }))) this.setMode(null);
      return;
    }
    await this.playArchiveNative(ms);
  }

  async playArchiveNative(ms) {
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
    const url = withToken(this.name, `${streamUrl(this.name, '/hls/archive.m3u8')}?start=${Math.floor(ms)}&end=${Math.ceil(end)}`);
    let text;
    try {
      const r = await fetch(url, { headers: authHeaders() });
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
    const v = this.video;
    v.src = url;
    const seek = () => {
      if (offset > 0.05) v.currentTime = offset;
      v.play().catch(() => {});
    };
    v.addEventListener('loadedmetadata', seek, { once: true });
  }

  onEnded() {
    if (this.mode !== 'archive') return;
    if (this.stream && this.stream.status === 'live') this.playLive();
    else this.message('End of the recording. Pick another point on the timeline.', this.recentButton());
  }

  onFeedError(feed, e) {
    if (feed !== this.feed) return;
    if (e instanceof UnsupportedCodec) {
      this.codecMessage(e.codecs);
      return;
    }
    if (e.status === 404) {
      this.destroy();
      this.notFound();
      return;
    }
    this.stopPlayer();
    this.setMode(null);
    this.message(`Playback stopped: ${e.message}.`, this.stream.status === 'live' ? h('button', { type: 'button', class: 'small', onclick: () => this.playLive() }, 'Reconnect') : null);
  }

  onVideoError() {
    const v = this.video;
    if (!v.getAttribute('src') || !v.error) return;
    const codecs = this.stream.codecs || '';
    // MEDIA_ERR_DECODE / MEDIA_ERR_SRC_NOT_SUPPORTED for a codec the browser claimed it could
    // decode (Chromium on Linux says yes to H.265 and then cannot): a plain sentence, not the
    // pipeline's error text.
    if ((v.error.code === 3 || v.error.code === 4) && !/^avc1/.test(codecs)) {
      this.codecMessage(codecs);
      return;
    }
    const err = v.error.message || `code ${v.error.code}`;
    const wasLive = this.mode === 'live';
    this.stopPlayer();
    this.setMode(null);
    if (wasLive && this.stream.status === 'live') this.message(`Live playback stopped (${err}).`, h('button', { type: 'button', class: 'small', onclick: () => this.playLive() }, 'Reconnect'));
    else this.message(`Playback failed: ${err}`);
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
    const local = s.local_bytes ?? s.bytes;
    const remote = s.remote_bytes ?? 0;
    this.storedWhere.textContent = remote > 0
      ? `Stored: ${fmtBytes(local)} on this server's disk, ${fmtBytes(remote)} in object storage`
      : `Stored: ${fmtBytes(local)} on this server's disk`;
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

$('#key-button').addEventListener('click', async () => {
  await askForKey(false);
  route();
});
updateKeyButton();
route();
