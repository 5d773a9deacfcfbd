// Plays a live stream in tapedeck's web UI through the bundled hls.js (forced with
// `?player=hlsjs`, the path browsers without native HLS take) in Debian's Chromium, and prints
// ONE JSON line: { hlsjs, advanced, errors }. Driven by tests/ui.rs.
//
//   node ui_hlsjs.mjs --base http://127.0.0.1:PORT --stream NAME --artifacts DIR

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

const { values: opt } = parseArgs({
  options: { base: { type: 'string' }, stream: { type: 'string' }, artifacts: { type: 'string' } },
});
const CHROMIUM = process.env.TAPEDECK_CHROMIUM || '/usr/bin/chromium';
fs.mkdirSync(opt.artifacts, { recursive: true });
const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tapedeck-ui-hlsjs-'));
const out = { hlsjs: false, advanced: 0, errors: [] };
const ctx = await chromium.launchPersistentContext(userDataDir, {
  executablePath: CHROMIUM,
  headless: true,
  viewport: { width: 1280, height: 900 },
  timeout: 60000,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-quic', '--no-first-run', '--disable-sync',
    '--autoplay-policy=no-user-gesture-required',
  ],
});
try {
  const page = ctx.pages()[0] || (await ctx.newPage());
  page.on('console', (m) => { if (m.type() === 'error') out.errors.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => out.errors.push(`page: ${e.message}`));
  await page.goto(`${opt.base}/?player=hlsjs#/stream/${encodeURIComponent(opt.stream)}`);
  await page.waitForFunction(() => typeof window.Hls === 'function', null, { timeout: 20000 });
  out.hlsjs = true;
  await page.waitForFunction(() => document.querySelector('video') && document.querySelector('video').currentTime > 0.5, null, { timeout: 30000 });
  const t1 = await page.evaluate(() => document.querySelector('video').currentTime);
  await page.waitForTimeout(5000);
  const t2 = await page.evaluate(() => document.querySelector('video').currentTime);
  out.advanced = t2 - t1;
  await page.screenshot({ path: path.join(opt.artifacts, 'hlsjs-live.png') });
} catch (e) {
  out.errors.push(`run: ${e.message}`);
} finally {
  await ctx.close();
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
console.log(JSON.stringify(out));
