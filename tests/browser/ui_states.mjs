// The UI's states, one per run, each with a screenshot: what a new user sees when there is
// nothing yet, a stream that does not exist, a stream that is not live, a producer that stops,
// a codec the browser cannot decode, and a server with auth on. Driven by tests/ui.rs (which
// sets up the server and the media for the case); prints ONE JSON line (see lib.mjs).
//
//   node ui_states.mjs --base URL --artifacts DIR --case empty|unknown|idle|stopped|codec|auth
//                      [--stream NAME] [--key KEY]

import { parseArgs } from 'node:util';
import { fail, out, playerState, runBrowser, sleep, step, waitFor } from './lib.mjs';

const { values: opt } = parseArgs({
  options: {
    base: { type: 'string' },
    artifacts: { type: 'string' },
    case: { type: 'string' },
    stream: { type: 'string', default: 'cam1' },
    key: { type: 'string', default: '' },
  },
});
const base = opt.base.replace(/\/$/, '');
const name = opt.stream;


const cases = {
  // No streams: the overview shows a command that makes the first one.
  async empty(page, shot) {
    await page.goto(`${base}/`);
    const cmd = await waitFor(page, 'the first-stream command', (sel) => {
      const e = document.querySelector(sel);
      return e && e.offsetParent !== null && e.textContent;
    }, '#first-stream-cmd', 10000);
    step('empty overview', { cmd });
    if (cmd && !(cmd.includes('ffmpeg') && cmd.includes(`${base}/api/v1/streams/`) && cmd.includes('/ingest'))) fail(`the first-stream command is not a working ffmpeg command: ${cmd}`);
    await shot('empty-overview');
  },

  // A stream that does not exist: a not-found view, none of the stream page.
  async unknown(page, shot) {
    await page.goto(`${base}/#/stream/${name}`);
    const text = await waitFor(page, 'the not-found view', () => {
      const e = document.getElementById('not-found');
      return e && e.textContent;
    }, null, 10000);
    const rest = await page.evaluate(() => ['#go-live', '#timeline', '#clip-title', '#settings-title', '#player'].filter((s) => document.querySelector(s)));
    step('unknown stream', { text, drawn: rest });
    if (text && !text.includes(name)) fail(`the not-found view does not name the stream: ${text}`);
    if (rest.length) fail(`the not-found view still draws parts of a stream page: ${rest.join(', ')}`);
    await shot('unknown-stream');
  },

  // A stream with media but no producer: its last frame as the poster, an offer to play the end.
  async idle(page, shot) {
    await page.goto(`${base}/#/stream/${name}`);
    const st = await waitFor(page, 'the idle view with a poster', () => {
      const v = document.getElementById('player');
      const b = document.getElementById('play-recent');
      return v && v.poster && b && b.offsetParent !== null && { poster: v.poster, badge: document.querySelector('.stream-head .badge').dataset.status, mode: document.getElementById('mode').dataset.mode };
    }, null, 10000);
    if (!st) return;
    const img = await page.evaluate(async (url) => {
      const i = new Image();
      i.src = url;
      await i.decode();
      return { w: i.naturalWidth, h: i.naturalHeight };
    }, st.poster);
    step('idle view', { ...st, posterSize: img });
    if (st.badge !== 'idle') fail(`badge says ${st.badge} for an idle stream`);
    if (st.mode) fail(`the player bar says ${st.mode} for an idle stream`);
    if (!(img.w > 0)) fail('the poster frame does not load');
    await sleep(500); // the poster on screen
    await shot('idle-poster');
    await page.click('#play-recent');
    const a = await waitFor(page, 'the most recent minutes to play', () => {
      const v = document.getElementById('player');
      const p = document.getElementById('position');
      return document.getElementById('mode').dataset.mode === 'archive' && v.readyState >= 2 && !v.paused && p.dataset.ms && { posMs: Number(p.dataset.ms), ct: v.currentTime };
    }, null, 15000);
    if (a) {
      await sleep(1500);
      const a2 = await page.evaluate(playerState);
      step('playing the recent minutes', { from: new Date(a.posMs).toISOString(), ctAdvanced: a2.ct - a.ct });
      if (!(a2.ct > a.ct + 0.5)) fail('the recent minutes do not play');
      await shot('idle-playing-recent');
    }
  },

  // Watching live when the producer stops: badge and player bar both turn idle, no growing delay.
  async stopped(page, shot) {
    await page.goto(`${base}/#/stream/${name}`);
    const live = await waitFor(page, 'live playback', () => {
      const v = document.getElementById('player');
      return document.getElementById('mode').dataset.mode === 'live' && v.readyState >= 2 && !v.paused && document.getElementById('delay').dataset.seconds !== undefined;
    }, null, 25000);
    if (!live) return;
    step('live');
    const idle = await waitFor(page, 'the badge to turn idle after the producer stopped', () => document.querySelector('.stream-head .badge').dataset.status === 'idle', null, 45000);
    if (!idle) return;
    await sleep(4000); // a refresh or two later: nothing may contradict the badge
    const st = await page.evaluate(() => ({
      badge: document.querySelector('.stream-head .badge').dataset.status,
      mode: document.getElementById('mode').dataset.mode,
      modeText: document.getElementById('mode').textContent,
      delay: document.getElementById('delay').textContent,
      delaySeconds: document.getElementById('delay').dataset.seconds,
      msg: document.getElementById('player-msg').textContent,
      goLive: !document.getElementById('go-live').disabled,
    }));
    step('producer stopped', st);
    if (st.mode === 'live' || /LIVE/.test(st.modeText)) fail(`badge says idle but the player bar says ${st.modeText}`);
    if (/behind/.test(st.delay) || st.delaySeconds !== undefined) fail(`a "behind" figure is still shown after the producer stopped: ${st.delay}`);
    if (st.goLive) fail('Go live is enabled for an idle stream');
    await shot('producer-stopped');
  },

  // A codec this browser cannot decode: a plain sentence and the playlist link.
  async codec(page, shot) {
    await page.goto(`${base}/#/stream/${name}`);
    const st = await waitFor(page, 'the codec message', () => {
      const m = document.getElementById('player-msg');
      return m && !m.hidden && m.dataset.reason === 'codec' && { text: m.textContent, link: (document.getElementById('playlist-link') || {}).href };
    }, null, 15000);
    if (!st) return;
    await sleep(1000);
    const pos = await page.evaluate(() => document.getElementById('position').textContent);
    step('codec not supported', { ...st, position: pos });
    if (/PipelineStatus|DECODER_ERROR|DEMUXER/.test(st.text)) fail(`the message shows the browser's internal error: ${st.text}`);
    if (!/H\.265/.test(st.text)) fail(`the message does not name the codec: ${st.text}`);
    if (!st.link || !st.link.includes('/hls/master.m3u8')) fail(`no playlist link for an external player: ${st.link}`);
    if (/loading/.test(pos)) fail(`"${pos}" is stuck under the codec message`);
    await shot('codec-not-supported');
  },

  // Auth on: the page's own key form (no browser dialog), remembered, changed and forgotten.
  async auth(page, shot) {
    await page.goto(`${base}/`);
    const form = await waitFor(page, 'the key form', () => {
      const d = document.getElementById('key-dialog');
      const i = document.getElementById('key-input');
      return d && d.open && i && i.type;
    }, null, 10000);
    if (form !== 'password') fail(`the key field is a ${form} field, not a password field`);
    await shot('auth-key-form');
    // A wrong key: the form comes back and says so.
    await page.fill('#key-input', 'not-the-key');
    await page.click('#key-submit');
    const refused = await waitFor(page, 'the form to say the key was refused', () => {
      const d = document.getElementById('key-dialog');
      return d && d.open && /refused/.test(d.textContent);
    }, null, 10000);
    if (refused) await shot('auth-key-refused');
    await page.fill('#key-input', opt.key);
    await page.check('#key-remember');
    await page.click('#key-submit');
    const card = await waitFor(page, `the card of ${name} with its thumbnail`, (n) => {
      const c = document.querySelector(`.card[data-stream="${n}"]`);
      const img = c && c.querySelector('img.thumb-img');
      return !!img && !img.hidden && img.complete && img.naturalWidth > 0;
    }, name, 15000);
    step('key accepted', { card });
    await shot('auth-overview');
    // Remembered across a reload; the stream plays with it.
    await page.goto(`${base}/#/stream/${name}`);
    await page.reload();
    const played = await waitFor(page, 'the stream view with the remembered key', () => {
      const v = document.getElementById('player');
      const b = document.getElementById('play-recent');
      return !document.getElementById('key-dialog') && v && v.poster && b;
    }, null, 15000);
    if (played) {
      await page.click('#play-recent');
      const a = await waitFor(page, 'playback with the key', () => {
        const v = document.getElementById('player');
        return document.getElementById('mode').dataset.mode === 'archive' && v.readyState >= 2 && !v.paused && v.currentTime > 0;
      }, null, 15000);
      step('played with the key', { ok: Boolean(a) });
      await shot('auth-playing');
    }
    // Forget it: the form is back, and the page offers a way in if it is dismissed.
    const btn = await page.evaluate(() => document.getElementById('key-button').textContent);
    await page.click('#key-button');
    await waitFor(page, 'the key form from the top bar', () => !!document.getElementById('key-forget'), null, 5000);
    await page.click('#key-forget');
    await page.goto(`${base}/`);
    await page.reload();
    await waitFor(page, 'the key form after forgetting the key', () => {
      const d = document.getElementById('key-dialog');
      return d && d.open;
    }, null, 10000);
    await page.click('#key-cancel');
    const way = await waitFor(page, 'a way to enter a key after dismissing the form', () => {
      const b = document.getElementById('key-enter');
      return b && b.offsetParent !== null;
    }, null, 5000);
    step('forgotten', { keyButton: btn, wayBack: Boolean(way) });
    await shot('auth-dismissed');
    const stored = await page.evaluate(() => [localStorage.getItem('tapedeck.key'), sessionStorage.getItem('tapedeck.key')]);
    if (stored.some(Boolean)) fail('the key is still stored after "Forget key"');
  },
};

const run = cases[opt.case];
if (!run) throw new Error(`unknown --case ${opt.case}`);
out.case = opt.case;
await runBrowser(`${opt.artifacts}`, run, {
  // The states under test answer these on purpose.
  allowHttp: (url, status) => (opt.case === 'unknown' && status === 404) || (opt.case === 'auth' && status === 401),
});
