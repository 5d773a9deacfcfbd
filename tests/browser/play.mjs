// Plays one URL in real Chromium (Debian's /usr/bin/chromium, driven by playwright-core) and
// reports what the player did as ONE JSON line on stdout (everything else goes to stderr).
//
//   node play.mjs --url URL --player hlsjs[,native|,file] [--low-latency] [--catch-up RATE] [--watch SEC]
//                 [--seek SEC|middle] [--until SEC] [--start-timeout SEC] [--name NAME]
//                 [--artifacts DIR]
//
// Players:
//   hlsjs   hls.js (from node_modules, injected into the page) on MediaSource
//   native  <video src=URL> after asking canPlayType('application/vnd.apple.mpegurl'); when the
//           browser says "" it does not try and reports {supported:false}
//   file    <video src=URL> (progressive MP4, e.g. clip.mp4)
// Several players (comma list) run at the same time in separate pages of one browser.
//
// Each run: waits for playback to start, takes a screenshot, optionally seeks (and waits for
// `seeked`), watches for --watch seconds (or until currentTime >= --until), sampling currentTime,
// hls.playingDate / latency, buffered ranges and stalls every 250 ms; screenshots at the end.
// Records hls.js ERROR events (and hls.js warnings), <video> errors, page console errors,
// uncaught page errors, failed requests and HTTP responses >= 400.
//
// Exit status is 0 whenever a result line was printed; the caller judges the result.

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const HLS_JS = path.join(here, 'node_modules', 'hls.js', 'dist', 'hls.min.js');
const CHROMIUM = process.env.TAPEDECK_CHROMIUM || '/usr/bin/chromium';
const SAMPLE_MS = 250;

const { values: opt } = parseArgs({
  options: {
    url: { type: 'string' },
    player: { type: 'string', default: 'hlsjs' },
    'low-latency': { type: 'boolean', default: false },
    'catch-up': { type: 'string' },
    watch: { type: 'string', default: '6' },
    seek: { type: 'string' },
    until: { type: 'string' },
    'start-timeout': { type: 'string', default: '30' },
    name: { type: 'string', default: 'play' },
    artifacts: { type: 'string', default: path.join(here, 'artifacts') },
  },
});
if (!opt.url) {
  console.error('usage: node play.mjs --url URL [--player hlsjs,native,file] ...');
  process.exit(2);
}
const players = opt.player.split(',').map((p) => p.trim()).filter(Boolean);
for (const p of players) {
  if (!['hlsjs', 'native', 'file'].includes(p)) {
    console.error(`unknown player ${p}`);
    process.exit(2);
  }
}
const watchMs = Number(opt.watch) * 1000;
const startTimeoutMs = Number(opt['start-timeout']) * 1000;
const until = opt.until === undefined ? null : Number(opt.until);
const seek = opt.seek === undefined ? null : opt.seek === 'middle' ? 'middle' : Number(opt.seek);
const artifacts = path.resolve(opt.artifacts);
fs.mkdirSync(artifacts, { recursive: true });

const log = (...a) => console.error(`[play ${opt.name}]`, ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>tapedeck browser test</title>
<style>
  body { margin: 0; background: #222; color: #eee; font: 13px monospace; }
  video { display: block; width: 640px; height: 360px; background: #000; }
  #status { padding: 4px 6px; white-space: pre; }
</style></head>
<body><video id="v" muted playsinline></video><div id="status">loading</div></body></html>`;

// Installed into the page before playback; keeps everything the test wants to read in window.__t.
function pageInstrument() {
  const v = document.getElementById('v');
  const t = (window.__t = { events: [], videoErrors: [], hlsErrors: [], hlsLog: [], waiting: 0 });
  const at = () => Math.round(performance.now());
  for (const e of ['loadedmetadata', 'canplay', 'playing', 'waiting', 'stalled', 'seeking', 'seeked', 'ended', 'pause']) {
    v.addEventListener(e, () => {
      if (e === 'waiting') t.waiting++;
      if (t.events.length < 200) t.events.push({ e, at: at(), ct: v.currentTime });
    });
  }
  v.addEventListener('error', () => {
    const me = v.error;
    t.videoErrors.push({ code: me && me.code, message: me && me.message, at: at() });
  });
  window.__status = () => {
    const h = window.__hls;
    const pd = h && h.playingDate ? h.playingDate.toISOString() : '';
    document.getElementById('status').textContent =
      `${window.__player}  t=${v.currentTime.toFixed(2)}  rs=${v.readyState}  ${v.paused ? 'paused' : 'playing'}` +
      (pd ? `\nplayingDate=${pd}  wall=${new Date().toISOString()}` : '');
  };
}

function pageStart({ player, url, lowLatency, catchUp }) {
  const v = document.getElementById('v');
  const t = window.__t;
  window.__player = player;
  const result = { player };
  result.canPlayType = {
    hls: v.canPlayType('application/vnd.apple.mpegurl'),
    mp4AvcAac: v.canPlayType('video/mp4; codecs="avc1.64001e,mp4a.40.2"'),
  };
  const tryPlay = () => v.play().catch((e) => t.hlsLog.push({ level: 'play()', msg: String(e) }));
  if (player === 'hlsjs') {
    const Hls = window.Hls;
    result.hlsjsVersion = Hls.version;
    result.mseSupported = Hls.isSupported();
    if (!result.mseSupported) return result;
    const keep = (level) => (...a) => {
      if (t.hlsLog.length < 100) t.hlsLog.push({ level, msg: a.map(String).join(' ').slice(0, 400) });
    };
    const noop = () => {};
    const hls = new Hls({
      lowLatencyMode: lowLatency,
      // hls.js plays up to this rate to get back to its target latency (default 1: never).
      ...(catchUp ? { maxLiveSyncPlaybackRate: catchUp } : {}),
      debug: { trace: noop, debug: noop, log: noop, info: noop, warn: keep('warn'), error: keep('error') },
    });
    window.__hls = hls;
    hls.on(Hls.Events.ERROR, (_ev, d) => {
      if (t.hlsErrors.length >= 50) return;
      t.hlsErrors.push({
        type: d.type,
        details: d.details,
        fatal: d.fatal,
        reason: d.reason || (d.error && String(d.error.message || d.error)) || null,
        url: (d.frag && d.frag.url) || (d.context && d.context.url) || d.url || null,
        responseCode: d.response ? d.response.code : null,
        at: Math.round(performance.now()),
        ct: v.currentTime,
      });
    });
    hls.on(Hls.Events.MANIFEST_PARSED, tryPlay);
    hls.attachMedia(v);
    hls.loadSource(url);
    result.supported = true;
  } else if (player === 'native') {
    result.supported = result.canPlayType.hls !== '';
    if (!result.supported) return result;
    v.src = url;
    tryPlay();
  } else {
    result.supported = true;
    v.src = url;
    tryPlay();
  }
  return result;
}

function pageSample() {
  const v = document.getElementById('v');
  const h = window.__hls;
  window.__status();
  const now = Date.now();
  const s = {
    wall: now,
    ct: Math.round(v.currentTime * 1000) / 1000,
    rs: v.readyState,
    paused: v.paused,
    rate: v.playbackRate,
    dur: Number.isFinite(v.duration) ? v.duration : v.duration === Infinity ? 'Infinity' : null,
  };
  const b = [];
  for (let i = 0; i < v.buffered.length; i++) b.push([+v.buffered.start(i).toFixed(3), +v.buffered.end(i).toFixed(3)]);
  s.buffered = b;
  let pdt = null;
  if (h && h.playingDate) pdt = h.playingDate.getTime();
  else if (!h && typeof v.getStartDate === 'function') {
    const sd = v.getStartDate().getTime();
    if (Number.isFinite(sd)) pdt = sd + v.currentTime * 1000;
  }
  if (pdt !== null) {
    s.pdt = pdt;
    s.latencyMs = now - pdt;
  }
  if (h) {
    if (Number.isFinite(h.latency)) s.hlsLatency = +h.latency.toFixed(3);
    if (Number.isFinite(h.targetLatency)) s.hlsTarget = +h.targetLatency.toFixed(3);
  }
  return s;
}

async function runOne(browserCtx, player) {
  const tag = `${opt.name}-${player}`;
  const page = await browserCtx.newPage();
  const r = {
    name: opt.name,
    player,
    url: opt.url,
    started: false,
    consoleErrors: [],
    consoleWarnings: [],
    pageErrors: [],
    httpErrors: [],
    failedRequests: [],
    mediaResponses: [],
    screenshots: [],
    samples: [],
  };
  const consoleLog = [];
  page.on('console', (m) => {
    const text = m.text();
    consoleLog.push(`${m.type()}: ${text}`);
    if (m.type() === 'error') r.consoleErrors.push(text.slice(0, 500));
    if (m.type() === 'warning') r.consoleWarnings.push(text.slice(0, 500));
  });
  page.on('pageerror', (e) => r.pageErrors.push(String(e).slice(0, 500)));
  page.on('requestfailed', (req) => {
    // A request the player itself cancels (hls.js aborting a load on seek) is not a failure.
    const why = req.failure() ? req.failure().errorText : '?';
    if (why !== 'net::ERR_ABORTED' && r.failedRequests.length < 20) r.failedRequests.push({ url: req.url(), why });
  });
  page.on('response', (resp) => {
    if (resp.status() >= 400 && r.httpErrors.length < 20) r.httpErrors.push({ url: resp.url(), status: resp.status() });
    // What the player fetched, with the Range it asked for and the status and type it got.
    if (r.mediaResponses.length < 60 && /^https?:/.test(resp.url())) {
      const req = resp.request();
      r.mediaResponses.push({
        url: resp.url().replace(/^https?:\/\/[^/]+/, ''),
        range: req.headers()['range'] || null,
        status: resp.status(),
        type: resp.headers()['content-type'] || null,
      });
    }
  });
  const shot = async (label) => {
    const file = path.join(artifacts, `${tag}-${label}.png`);
    try {
      await page.evaluate(() => window.__status && window.__status());
      await page.screenshot({ path: file, timeout: 15000 });
      r.screenshots.push(file);
    } catch (e) {
      log(`screenshot ${label} failed: ${e}`);
    }
  };

  try {
    await page.setContent(PAGE);
    if (player === 'hlsjs') await page.addScriptTag({ path: HLS_JS });
    await page.evaluate(pageInstrument);
    Object.assign(r, await page.evaluate(pageStart, {
      player,
      url: opt.url,
      lowLatency: opt['low-latency'],
      catchUp: opt['catch-up'] ? Number(opt['catch-up']) : null,
    }));
    if (!r.supported) {
      await shot('unsupported');
      return r;
    }

    // Wait for playback to start: time moving while not paused.
    const t0 = Date.now();
    let first = null;
    while (Date.now() - t0 < startTimeoutMs) {
      const s = await page.evaluate(pageSample);
      const fatal = await page.evaluate(() => window.__t.videoErrors.length > 0 || window.__t.hlsErrors.some((e) => e.fatal));
      if (fatal) break;
      if (first === null && s.rs >= 2 && !s.paused) first = s;
      if (first !== null && s.ct > first.ct + 0.1) {
        r.started = true;
        r.startupMs = Date.now() - t0;
        break;
      }
      await sleep(100);
    }
    await shot('start');

    if (r.started && seek !== null) {
      const s0 = await page.evaluate(pageSample);
      const dur = typeof s0.dur === 'number' ? s0.dur : null;
      const target = seek === 'middle' ? (dur === null ? null : dur / 2) : seek;
      r.seek = { target, durationBefore: s0.dur, from: s0.ct };
      if (target !== null) {
        const sk = await page.evaluate(async (target) => {
          const v = document.getElementById('v');
          const started = performance.now();
          const done = new Promise((resolve) => {
            v.addEventListener('seeked', () => resolve(true), { once: true });
            setTimeout(() => resolve(false), 20000);
          });
          v.currentTime = target;
          const seeked = await done;
          return { seeked, landed: v.currentTime, seekMs: Math.round(performance.now() - started) };
        }, target);
        Object.assign(r.seek, sk);
        await page.evaluate(() => document.getElementById('v').play().catch(() => {}));
        await shot('seeked');
      }
    }

    // Watch.
    const w0 = Date.now();
    while (r.started && Date.now() - w0 < watchMs) {
      const s = await page.evaluate(pageSample);
      s.sinceStart = Date.now() - w0;
      r.samples.push(s);
      if (until !== null && s.ct >= until) break;
      await sleep(SAMPLE_MS);
    }
    if (r.samples.length) {
      const a = r.samples[0];
      const b = r.samples[r.samples.length - 1];
      r.watchedMs = b.wall - a.wall;
      r.firstTime = a.ct;
      r.lastTime = b.ct;
      r.maxTime = Math.max(...r.samples.map((s) => s.ct));
      r.advanced = +(b.ct - a.ct).toFixed(3);
      if (b.pdt !== undefined) {
        r.firstPlayingDate = a.pdt !== undefined ? new Date(a.pdt).toISOString() : null;
        r.lastPlayingDate = new Date(b.pdt).toISOString();
      }
    }
    await shot('end');
    Object.assign(r, await page.evaluate(() => ({
      videoErrors: window.__t.videoErrors,
      hlsErrors: window.__t.hlsErrors,
      hlsLog: window.__t.hlsLog,
      waitingEvents: window.__t.waiting,
      events: window.__t.events,
    })));
    r.fatal = r.videoErrors.length > 0 || r.hlsErrors.some((e) => e.fatal);
  } catch (e) {
    r.harnessError = String(e && e.stack ? e.stack : e).slice(0, 1000);
  } finally {
    fs.writeFileSync(path.join(artifacts, `${tag}-console.log`), consoleLog.join('\n') + '\n');
    await page.close().catch(() => {});
  }
  return r;
}

async function main() {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tapedeck-chromium-'));
  const out = { name: opt.name, url: opt.url, artifacts, runs: [] };
  let ctx;
  try {
    ctx = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 640, height: 400 },
      timeout: 60000,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-quic',
        '--no-first-run',
        '--disable-sync',
        '--autoplay-policy=no-user-gesture-required',
      ],
    });
    out.browserVersion = ctx.browser() ? ctx.browser().version() : null;
    out.runs = await Promise.all(players.map((p) => runOne(ctx, p)));
  } catch (e) {
    out.harnessError = String(e && e.stack ? e.stack : e).slice(0, 2000);
  } finally {
    if (ctx) await ctx.close().catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
  fs.writeFileSync(path.join(artifacts, `${opt.name}-result.json`), JSON.stringify(out, null, 1));
  log(`artifacts in ${artifacts}`);
  process.stdout.write(JSON.stringify(out) + '\n');
}

await main();
