// Shared by the browser scripts here: Chromium through playwright-core with every error recorded,
// waiting on page conditions, and reading the tapedeck UI's player and timeline.

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const CHROMIUM = process.env.TAPEDECK_CHROMIUM || '/usr/bin/chromium';
/// The GOP of the test producers: what "±1 GOP" means.
export const GOP_MS = 2000;

export const t0 = Date.now();
export const log = (...a) => console.error(`[ui +${((Date.now() - t0) / 1000).toFixed(1)}s]`, ...a);
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const out = { failures: [], steps: [], screenshots: [], consoleErrors: [], pageErrors: [], httpErrors: [], failedRequests: [], basicChallenges: [], dialogs: [] };
export const fail = (msg) => {
  log(`FAIL: ${msg}`);
  out.failures.push(msg);
};
export const step = (name, data = {}) => {
  log(name, JSON.stringify(data));
  out.steps.push({ name, at: Date.now() - t0, ...data });
};

export async function waitFor(page, what, fn, arg, timeoutMs = 20000) {
  try {
    const h = await page.waitForFunction(fn, arg, { timeout: timeoutMs, polling: 200 });
    return await h.jsonValue();
  } catch {
    fail(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    return null;
  }
}

/// Launches Chromium, records every console error, page error, failed request and HTTP error in
/// `out`, runs `run(page, shot)`, then writes `result.json` to `artifacts` and prints `out` as ONE
/// JSON line on stdout. `opts.args`: extra Chromium flags; `opts.initScript`: a function run in
/// every page before its own scripts; `opts.allowHttp(url, status)`: HTTP errors the run expects;
/// `opts.cleanup()`: called at the end, whatever happened.
export async function runBrowser(artifactsDir, run, opts = {}) {
  const artifacts = path.resolve(artifactsDir);
  fs.mkdirSync(artifacts, { recursive: true });
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tapedeck-ui-'));
  let ctx;
  try {
    ctx = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1280, height: 900 },
      acceptDownloads: true,
      timeout: 60000,
      args: [
        '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
        '--disable-component-update', '--disable-quic', '--no-first-run', '--disable-sync',
        '--autoplay-policy=no-user-gesture-required',
        ...(opts.args || []),
      ],
    });
    if (opts.initScript) await ctx.addInitScript(opts.initScript);
    out.browserVersion = ctx.browser() ? ctx.browser().version() : null;
    const page = ctx.pages()[0] || (await ctx.newPage());
    const consoleLog = [];
    page.on('console', (m) => {
      consoleLog.push(`${m.type()}: ${m.text()}`);
      // Chromium logs every error response too; those the run expects are not errors.
      const status = (m.text().match(/responded with a status of (\d+)/) || [])[1];
      const expected = status && opts.allowHttp && opts.allowHttp(m.location().url || '', Number(status));
      if (m.type() === 'error' && !expected) out.consoleErrors.push(m.text().slice(0, 500));
    });
    page.on('pageerror', (e) => out.pageErrors.push(String(e).slice(0, 500)));
    page.on('requestfailed', (req) => {
      const why = req.failure() ? req.failure().errorText : '?';
      // Media loads the player or the page cancels (seeking, switching source) are not failures.
      if (why !== 'net::ERR_ABORTED') out.failedRequests.push({ url: req.url(), why });
    });
    page.on('response', (r) => {
      // A Basic challenge to the page's own requests is what raises the browser's login dialog.
      if (r.headers()['www-authenticate']) out.basicChallenges.push(r.url());
      if (r.status() >= 400 && !(opts.allowHttp && opts.allowHttp(r.url(), r.status()))) out.httpErrors.push({ url: r.url(), status: r.status() });
    });
    // window.alert/prompt/confirm: the UI has its own forms.
    page.on('dialog', (d) => {
      out.dialogs.push(`${d.type()}: ${d.message()}`);
      d.dismiss().catch(() => {});
    });
    let shotN = 0;
    const shot = async (label, fullPage = false) => {
      const file = path.join(artifacts, `${String(++shotN).padStart(2, '0')}-${label}.png`);
      try {
        await page.screenshot({ path: file, timeout: 15000, fullPage });
        out.screenshots.push(file);
      } catch (e) {
        log(`screenshot ${label} failed: ${e}`);
      }
      return file;
    };
    try {
      await run(page, shot);
      if (out.consoleErrors.length) fail(`browser console errors: ${JSON.stringify(out.consoleErrors)}`);
      if (out.pageErrors.length) fail(`page errors: ${JSON.stringify(out.pageErrors)}`);
      if (out.httpErrors.length) fail(`HTTP errors: ${JSON.stringify(out.httpErrors)}`);
      if (out.failedRequests.length) fail(`failed requests: ${JSON.stringify(out.failedRequests)}`);
      if (out.basicChallenges.length) fail(`responses with a Basic challenge (the browser's login dialog): ${JSON.stringify(out.basicChallenges)}`);
      if (out.dialogs.length) fail(`the page opened browser dialogs: ${JSON.stringify(out.dialogs)}`);
    } finally {
      fs.writeFileSync(path.join(artifacts, 'console.log'), consoleLog.join('\n') + '\n');
    }
  } catch (e) {
    out.harnessError = String(e && e.stack ? e.stack : e).slice(0, 2000);
  } finally {
    if (opts.cleanup) opts.cleanup();
    if (ctx) await ctx.close().catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
  out.elapsedMs = Date.now() - t0;
  fs.writeFileSync(path.join(artifacts, 'result.json'), JSON.stringify(out, null, 1));
  process.stdout.write(JSON.stringify(out) + '\n');
}


// The video element's state and what the UI shows.
export const playerState = () => {
  const v = document.getElementById('player');
  const p = document.getElementById('position');
  const m = document.getElementById('mode');
  return {
    ct: v ? v.currentTime : null,
    paused: v ? v.paused : null,
    rs: v ? v.readyState : null,
    src: v ? v.getAttribute('src') : null,
    mode: m ? m.dataset.mode : null,
    posMs: p && p.dataset.ms ? Number(p.dataset.ms) : null,
    posText: p ? p.textContent : null,
    requestedMs: p && p.dataset.requestedMs ? Number(p.dataset.requestedMs) : null,
    delay: (document.getElementById('delay') || {}).textContent || '',
    msg: (document.getElementById('player-msg') || {}).textContent || '',
  };
};

// Geometry and data of the drawn timeline.
export const timelineState = () => {
  const track = document.querySelector('.tl-track');
  const r = track.getBoundingClientRect();
  const box = (e) => {
    const b = e.getBoundingClientRect();
    return { x0: b.left, x1: b.right, y: b.top + b.height / 2, w: b.width, startMs: Number(e.dataset.startMs), endMs: Number(e.dataset.endMs) };
  };
  const spans = [...track.querySelectorAll('.tl-span')].map(box);
  const gaps = [...track.querySelectorAll('.tl-gap')].map(box);
  // What is under the middle of each span (is it the span itself, i.e. clickable?).
  const hit = [...track.querySelectorAll('.tl-span')].map((e) => {
    const b = e.getBoundingClientRect();
    return document.elementFromPoint(b.left + b.width / 2, b.top + b.height / 2) === e;
  });
  return { track: { x0: r.left, x1: r.right, y: r.top + r.height / 2, startMs: Number(track.dataset.startMs), endMs: Number(track.dataset.endMs) }, spans, gaps, hit };
};

// Clicks x within a span button and returns the wall-clock time that point stands for.
export async function clickInSpan(page, span, frac) {
  const x = span.x0 + Math.max(1, Math.min(span.w - 1, span.w * frac));
  const expected = span.startMs + ((x - span.x0) / span.w) * (span.endMs - span.startMs);
  await page.mouse.click(x, span.y);
  return expected;
}

// After a click on the timeline: archive playback must start and show `expected` (± 1 GOP).
export async function expectArchiveAt(page, what, expected, pixelMs) {
  // The UI names the time it was asked for at once and shows a position once the new source plays.
  const st = await waitFor(page, `${what}: archive playback to start`, (expected) => {
    const v = document.getElementById('player');
    const p = document.getElementById('position');
    const m = document.getElementById('mode');
    if (!v || Math.abs(Number(p.dataset.requestedMs) - expected) > 5000) return false;
    if (m.dataset.mode !== 'archive' || v.readyState < 2 || v.paused || !p.dataset.ms) return false;
    return { ct: v.currentTime, posMs: Number(p.dataset.ms), requestedMs: Number(p.dataset.requestedMs) };
  }, expected, 20000);
  if (!st) return null;
  const s1 = await page.evaluate(playerState);
  const err = s1.posMs - expected;
  step(`${what}: playing archive`, { requested: new Date(st.requestedMs).toISOString(), expected: new Date(expected).toISOString(), shown: new Date(s1.posMs).toISOString(), posText: s1.posText, errMs: Math.round(err), ct: s1.ct });
  // The UI turns the click into a time to within a pixel (a span narrower than MIN_SPAN_PX is
  // widened, so one pixel can stand for seconds at coarse zoom levels) ...
  if (Math.abs(st.requestedMs - expected) > pixelMs + 250) {
    fail(`${what}: clicked ${new Date(expected).toISOString()} but the UI asked for ${new Date(st.requestedMs).toISOString()} (one pixel is ${Math.round(pixelMs)} ms)`);
  }
  // ... and playback starts at that wall-clock time, ±1 GOP (first position sample after start).
  if (Math.abs(st.posMs - st.requestedMs) > GOP_MS) {
    fail(`${what}: asked for ${new Date(st.requestedMs).toISOString()}, playback started at ${new Date(st.posMs).toISOString()} (${Math.round(st.posMs - st.requestedMs)} ms off; allowed ±${GOP_MS} ms)`);
  }
  return s1;
}

export async function setZoom(page, label) {
  await page.click(`button.zoom[data-zoom="${label}"]`);
  await waitFor(page, `zoom ${label}`, (label) => {
    const b = document.querySelector(`button.zoom[data-zoom="${label}"]`);
    const t = document.querySelector('.tl-track');
    return b.getAttribute('aria-pressed') === 'true' && Number(t.dataset.endMs) - Number(t.dataset.startMs) > 0;
  }, label, 5000);
  await sleep(600); // the timeline request for the new window
}

