// The feed player: plays a stream's follow feed (`/media?start=…`, one fMP4 response: the init,
// then every fragment) through Media Source Extensions.
//
// Why not HLS: the feed delivers each fragment the moment it is durable, over one response, so
// live runs a fragment behind the producer in every MSE browser (Chromium, Firefox, Edge,
// Safari on macOS), with nothing bundled. Chromium's built-in HLS player does not do LL-HLS
// (it sat 6 s behind); LL-HLS stays for Safari on iOS and for external players.
//
// The feed puts a top-level `free` box before each fragment holding
// `{"fragment":N,"producer_time_us":T,"media_time_us":M,"duration_us":D}`. Those anchors map
// the video's clock to producer time (the "behind" figure, the timeline's playhead) and say
// where to resume (`after:N`) when a response ends. An empty `free` box is the feed's
// keep-alive at the live edge.

/// Buffered media kept ahead of the playhead before the player stops reading the response
/// (the server then sends no faster: TCP backpressure, nothing piles up in the page).
const MAX_AHEAD_S = 30;
/// Media kept behind the playhead (for a short look back); older media is removed from the buffer.
const KEEP_BEHIND_S = 30;
/// Live: how far behind the newest buffered media the playhead is held. A little above zero so
/// that playback does not stall between fragments that arrive a few hundred ms apart.
const LIVE_TARGET_LAG_S = 0.25;
/// Live: above this lag the player plays slightly faster to catch up; above the jump lag (the
/// start, when the feed sends the newest GOP from disk at once, or after a stall) it seeks.
const LIVE_CATCH_UP_LAG_S = 0.5;
const LIVE_JUMP_LAG_S = 1.0;
/// Reconnect delay after a dropped response while following live.
const RECONNECT_MS = 1000;

/// The error for a codec the browser cannot decode (the caller says it in plain words).
export class UnsupportedCodec extends Error {
  constructor(codecs) {
    super(`this browser cannot decode ${codecs}`);
    this.codecs = codecs;
  }
}

/// Whether this browser can play the feed at all (Media Source Extensions).
export function feedPlayerSupported() {
  return Boolean(window.ManagedMediaSource || window.MediaSource);
}

/// Whether MSE can decode these RFC 6381 codecs (`avc1.64001f,mp4a.40.2`).
export function codecsSupported(codecs) {
  const MS = window.ManagedMediaSource || window.MediaSource;
  return Boolean(MS && codecs && MS.isTypeSupported(`video/mp4; codecs="${codecs}"`));
}

/// Splits a byte stream into top-level ISO-BMFF boxes, however the chunks fall.
class BoxSplitter {
  constructor() {
    this.buf = new Uint8Array(0);
  }

  push(chunk) {
    const b = new Uint8Array(this.buf.length + chunk.length);
    b.set(this.buf, 0);
    b.set(chunk, this.buf.length);
    this.buf = b;
  }

  /// The complete boxes received so far, as {type, bytes}.
  take() {
    const out = [];
    let at = 0;
    const dv = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength);
    while (this.buf.length - at >= 8) {
      let size = dv.getUint32(at);
      let header = 8;
      if (size === 1) {
        if (this.buf.length - at < 16) break;
        size = Number(dv.getBigUint64(at + 8));
        header = 16;
      }
      if (size < header) throw new Error(`malformed box in the feed (size ${size})`);
      if (this.buf.length - at < size) break;
      const type = String.fromCharCode(...this.buf.subarray(at + 4, at + 8));
      out.push({ type, bytes: this.buf.subarray(at, at + size), header });
      at += size;
    }
    if (at > 0) this.buf = this.buf.slice(at);
    return out;
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export class FeedPlayer {
  /// `video`: the element to play in. `opts.headers()`: extra request headers (the API key).
  /// `opts.codecs()`: the stream's current codecs (asked again when an init changes).
  /// `opts.onError(err)`: playback cannot go on. A non-following feed ends as an element's `ended`.
  constructor(video, opts) {
    this.video = video;
    this.opts = opts;
    this.anchors = []; // {mediaS, producerMs, durS} in play order
    this.stopped = false;
    this.lastFragment = null;
    this.offsetS = 0; // where the current response's timeline 0 sits on the video's clock
    this.appendedEndS = 0; // end of the newest media appended, on the video's clock
    this.live = false;
  }

  /// Starts playing `feedUrl` (a `/media?…` URL). `live`: hold the playhead at the live edge and
  /// follow; otherwise play from `seekToMs` (producer time), if given, at normal speed.
  async start(feedUrl, { live, seekToMs, codecs }) {
    this.feedUrl = feedUrl;
    this.live = live;
    this.seekToMs = seekToMs ?? null;
    if (!codecsSupported(codecs)) throw new UnsupportedCodec(codecs || 'this stream');
    this.codecs = codecs;
    const MS = window.ManagedMediaSource || window.MediaSource;
    this.ms = new MS();
    // Safari's ManagedMediaSource only plays with remote playback off.
    if (window.ManagedMediaSource) this.video.disableRemotePlayback = true;
    this.objectUrl = URL.createObjectURL(this.ms);
    this.video.src = this.objectUrl;
    await new Promise((resolve) => this.ms.addEventListener('sourceopen', resolve, { once: true }));
    if (this.stopped) return;
    this.sb = this.ms.addSourceBuffer(`video/mp4; codecs="${codecs}"`);
    this.run(feedUrl);
  }

  stop() {
    this.stopped = true;
    if (this.abort) this.abort.abort();
    if (this.objectUrl) URL.revokeObjectURL(this.objectUrl);
    this.video.removeAttribute('src');
    this.video.load();
    this.video.playbackRate = 1;
  }

  /// Producer time (ms) of the video's current position, or null before the first fragment.
  producerMsAt(t = this.video.currentTime) {
    let a = null;
    for (const x of this.anchors) {
      if (x.mediaS <= t + 1e-3) a = x;
      else break;
    }
    if (!a) return null;
    return a.producerMs + Math.min(Math.max(t - a.mediaS, 0), a.durS) * 1000;
  }

  /// Seconds between the playhead and the newest media in the buffer.
  lagS() {
    const b = this.video.buffered;
    return b.length ? b.end(b.length - 1) - this.video.currentTime : 0;
  }

  /// Reads responses until stopped: a following feed is resumed with `after:N` when its
  /// response ends (a new init) or drops; a non-following one ends when a request brings nothing.
  async run(url) {
    let firstRequest = true;
    while (!this.stopped) {
      let got = 0;
      try {
        got = await this.readResponse(url);
      } catch (e) {
        if (this.stopped) return;
        if (e.fatal || !this.live) {
          this.opts.onError(e);
          return;
        }
        // A dropped connection while following live: resume exactly where it stopped.
        await sleep(RECONNECT_MS);
      }
      if (this.stopped) return;
      if (this.lastFragment !== null && got > 0) {
        try {
          await this.followCodecs();
        } catch (e) {
          this.opts.onError(e);
          return;
        }
      }
      if (!this.live && got === 0 && !firstRequest) {
        await this.endOfStream();
        return;
      }
      firstRequest = false;
      if (this.lastFragment === null) {
        if (!this.live) {
          await this.endOfStream();
          return;
        }
        // Nothing recorded yet (or it expired): wait and ask again.
        await sleep(RECONNECT_MS);
        continue;
      }
      // A response ends before a new init (checked above: its codecs may differ).
      url = this.resumeUrl();
    }
  }

  /// Switches the source buffer to the stream's current codecs when they changed.
  async followCodecs() {
    let codecs;
    try {
      codecs = await this.opts.codecs();
    } catch {
      return; // the next response's own errors say what is wrong
    }
    if (!codecs || codecs === this.codecs) return;
    if (!codecsSupported(codecs) || typeof this.sb.changeType !== 'function') {
      const e = new UnsupportedCodec(codecs);
      e.fatal = true;
      throw e;
    }
    await this.idle();
    this.sb.changeType(`video/mp4; codecs="${codecs}"`);
    this.codecs = codecs;
  }

  resumeUrl() {
    const u = new URL(this.feedUrl, location.href);
    u.searchParams.set('start', `after:${this.lastFragment}`);
    return u.pathname + u.search;
  }

  /// All media is in the buffer: the element fires `ended` when playback reaches its end.
  async endOfStream() {
    await this.idle();
    if (!this.positioned) this.position(true);
    if (this.ms.readyState === 'open') this.ms.endOfStream();
  }

  /// One response; returns how many fragments it brought.
  async readResponse(url) {
    this.abort = new AbortController();
    const r = await fetch(url, { headers: this.opts.headers(), signal: this.abort.signal });
    if (!r.ok) {
      let msg = `${r.status} ${r.statusText}`;
      try {
        const e = (await r.json()).error;
        if (e) msg = e.message;
      } catch {
        /* not JSON */
      }
      const err = new Error(msg);
      err.fatal = r.status >= 400 && r.status < 500;
      err.status = r.status;
      throw err;
    }
    // Each response's timeline starts at 0: place it right after what is already buffered.
    this.offsetS = this.appendedEndS;
    const reader = r.body.getReader();
    const split = new BoxSplitter();
    let pending = []; // boxes of the fragment (or init) being collected
    let marker = null;
    let fragments = 0;
    for (;;) {
      // Flow control: read no further ahead of the playhead than MAX_AHEAD_S.
      while (!this.stopped && this.appendedEndS - this.video.currentTime > MAX_AHEAD_S) await sleep(250);
      if (this.stopped) {
        reader.cancel().catch(() => {});
        return fragments;
      }
      const { value, done } = await reader.read();
      if (done) return fragments;
      split.push(value);
      for (const box of split.take()) {
        if (box.type === 'free' || box.type === 'skip') {
          // An anchor before a fragment, or an empty keep-alive.
          if (box.bytes.length > box.header) {
            try {
              marker = JSON.parse(new TextDecoder().decode(box.bytes.subarray(box.header)));
            } catch {
              marker = null;
            }
          }
          continue;
        }
        pending.push(box.bytes);
        if (box.type === 'moov') {
          await this.append(pending);
          pending = [];
        } else if (box.type === 'mdat') {
          if (marker) {
            const mediaS = this.offsetS + marker.media_time_us / 1e6;
            const durS = marker.duration_us / 1e6;
            this.anchors.push({ mediaS, producerMs: marker.producer_time_us / 1000, durS });
            this.lastFragment = marker.fragment;
            this.appendedEndS = Math.max(this.appendedEndS, mediaS + durS);
          }
          await this.append(pending, this.offsetS);
          pending = [];
          marker = null;
          fragments++;
          this.afterAppend();
        }
      }
    }
  }

  /// Appends bytes to the source buffer, making room behind the playhead when it is full.
  /// `offsetS`, for a media segment: where its response's timeline 0 sits on the video's clock.
  async append(parts, offsetS = null) {
    const size = parts.reduce((n, p) => n + p.length, 0);
    const bytes = new Uint8Array(size);
    let at = 0;
    for (const p of parts) {
      bytes.set(p, at);
      at += p.length;
    }
    for (let attempt = 0; ; attempt++) {
      await this.idle();
      if (this.stopped) return;
      try {
        if (offsetS !== null && this.sb.timestampOffset !== offsetS) this.sb.timestampOffset = offsetS;
        this.sb.appendBuffer(bytes);
        await this.idle();
        return;
      } catch (e) {
        if (e.name !== 'QuotaExceededError' || attempt > 2) {
          e.fatal = true;
          throw e;
        }
        await this.trim(5);
      }
    }
  }

  /// Resolves when the source buffer has no operation in progress.
  idle() {
    if (!this.sb || !this.sb.updating) return Promise.resolve();
    return new Promise((resolve) => this.sb.addEventListener('updateend', resolve, { once: true }));
  }

  /// Removes media more than `keepS` behind the playhead.
  async trim(keepS) {
    const cut = this.video.currentTime - keepS;
    const b = this.sb.buffered;
    if (b.length && cut > b.start(0) + 1) {
      await this.idle();
      this.sb.remove(b.start(0), cut);
      await this.idle();
      this.anchors = this.anchors.filter((a) => a.mediaS + a.durS >= cut - 1);
    }
  }

  /// After each fragment: the first one positions the playhead; later ones keep it in place.
  afterAppend() {
    const v = this.video;
    const b = v.buffered;
    if (!b.length) return;
    const end = b.end(b.length - 1);
    if (!this.positioned) this.position(false);
    if (this.live) this.holdLiveEdge();
    if (v.currentTime - b.start(0) > KEEP_BEHIND_S + 10) this.trim(KEEP_BEHIND_S).catch(() => {});
  }

  /// Puts the playhead where playback starts: near the live edge, or at the asked-for time once
  /// the fragment holding it is in the buffer (the feed starts at the keyframe before it, a GOP
  /// or more earlier). `last`: no more media is coming, so start at what there is.
  position(last) {
    const v = this.video;
    const b = v.buffered;
    if (!b.length) return;
    const end = b.end(b.length - 1);
    if (this.live) v.currentTime = Math.max(b.start(0), end - LIVE_TARGET_LAG_S);
    else if (this.seekToMs !== null) {
      const newest = this.anchors[this.anchors.length - 1];
      if (!last && newest.producerMs + newest.durS * 1000 <= this.seekToMs) return;
      // The fragment holding the time, or the first one after it (the time fell in a gap).
      const a = [...this.anchors].reverse().find((x) => x.producerMs <= this.seekToMs) || this.anchors[0];
      v.currentTime = Math.max(b.start(0), a.mediaS + Math.min(Math.max(this.seekToMs - a.producerMs, 0) / 1000, a.durS));
    } else v.currentTime = b.start(0);
    this.positioned = true;
    v.play().catch(() => {});
  }

  /// Live: keeps the playhead a little behind the newest media, catching up gently.
  holdLiveEdge() {
    const v = this.video;
    const lag = this.lagS();
    if (lag > LIVE_JUMP_LAG_S) {
      const b = v.buffered;
      v.currentTime = b.end(b.length - 1) - LIVE_TARGET_LAG_S;
      v.playbackRate = 1;
    } else if (lag > LIVE_CATCH_UP_LAG_S) v.playbackRate = 1.15;
    else if (lag < LIVE_TARGET_LAG_S) v.playbackRate = 1;
  }
}
