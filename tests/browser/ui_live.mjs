// The stream view's live delay and archive playback, in Chromium as it is or with its native HLS
// player taken away (what a browser without one, such as Firefox, has). Driven by tests/ui.rs,
// which starts the server and a live ffmpeg producer; prints ONE JSON line (see lib.mjs).
//
//   node ui_live.mjs --base URL --stream NAME --artifacts DIR [--no-native-hls]
//
// The delay is what the UI shows (wall clock minus the producer time of the frame on screen),
// sampled every 250 ms for 8 s; the same figure is also computed here from the position the UI
// shows. Then a click 5 s into the recording must play the archive from there, and "Go live"
// must return to live.

import { parseArgs } from 'node:util';
import { clickInSpan, expectArchiveAt, fail, out, playerState, runBrowser, setZoom, sleep, step, timelineState, waitFor } from './lib.mjs';

const { values: opt } = parseArgs({
  options: {
    base: { type: 'string' },
    stream: { type: 'string' },
    artifacts: { type: 'string' },
    'no-native-hls': { type: 'boolean', default: false },
  },
});
const base = opt.base.replace(/\/$/, '');
const noHls = opt['no-native-hls'];

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : null;
};

// Without native HLS: the element says it cannot play HLS, like Firefox's.
function hideNativeHls() {
  const orig = HTMLMediaElement.prototype.canPlayType;
  HTMLMediaElement.prototype.canPlayType = function canPlayType(type) {
    return /mpegurl/i.test(type) ? '' : orig.call(this, type);
  };
}

async function run(page, shot) {
  out.variant = noHls ? 'no native HLS' : 'Chromium as it is';
  out.m3u8Requests = 0;
  if (noHls) {
    // Any playlist request would mean the UI depends on HLS here: count it and refuse it.
    await page.route(/\.m3u8/, (r) => {
      out.m3u8Requests++;
      r.abort();
    });
  }
  await page.goto(`${base}/#/stream/${opt.stream}`);
  out.nativeHls = await page.evaluate(() => document.createElement('video').canPlayType('application/vnd.apple.mpegurl'));
  const l0 = await waitFor(page, 'live playback to start', () => {
    const v = document.getElementById('player');
    const m = document.getElementById('mode');
    return !!v && m && m.dataset.mode === 'live' && v.readyState >= 2 && !v.paused && v.currentTime > 0 && { ct: v.currentTime };
  }, null, 25000);
  if (!l0) return;
  // Let the player settle at the live edge, then sample.
  await sleep(3000);
  const ui = [];
  const own = [];
  for (let i = 0; i < 32; i++) {
    const s = await page.evaluate(() => ({ d: document.getElementById('delay').dataset.seconds, pos: document.getElementById('position').dataset.ms, now: Date.now(), ct: document.getElementById('player').currentTime }));
    if (s.d !== undefined) ui.push(Number(s.d));
    if (s.pos) own.push((s.now - Number(s.pos)) / 1000);
    await sleep(250);
  }
  const l1 = await page.evaluate(playerState);
  out.liveDelayS = median(ui);
  out.liveDelayOwnS = median(own);
  out.liveDelayMaxS = ui.length ? Math.max(...ui) : null;
  step('live delay', { variant: out.variant, medianS: out.liveDelayS, ownMedianS: out.liveDelayOwnS, maxS: out.liveDelayMaxS, samples: ui.length, shown: l1.delay });
  if (!(l1.ct - l0.ct > 8)) fail(`live playback advanced only ${(l1.ct - l0.ct).toFixed(2)} s in about 11 s`);
  if (out.liveDelayS === null) fail('the UI showed no live delay');
  else if (!(out.liveDelayS < 1)) fail(`live delay ${out.liveDelayS} s (${out.variant}); must be under 1 s`);
  await shot('live');

  // Archive: 5 s into the recording.
  await setZoom(page, '10 min');
  const tl = await page.evaluate(timelineState);
  const sp = tl.spans[tl.spans.length - 1];
  if (!sp) {
    fail('the timeline shows no recording');
    return;
  }
  const expected = await clickInSpan(page, sp, Math.min(0.5, 5000 / (sp.endMs - sp.startMs)));
  const a = await expectArchiveAt(page, 'archive click', expected, (sp.endMs - sp.startMs) / sp.w);
  if (a) {
    await sleep(2000);
    const a2 = await page.evaluate(playerState);
    if (!(a2.ct > a.ct + 1)) fail(`archive playback does not advance (${a.ct} → ${a2.ct})`);
    out.archive = { expectedMs: Math.round(expected), shownMs: a.posMs, errMs: Math.round(a.posMs - expected) };
    await shot('archive');
  }
  // Back to live (by itself when the archive ran into the live edge).
  if (await page.evaluate(() => !document.getElementById('go-live').disabled)) await page.click('#go-live');
  const back = await waitFor(page, 'live again after Go live', () => {
    const v = document.getElementById('player');
    return document.getElementById('mode').dataset.mode === 'live' && v.readyState >= 2 && !v.paused && document.getElementById('delay').dataset.seconds !== undefined;
  }, null, 15000);
  if (back) step('back to live');
  if (out.m3u8Requests) fail(`the UI requested ${out.m3u8Requests} HLS playlists in a browser without native HLS`);
}

await runBrowser(opt.artifacts, run, { initScript: noHls ? hideNativeHls : undefined });
