// The archive timeline: recorded spans and gaps over a time window, an axis, a playhead, a
// selection made by dragging, and hover thumbnails. Times are milliseconds since the epoch
// (producer time, as the timeline API reports it); labels are in the browser's time zone.
//
// Spans are <button>s (keyboard reachable: Enter plays from the span's start). Spans narrower
// than MIN_SPAN_PX are widened and every gap keeps at least MIN_GAP_PX, so short recordings and
// short gaps stay visible and clickable at every zoom level; a span drawn shifted by more than
// MAX_DRIFT_PX joins the previous one (one button for a cluster too dense to draw apart).

const MIN_SPAN_PX = 3;
const MIN_GAP_PX = 2;
const MAX_DRIFT_PX = 8;
const DRAG_PX = 5;

const TICK_STEPS = [
  60e3, 5 * 60e3, 10 * 60e3, 15 * 60e3, 30 * 60e3, 3600e3, 3 * 3600e3, 6 * 3600e3, 12 * 3600e3, 86400e3,
];

const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

export const fmtClock = (ms, withSeconds = true) =>
  new Date(ms).toLocaleTimeString([], {
    hour: '2-digit', minute: '2-digit', ...(withSeconds ? { second: '2-digit' } : {}), hour12: false,
  });
export const fmtDay = (ms) => new Date(ms).toLocaleDateString([], { weekday: 'short', month: 'short', day: 'numeric' });
export const fmtDateTime = (ms) => `${fmtDay(ms)} ${fmtClock(ms)}`;

export class Timeline {
  // opts: { onPlay(ms), onSelect(startMs, endMs), frameUrl(ms) -> url }
  constructor(root, opts) {
    this.opts = opts;
    this.start = 0;
    this.end = 1;
    this.spans = [];
    this.gaps = [];
    this.drawn = []; // {x0, x1, start, end, spans, node}
    this.playhead = null;
    this.selection = null;
    this.root = root;
    root.classList.add('timeline');
    this.track = el('div', 'tl-track');
    this.track.setAttribute('role', 'group');
    this.track.setAttribute('aria-label', 'Recorded footage; click a span to play, drag to select a range');
    this.layer = el('div', 'tl-layer');
    this.sel = el('div', 'tl-selection');
    this.sel.hidden = true;
    this.head = el('div', 'tl-playhead');
    this.head.hidden = true;
    this.nowLine = el('div', 'tl-now');
    this.track.append(this.layer, this.sel, this.nowLine, this.head);
    this.axis = el('div', 'tl-axis');
    this.hover = el('div', 'tl-hover');
    this.hover.hidden = true;
    this.hoverImg = el('img');
    this.hoverImg.alt = '';
    this.hoverImg.width = 160;
    this.hoverImg.height = 90;
    this.hoverTime = el('div', 'tl-hover-time');
    this.hover.append(this.hoverImg, this.hoverTime);
    root.append(this.track, this.axis, this.hover);
    this.hoverTimer = null;
    this.hoverImg.addEventListener('error', () => this.hoverImg.classList.add('missing'));
    this.hoverImg.addEventListener('load', () => this.hoverImg.classList.remove('missing'));
    this.bindPointer();
    this.resize = new ResizeObserver(() => this.render());
    this.resize.observe(this.track);
  }

  destroy() {
    this.resize.disconnect();
    clearTimeout(this.hoverTimer);
  }

  width() {
    return this.track.clientWidth || 1;
  }

  // Time → x on the linear axis.
  x(ms) {
    return ((ms - this.start) / (this.end - this.start)) * this.width();
  }

  // x → time on the linear axis.
  t(x) {
    return this.start + (x / this.width()) * (this.end - this.start);
  }

  // x (track coordinates) → time, honouring widened/shifted spans where x falls on one.
  timeAt(x) {
    for (const d of this.drawn) {
      if (x >= d.x0 && x <= d.x1) return d.start + ((x - d.x0) / Math.max(1, d.x1 - d.x0)) * (d.end - d.start);
    }
    return this.t(x);
  }

  // Time → x, honouring widened/shifted spans.
  xAt(ms) {
    for (const d of this.drawn) {
      if (ms >= d.start && ms <= d.end) return d.x0 + ((ms - d.start) / Math.max(1, d.end - d.start)) * (d.x1 - d.x0);
    }
    return this.x(ms);
  }

  setWindow(start, end) {
    this.start = start;
    this.end = end;
    this.render();
  }

  setData(spans, gaps) {
    this.spans = spans;
    this.gaps = gaps;
    this.render();
  }

  setPlayhead(ms) {
    this.playhead = ms;
    this.placeHead();
  }

  setSelection(a, b) {
    this.selection = a === null ? null : [Math.min(a, b), Math.max(a, b)];
    this.placeSelection();
  }

  placeHead() {
    const ms = this.playhead;
    if (ms === null || ms < this.start || ms > this.end) {
      this.head.hidden = true;
      return;
    }
    this.head.hidden = false;
    this.head.style.left = `${this.xAt(ms)}px`;
    this.head.dataset.ms = String(Math.round(ms));
  }

  placeSelection() {
    if (!this.selection) {
      this.sel.hidden = true;
      return;
    }
    const [a, b] = this.selection;
    const x0 = Math.max(0, this.xAt(a));
    const x1 = Math.min(this.width(), this.xAt(b));
    this.sel.hidden = x1 <= x0;
    this.sel.style.left = `${x0}px`;
    this.sel.style.width = `${Math.max(1, x1 - x0)}px`;
  }

  render() {
    const w = this.width();
    this.track.dataset.startMs = String(Math.round(this.start));
    this.track.dataset.endMs = String(Math.round(this.end));
    this.layer.replaceChildren();
    this.drawn = [];
    // Spans, left to right, with minimum widths and gaps.
    let prevEnd = -Infinity;
    let prev = null;
    for (const s of this.spans) {
      const a = Math.max(s.start_us / 1000, this.start);
      const b = Math.min(s.end_us / 1000, this.end);
      if (b <= this.start || a >= this.end) continue;
      const tx0 = this.x(a);
      const tx1 = this.x(b);
      let x0 = Math.max(tx0, prev ? prevEnd + MIN_GAP_PX : tx0);
      if (prev && x0 - tx0 > MAX_DRIFT_PX) {
        // Too dense to draw apart: extend the previous button over this span.
        prev.end = b;
        prev.spans.push(s);
        prev.x1 = Math.max(prev.x1, tx1, prev.x0 + MIN_SPAN_PX);
        prevEnd = prev.x1;
        continue;
      }
      x0 = Math.min(x0, w - MIN_SPAN_PX);
      const x1 = Math.max(tx1, x0 + MIN_SPAN_PX);
      prev = { x0, x1, start: a, end: b, spans: [s] };
      this.drawn.push(prev);
      prevEnd = x1;
    }
    // Gaps: the space between drawn spans (and before/after them inside the window), marked.
    const gapNodes = [];
    const addGap = (x0, x1, start, end) => {
      if (x1 - x0 < 1) return;
      const g = el('div', 'tl-gap');
      g.style.left = `${x0}px`;
      g.style.width = `${x1 - x0}px`;
      g.dataset.startMs = String(Math.round(start));
      g.dataset.endMs = String(Math.round(end));
      g.title = `No recording ${fmtDateTime(start)} – ${fmtDateTime(end)}`;
      gapNodes.push(g);
    };
    const now = Date.now();
    for (let i = 0; i < this.drawn.length; i++) {
      const d = this.drawn[i];
      if (i > 0) addGap(this.drawn[i - 1].x1, d.x0, this.drawn[i - 1].end, d.start);
    }
    this.layer.append(...gapNodes);
    for (const d of this.drawn) {
      const b = el('button', 'tl-span');
      b.type = 'button';
      b.style.left = `${d.x0}px`;
      b.style.width = `${d.x1 - d.x0}px`;
      b.dataset.startMs = String(Math.round(d.start));
      b.dataset.endMs = String(Math.round(d.end));
      b.dataset.count = String(d.spans.length);
      const what = d.spans.length > 1 ? `${d.spans.length} recordings` : 'Recording';
      b.setAttribute('aria-label', `${what} ${fmtDateTime(d.start)} – ${fmtDateTime(d.end)}; play`);
      b.addEventListener('click', (e) => {
        if (this.suppressClick) return;
        // A keyboard "click" (detail 0) plays from the start of the span.
        const ms = e.detail === 0 ? d.start : this.timeAt(e.clientX - this.layer.getBoundingClientRect().left);
        this.opts.onPlay(this.snapToRecording(ms));
      });
      d.node = b;
      this.layer.append(b);
    }
    // "Now" marker.
    this.nowLine.hidden = now < this.start || now > this.end;
    this.nowLine.style.left = `${this.x(now)}px`;
    this.renderAxis();
    this.placeHead();
    this.placeSelection();
  }

  // A time inside a cluster may fall in one of its gaps: move it to the next recorded time.
  snapToRecording(ms) {
    for (const s of this.spans) {
      const a = s.start_us / 1000;
      const b = s.end_us / 1000;
      if (ms < a) return a;
      if (ms <= b) return ms;
    }
    return ms;
  }

  renderAxis() {
    this.axis.replaceChildren();
    const span = this.end - this.start;
    const w = this.width();
    const maxTicks = Math.max(2, Math.floor(w / 90));
    const step = TICK_STEPS.find((s) => span / s <= maxTicks) || 86400e3 * Math.ceil(span / maxTicks / 86400e3);
    // Align ticks to local time boundaries.
    const off = new Date(this.start).getTimezoneOffset() * 60e3;
    let t = Math.ceil((this.start - off) / step) * step + off;
    for (; t <= this.end; t += step) {
      const tick = el('div', 'tl-tick');
      tick.style.left = `${this.x(t)}px`;
      const d = new Date(t);
      const midnight = d.getHours() === 0 && d.getMinutes() === 0;
      tick.textContent = step >= 86400e3 || midnight ? fmtDay(t) : fmtClock(t, false);
      this.axis.append(tick);
    }
  }

  bindPointer() {
    let down = null;
    const local = (e) => {
      const r = this.layer.getBoundingClientRect();
      return Math.min(Math.max(e.clientX - r.left, 0), r.width);
    };
    this.track.addEventListener('pointerdown', (e) => {
      if (e.button !== 0) return;
      down = { x: local(e), id: e.pointerId, dragging: false };
      this.suppressClick = false;
    });
    this.track.addEventListener('pointermove', (e) => {
      const x = local(e);
      this.showHover(x, e);
      if (!down || down.id !== e.pointerId) return;
      if (!down.dragging && Math.abs(x - down.x) >= DRAG_PX) {
        down.dragging = true;
        this.track.setPointerCapture(e.pointerId);
      }
      if (down.dragging) this.setSelection(this.timeAt(down.x), this.timeAt(x));
    });
    const up = (e) => {
      if (!down || down.id !== e.pointerId) return;
      if (down.dragging) {
        this.suppressClick = true;
        setTimeout(() => (this.suppressClick = false), 0);
        const a = this.timeAt(down.x);
        const b = this.timeAt(local(e));
        this.setSelection(a, b);
        this.opts.onSelect(Math.min(a, b), Math.max(a, b));
      }
      down = null;
    };
    this.track.addEventListener('pointerup', up);
    this.track.addEventListener('pointercancel', () => (down = null));
    this.track.addEventListener('pointerleave', () => {
      this.hover.hidden = true;
      clearTimeout(this.hoverTimer);
    });
  }

  showHover(x, e) {
    const ms = this.timeAt(x);
    const onSpan = this.drawn.find((d) => x >= d.x0 && x <= d.x1);
    this.hover.hidden = false;
    this.hover.classList.toggle('no-image', !onSpan);
    const w = this.width();
    const hw = 172;
    this.hover.style.left = `${Math.min(Math.max(x - hw / 2, 0), Math.max(0, w - hw))}px`;
    this.hoverTime.textContent = onSpan ? fmtDateTime(ms) : `${fmtDateTime(ms)} · no recording`;
    clearTimeout(this.hoverTimer);
    if (onSpan && e.pointerType !== 'touch') {
      // Ask for a frame once the pointer rests a moment (frames are decoded on the server).
      const at = Math.round(Math.min(Math.max(ms, onSpan.start), onSpan.end - 1));
      this.hoverTimer = setTimeout(() => {
        this.hoverImg.src = this.opts.frameUrl(at);
      }, 180);
    }
  }
}
