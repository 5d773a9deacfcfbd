// Drives tapedeck's web UI end to end in real Chromium (Debian's /usr/bin/chromium through
// playwright-core) and prints ONE JSON line on stdout: { failures: [...], steps: [...], ... }.
// Everything else goes to stderr. Driven by tests/ui.rs, which starts the server, uploads the
// two past sessions of the `--gap-stream`, and afterwards checks the downloaded clip with ffprobe.
//
//   node ui.mjs --base http://127.0.0.1:PORT --artifacts DIR --gap-stream NAME [--live-secs 40]
//
// Steps: overview → create a stream in the dialog → ffmpeg uploads to it (spawned here, -re,
// testsrc2 640x360 H.264 + AAC, 2 s GOP) → the card turns live with a thumbnail → stream view
// plays live (currentTime grows) → click a past point on the timeline → playback starts at that
// wall-clock time → drag a range (10 min zoom) → download clip.mp4 → the gap stream at every zoom
// level: two spans with a gap between them, both clickable. A screenshot per step; any console
// error, page error, failed request or HTTP error is a failure.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { GOP_MS, clickInSpan, expectArchiveAt, fail, log, out, playerState, runBrowser, setZoom, sleep, step, timelineState, waitFor } from './lib.mjs';

const { values: opt } = parseArgs({
  options: {
    base: { type: 'string' },
    artifacts: { type: 'string' },
    'gap-stream': { type: 'string', default: 'gap' },
    'live-stream': { type: 'string', default: 'cam1' },
    'live-secs': { type: 'string', default: '40' },
  },
});
const base = opt.base.replace(/\/$/, '');
const artifacts = path.resolve(opt.artifacts);
const LIVE = opt['live-stream'];
const GAP = opt['gap-stream'];

let ffmpeg = null;
function startProducer() {
  const args = [
    '-hide_banner', '-loglevel', 'error', '-re',
    '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=25',
    '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    '-t', opt['live-secs'],
    '-c:v', 'libx264', '-preset', 'veryfast', '-pix_fmt', 'yuv420p',
    '-g', '50', '-keyint_min', '50', '-sc_threshold', '0', '-c:a', 'aac',
    '-f', 'mp4', '-movflags', 'frag_keyframe+empty_moov+default_base_moof',
    '-method', 'PUT', `${base}/api/v1/streams/${LIVE}/ingest`,
  ];
  ffmpeg = spawn('ffmpeg', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  ffmpeg.stderr.on('data', (d) => log(`ffmpeg: ${String(d).trim()}`));
}

async function run(page, shot) {
  // 1. Overview.
  await page.goto(`${base}/`);
  await waitFor(page, 'the overview grid', () => !!document.getElementById('grid'), null, 10000);
  await waitFor(page, `the card of ${GAP}`, (n) => !!document.querySelector(`.card[data-stream="${n}"] img.thumb-img:not([hidden])`), GAP, 15000);
  await shot('overview');

  // 2. Create a stream through the dialog.
  await page.click('#new-stream');
  await page.fill('#create-name', LIVE);
  await page.fill('#create-retention', '24');
  await page.fill('#create-tags', 'site=lab, kind=test');
  await shot('create-dialog');
  await page.click('#create-submit');
  await waitFor(page, `the new card of ${LIVE}`, (n) => !!document.querySelector(`.card[data-stream="${n}"]`), LIVE, 10000);
  const created = await page.evaluate(async (n) => (await fetch(`/api/v1/streams/${n}`)).json(), LIVE);
  step('created', { retention_hours: created.retention_hours, tags: created.tags, status: created.status });
  if (created.retention_hours !== 24 || (created.tags || {}).site !== 'lab') fail(`stream created with ${JSON.stringify(created)}`);
  const cmd = await page.textContent(`.card[data-stream="${LIVE}"] code.cmd`);
  if (!cmd.includes(`${base}/api/v1/streams/${LIVE}/ingest`)) fail(`producer command names the wrong URL: ${cmd}`);
  await shot('created');

  // 3. Start the producer; the card turns live and shows a thumbnail.
  startProducer();
  const produceStart = Date.now();
  const live = await waitFor(page, 'the card to turn live with a thumbnail', (n) => {
    const c = document.querySelector(`.card[data-stream="${n}"]`);
    const img = c && c.querySelector('img.thumb-img');
    if (!c || c.dataset.status !== 'live' || !img || img.hidden || !img.complete || img.naturalWidth === 0) return false;
    return { badge: c.querySelector('.badge').textContent, width: img.naturalWidth, codecs: c.querySelector('.codecs').textContent };
  }, LIVE, 30000);
  step('card live', live || {});
  await page.click(`.card[data-stream="${LIVE}"] details.producer summary`);
  await sleep(300);
  await shot('overview-live');
  fs.copyFileSync(out.screenshots[out.screenshots.length - 1], path.join(artifacts, 'overview.png'));

  // 4. Stream view: live playback (three segments listed first; Chromium's player wants them).
  const since = Date.now() - produceStart;
  if (since < 8000) await sleep(8000 - since);
  await page.click(`.card[data-stream="${LIVE}"] a.name`);
  const l0 = await waitFor(page, 'live playback to start', () => {
    const v = document.getElementById('player');
    const m = document.getElementById('mode');
    return !!v && m.dataset.mode === 'live' && v.readyState >= 2 && !v.paused && v.currentTime > 0.2 && { ct: v.currentTime };
  }, null, 25000);
  if (l0) {
    await sleep(4000);
    const l1 = await page.evaluate(playerState);
    step('live playing', { ctBefore: l0.ct, ctAfter: l1.ct, position: l1.posText, delay: l1.delay });
    if (!(l1.ct - l0.ct >= 2.5)) fail(`live currentTime advanced only ${(l1.ct - l0.ct).toFixed(2)} s in 4 s`);
    if (!l1.posMs) fail('live view shows no wall-clock position');
    else if (Math.abs(Date.now() - l1.posMs) > 20000) fail(`live position ${l1.posText} is not near now`);
    if (!/behind/.test(l1.delay)) fail(`no live delay shown (${l1.delay})`);
    out.liveDelay = l1.delay;
  }
  await shot('stream-live');

  // 5. Click a past point of the live stream's recording (10 min zoom: 2 px a second).
  await setZoom(page, '10 min');
  let tl = await page.evaluate(timelineState);
  if (tl.spans.length !== 1) fail(`live stream: expected one span, timeline shows ${tl.spans.length}`);
  if (tl.spans.length) {
    const sp = tl.spans[tl.spans.length - 1];
    // About 5 s into the recording.
    const frac = Math.min(0.5, 5000 / (sp.endMs - sp.startMs));
    const expected = await clickInSpan(page, sp, frac);
    step('clicked past point', { at: new Date(expected).toISOString(), spanMs: sp.endMs - sp.startMs });
    const a = await expectArchiveAt(page, 'live stream', expected, (sp.endMs - sp.startMs) / sp.w);
    if (a) out.archiveClick = { expected, shown: a.posMs, text: a.posText };
    await sleep(1500);
    const a2 = await page.evaluate(playerState);
    if (a && !(a2.ct > a.ct)) fail(`archive playback does not advance (${a.ct} → ${a2.ct})`);
    const head = await page.evaluate(() => {
      const h = document.querySelector('.tl-playhead');
      return h && !h.hidden ? Number(h.dataset.ms) : null;
    });
    if (head === null || Math.abs(head - a2.posMs) > 1000) fail(`playhead (${head}) does not follow playback (${a2.posMs})`);
    await shot('stream-archive');

    // 6. Drag a range inside the recording and download the clip.
    tl = await page.evaluate(timelineState);
    const s2 = tl.spans[tl.spans.length - 1];
    const xa = s2.x0 + s2.w * 0.25;
    const xb = s2.x0 + s2.w * 0.75;
    await page.mouse.move(xa, s2.y);
    await page.mouse.down();
    await page.mouse.move((xa + xb) / 2, s2.y, { steps: 4 });
    await page.mouse.move(xb, s2.y, { steps: 4 });
    await page.mouse.up();
    const sel = await waitFor(page, 'a clip link for the dragged range', () => {
      const a = document.getElementById('clip-download');
      return a.getAttribute('href') && { href: a.href, startMs: Number(a.dataset.startMs), endMs: Number(a.dataset.endMs), info: document.getElementById('clip-info').textContent };
    }, null, 5000);
    const stillArchive = await page.evaluate(playerState);
    if (stillArchive.requestedMs !== a2.requestedMs) fail('dragging a range also started playback (a drag must not be a click)');
    if (sel) {
      step('selected', sel);
      out.clip = { startMs: sel.startMs, endMs: sel.endMs, expectedSecs: (sel.endMs - sel.startMs) / 1000 };
      await shot('stream-selection', true);
      fs.copyFileSync(out.screenshots[out.screenshots.length - 1], path.join(artifacts, 'stream-view.png'));
      const [download] = await Promise.all([page.waitForEvent('download', { timeout: 30000 }), page.click('#clip-download')]);
      const file = path.join(artifacts, 'clip.mp4');
      await download.saveAs(file);
      out.clip.file = file;
      out.clip.suggested = download.suggestedFilename();
      step('downloaded clip', { file, bytes: fs.statSync(file).size, suggested: out.clip.suggested });

      // Hold the range, see it listed, remove it.
      await page.fill('#hold-reason', 'ui test');
      await page.click('#hold-add');
      const held = await waitFor(page, 'the hold to be listed', () => document.querySelectorAll('#holds li[data-id]').length === 1, null, 5000);
      if (held) {
        await shot('hold');
        await page.click('#holds li[data-id] button');
        await waitFor(page, 'the hold to be removed', () => document.querySelectorAll('#holds li[data-id]').length === 0, null, 5000);
        step('hold placed and removed');
      }
    }
  }

  // 7. The gap stream: two sessions with a gap, at every zoom level.
  await page.goto(`${base}/#/stream/${GAP}`);
  await waitFor(page, 'the gap stream view', () => !!document.querySelector('.tl-track') && document.querySelectorAll('.tl-span').length > 0, null, 10000);
  const zooms = await page.evaluate(() => [...document.querySelectorAll('button.zoom')].map((b) => b.dataset.zoom));
  out.zooms = [];
  let hovered = false;
  for (const z of zooms) {
    await setZoom(page, z);
    const t = await page.evaluate(timelineState);
    const rec = { zoom: z, spans: t.spans.map((s) => ({ x0: +s.x0.toFixed(1), w: +s.w.toFixed(1) })), gaps: t.gaps.length, hit: t.hit };
    out.zooms.push(rec);
    if (t.spans.length !== 2) {
      fail(`${z}: expected two spans, got ${t.spans.length}`);
      continue;
    }
    const [a, b] = t.spans;
    const gap = t.gaps.find((g) => g.x0 >= a.x1 - 0.5 && g.x1 <= b.x0 + 0.5);
    if (!gap || b.x0 - a.x1 < 1) fail(`${z}: no visible gap between the spans (${JSON.stringify(rec)})`);
    if (!t.hit.every(Boolean)) fail(`${z}: a span is covered by something else (${JSON.stringify(rec)})`);
    if (!hovered) {
      // Hover thumbnail from the frames API.
      await page.mouse.move(a.x0 + a.w / 2, a.y);
      const img = await waitFor(page, 'a hover thumbnail', () => {
        const i = document.querySelector('.tl-hover img');
        return !!i && i.complete && i.naturalWidth > 0 && !document.querySelector('.tl-hover').hidden && { w: i.naturalWidth, h: i.naturalHeight };
      }, null, 10000);
      step('hover thumbnail', img || {});
      await shot(`gap-hover-${z.replace(/\s/g, '')}`);
      hovered = true;
    }
    for (const [i, s] of [[1, b], [0, a]]) {
      const expected = await clickInSpan(page, s, 0.5);
      const st = await expectArchiveAt(page, `${z} span ${i + 1}`, expected, (s.endMs - s.startMs) / s.w);
      if (st && !(st.posMs >= s.startMs - GOP_MS && st.posMs <= s.endMs + GOP_MS)) fail(`${z}: clicking span ${i + 1} played ${st.posText}, outside it`);
    }
    await shot(`gap-${z.replace(/\s/g, '')}`);
  }

  // 8. Settings: change retention and tags.
  await page.fill('#set-hours', '48');
  await page.fill('#set-tags', 'site=yard');
  await page.click('#settings-save');
  await sleep(800);
  const patched = await page.evaluate(async (n) => (await fetch(`/api/v1/streams/${n}`)).json(), GAP);
  if (patched.retention_hours !== 48 || (patched.tags || {}).site !== 'yard') fail(`settings not saved: ${JSON.stringify({ h: patched.retention_hours, t: patched.tags })}`);
  // Phone width.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${base}/#/`);
  await sleep(1500);
  await shot('overview-phone');
  await page.goto(`${base}/#/stream/${LIVE}`);
  await sleep(2500);
  await shot('stream-phone', true);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 2) fail(`the stream view is ${overflow} px wider than a phone screen`);

}

await runBrowser(artifacts, run, { cleanup: () => ffmpeg && ffmpeg.kill('SIGKILL') });
