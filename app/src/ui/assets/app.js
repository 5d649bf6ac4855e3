/* annals admin UI: plain DOM, no framework, no build step.
 * The page runs under a strict content security policy: no inline handlers or
 * styles, no eval; every listener is attached here. Server strings reach the
 * DOM as text only (textContent / createElement), never as HTML.
 * Views follow the URL's hash (#/overview, #/streams?prefix=…, #/stream/<id>,
 * #/all?from=…, #/tail, #/projections, #/sagas) so reloads and bookmarks keep
 * the place. Each view has a context (AbortController + timers) dropped when
 * the hash changes: polls, reads and the live tail stop with their view. */
'use strict';

(() => {
  const KEY_STORAGE = 'annals.key';
  const PAGE_STREAMS = 50;
  const PAGE_EVENTS = 20;
  const PAGE_ALL = 50;
  const TAIL_CAP = 500;
  const ERASED = '[erased]';

  let config = null; // /ui/config.json
  let ctx = null; // the current view's context

  // ------------------------------------------------------------------ DOM

  /** An element with attributes and children; strings become text nodes. */
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'testid') node.dataset.testid = v;
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c == null || c === false) continue;
      node.append(c instanceof Node ? c : String(c));
    }
    return node;
  }
  const $ = (sel, root = document) => root.querySelector(sel);
  const byTestId = (id) => $(`[data-testid="${id}"]`);
  const isObj = (v) => v != null && typeof v === 'object' && !Array.isArray(v);

  // ----------------------------------------------------------- formatting

  const nf = new Intl.NumberFormat('en-US');
  const fmtCount = (n) => (n == null ? '—' : nf.format(n));
  const fmtRate = (r) => (r == null ? '—' : r >= 100 ? nf.format(Math.round(r)) : Number(r).toFixed(1));

  function fmtBytes(n) {
    if (n == null) return '—';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    let v = Number(n);
    let i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
  }

  /** Microseconds since the epoch as ISO 8601 UTC with milliseconds. */
  function fmtTime(micros) {
    const d = new Date(Math.floor(Number(micros) / 1000));
    return Number.isNaN(d.getTime()) ? String(micros) : d.toISOString();
  }

  function fmtSeconds(s) {
    if (s == null || !Number.isFinite(s)) return '—';
    const m = Math.floor(s / 60);
    return s < 1 ? `${Math.round(s * 1000)} ms` : s < 120 ? `${s.toFixed(1)} s`
      : m < 120 ? `${m} min ${Math.round(s - m * 60)} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
  }

  // ---------------------------------------------------------- JSON view

  /** Pretty-printed JSON (two-space indent) as DOM, erased values as badges. */
  function jsonView(value, testid) {
    const pre = h('pre', { class: 'json', testid });
    writeJson(pre, value, '');
    return pre;
  }

  function writeJson(out, v, indent) {
    if (v === ERASED) { out.append(erasedBadge()); return; }
    const inner = indent + '  ';
    if (Array.isArray(v) || isObj(v)) {
      const entries = Array.isArray(v) ? v.map((x) => [null, x]) : Object.entries(v);
      const [open, close] = Array.isArray(v) ? ['[', ']'] : ['{', '}'];
      if (!entries.length) { out.append(open + close); return; }
      out.append(open + '\n');
      entries.forEach(([k, x], i) => {
        out.append(inner);
        if (k != null) out.append(h('span', { class: 'j-key' }, JSON.stringify(k)), ': ');
        writeJson(out, x, inner);
        out.append(i < entries.length - 1 ? ',\n' : '\n');
      });
      out.append(indent + close);
      return;
    }
    const cls = typeof v === 'string' ? 'j-str' : v === null ? 'j-null' : 'j-lit';
    out.append(h('span', { class: cls }, JSON.stringify(v)));
  }

  function containsErased(v) {
    if (v === ERASED) return true;
    if (v && typeof v === 'object') return Object.values(v).some(containsErased);
    return false;
  }

  const erasedBadge = () =>
    h('span', { class: 'erased', testid: 'erased', title: 'personal data erased: its key was destroyed' }, 'erased');

  // ------------------------------------------------------------ messages

  // Errors are kept per source (a poll, a read, an action) so that a poll
  // that recovers clears its own error and no other.
  const errors = new Map();

  function setError(source, message) {
    if (message) errors.set(source, message);
    else if (!errors.delete(source)) return;
    const banner = byTestId('error');
    banner.replaceChildren(
      ...[...errors.values()].map((m) => h('div', { class: 'msg' }, m)),
      // The × is drawn by CSS so that the banner's text is the messages alone.
      h('button', { type: 'button', class: 'dismiss', title: 'Dismiss', 'aria-label': 'Dismiss', onclick: clearErrors }));
    banner.hidden = errors.size === 0;
  }

  function clearErrors() {
    errors.clear();
    byTestId('error').hidden = true;
    byTestId('error').replaceChildren();
  }

  let noticeTimer = 0;
  function notice(message) {
    const box = byTestId('notice');
    box.textContent = message;
    box.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => { box.hidden = true; }, 5000);
  }

  // ----------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, title, detail) {
      super(detail ? `${title}: ${detail}` : title);
      this.status = status;
    }
  }

  const isAbort = (e) => e && e.name === 'AbortError';

  function getKey() {
    try { return sessionStorage.getItem(KEY_STORAGE) || ''; } catch { return ''; }
  }

  function authHeaders(extra) {
    // The marker the servers ask of a state-changing request that is no
    // cross-site form (a POST without a JSON body, such as a rebuild).
    const headers = { 'X-Requested-With': 'annals-ui', ...extra };
    const key = getKey();
    if (key) headers.Authorization = `Bearer ${key}`;
    return headers;
  }

  /** A problem document (RFC 9457) or whatever else an error answer holds. */
  async function problemOf(res, text) {
    if (text == null) text = await res.text().catch(() => '');
    let body = null;
    try { body = JSON.parse(text); } catch { /* not JSON */ }
    if (res.status === 401) askForKey(getKey() ? 'The server refused this API key.' : 'This server needs an API key.');
    if (isObj(body) && (body.title || body.detail)) {
      return new ApiError(res.status, body.title || `HTTP ${res.status}`, body.detail || '');
    }
    return new ApiError(res.status, `HTTP ${res.status} ${res.statusText}`.trim(), text.slice(0, 300));
  }

  /**
   * A JSON request with the stored key. `accept` lists error statuses that
   * still carry the body the caller wants (503 on readiness); with it the
   * answer is {status, body}.
   */
  async function api(path, signal, { method = 'GET', accept = null } = {}) {
    let res;
    try {
      res = await fetch(path, { method, signal, cache: 'no-store', headers: authHeaders({ Accept: 'application/json' }) });
    } catch (e) {
      if (isAbort(e)) throw e;
      throw new ApiError(0, 'Network error', `${method} ${path}: ${e.message}`);
    }
    const text = await res.text();
    if (!res.ok && !(accept && accept.includes(res.status))) throw await problemOf(res, text);
    let body = null;
    if (text) {
      try { body = JSON.parse(text); } catch { throw new ApiError(res.status, 'Unreadable answer', `${path} is not JSON`); }
    }
    return accept ? { status: res.status, body } : body;
  }

  /** The store's read API path (config.store is "" in the store itself). */
  const storePath = (p) => `${config.store}${p}`;

  // ---------------------------------------------------------- view context

  function newContext() {
    if (ctx) {
      ctx.alive = false;
      ctx.ctrl.abort();
      ctx.timers.forEach(clearTimeout);
    }
    const ctrl = new AbortController();
    ctx = { alive: true, ctrl, signal: ctrl.signal, timers: new Set() };
    return ctx;
  }

  /** Resolves after ms, or never when the view is left (its timers are cleared). */
  function sleep(c, ms) {
    return new Promise((resolve) => {
      const t = setTimeout(() => { c.timers.delete(t); resolve(); }, ms);
      c.timers.add(t);
    });
  }

  /** Reports a failed read; false when the view is gone or the key is asked for. */
  function report(c, source, e) {
    if (!c.alive || isAbort(e)) return false;
    setError(source, e.message);
    return !(e instanceof ApiError && e.status === 401);
  }

  /** Runs fn every ms while the view lives (and the page is visible). */
  async function poll(c, ms, source, fn) {
    while (c.alive) {
      if (!document.hidden) {
        try {
          await fn();
          setError(source, null);
        } catch (e) {
          // A 401 stops the poll: the key form re-renders the view once a key is saved.
          if (!report(c, source, e)) return;
        }
      }
      await sleep(c, ms);
    }
  }

  /** One read for a view; its error goes to the banner. */
  function once(c, source, fn) {
    fn().then(() => c.alive && setError(source, null), (e) => report(c, source, e));
  }

  // --------------------------------------------------------------- routing

  function parseHash() {
    const raw = location.hash.replace(/^#\/?/, '');
    const q = raw.indexOf('?');
    const path = q < 0 ? raw : raw.slice(0, q);
    const params = new URLSearchParams(q < 0 ? '' : raw.slice(q + 1));
    const slash = path.indexOf('/');
    const name = slash < 0 ? path : path.slice(0, slash);
    let arg = slash < 0 ? '' : path.slice(slash + 1);
    try { arg = decodeURIComponent(arg); } catch { /* keep it as written */ }
    return { name, arg, params };
  }

  function link(view, arg, params) {
    let s = `#/${view}`;
    if (arg != null) s += `/${encodeURIComponent(arg)}`;
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) if (v != null && v !== '') q.set(k, v);
    const qs = q.toString();
    return qs ? `${s}?${qs}` : s;
  }

  /** Goes to a view; the same hash again re-renders it (a hash change would not fire). */
  function go(view, arg, params) {
    const target = link(view, arg, params);
    if (location.hash === target) route();
    else location.hash = target;
  }

  const VIEWS = {
    overview: { tab: 'overview', render: viewOverview, needs: () => true },
    streams: { tab: 'streams', render: viewStreams, needs: () => config.store != null },
    stream: { tab: 'streams', render: viewStream, needs: () => config.store != null },
    all: { tab: 'all', render: viewAll, needs: () => config.store != null },
    tail: { tab: 'tail', render: viewTail, needs: () => config.store != null },
    projections: { tab: 'projections', render: viewProjections, needs: () => !!config.projections },
    sagas: { tab: 'sagas', render: viewSagas, needs: () => !!config.sagas },
  };

  function route() {
    let r = parseHash();
    const known = VIEWS[r.name];
    if (!known || !known.needs() || (r.name === 'stream' && !r.arg)) {
      history.replaceState(null, '', '#/overview');
      r = parseHash();
    }
    const view = VIEWS[r.name];
    const c = newContext();
    clearErrors();
    byTestId('notice').hidden = true;
    for (const a of document.querySelectorAll('.tabs a')) {
      if (a.dataset.view === view.tab) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    const main = $('#view');
    main.replaceChildren();
    main.dataset.view = r.name;
    view.render(c, r, main);
  }

  // --------------------------------------------------------------- key form

  function askForKey(message) {
    const form = byTestId('key-form');
    byTestId('key-message').textContent = message;
    form.hidden = false;
    byTestId('key-input').focus();
  }

  function wireKeyForm() {
    const form = byTestId('key-form');
    const input = byTestId('key-input');
    const button = byTestId('key-button');
    const close = () => {
      input.value = '';
      form.hidden = true;
      button.classList.toggle('has-key', !!getKey());
    };
    close();
    button.addEventListener('click', () => {
      if (!form.hidden) close();
      else askForKey(getKey() ? 'An API key is stored for this tab.' : 'No API key is stored for this tab.');
    });
    // The policy forbids form submission (form-action 'none'): always handle it here.
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const key = input.value.trim();
      if (!key) { input.focus(); return; }
      sessionStorage.setItem(KEY_STORAGE, key);
      close();
      route(); // retry what the view asked for, with the key
    });
    byTestId('key-clear').addEventListener('click', () => {
      sessionStorage.removeItem(KEY_STORAGE);
      close();
      notice('API key forgotten for this tab.');
    });
    byTestId('key-close').addEventListener('click', close);
  }

  // ------------------------------------------------------------ confirmation

  let confirmResolve = null;

  /** An in-page confirmation; resolves true on OK. */
  function confirmAction(text, okLabel) {
    const dialog = byTestId('confirm');
    byTestId('confirm-text').textContent = text;
    byTestId('confirm-ok').textContent = okLabel;
    dialog.returnValue = '';
    return new Promise((resolve) => {
      confirmResolve = resolve;
      dialog.showModal();
      byTestId('confirm-cancel').focus();
    });
  }

  function wireConfirm() {
    const dialog = byTestId('confirm');
    byTestId('confirm-ok').addEventListener('click', () => dialog.close('ok'));
    byTestId('confirm-cancel').addEventListener('click', () => dialog.close('cancel'));
    // Escape closes the dialog too: anything but OK is a no.
    dialog.addEventListener('close', () => {
      const resolve = confirmResolve;
      confirmResolve = null;
      if (resolve) resolve(dialog.returnValue === 'ok');
    });
  }

  // ---------------------------------------------------------- shared parts

  const heading = (title, ...rest) => h('div', { class: 'view-head' }, h('h1', null, title), ...rest);
  const streamLink = (id) => h('a', { href: link('stream', id), class: 'mono', testid: 'stream-link' }, id);

  function badge(state, testid) {
    const tone = { live: 'ok', running: 'ok', ready: 'ok', catching_up: 'info', starting: 'info', rebuilding: 'warn',
      retrying: 'warn', failed: 'bad', stopped: 'bad', not_ready: 'bad' }[state] || 'muted';
    return h('span', { class: `badge ${tone}`, testid }, String(state ?? '—').replace(/_/g, ' '));
  }

  function setBadge(node, state) {
    const fresh = badge(state, node.dataset.testid);
    node.className = fresh.className;
    node.textContent = fresh.textContent;
  }

  /** A table of events; each event is its own <tbody> (row + optional detail). */
  function eventTable(withStream) {
    const cols = [['Version', 'num'], ['Position', 'num'], ['Type', ''], ['Time (UTC)', ''], ['Correlation id', '']];
    if (withStream) cols.unshift(['Stream', '']);
    const table = h('table', { class: 'grid events' },
      h('thead', null, h('tr', null, cols.map(([c, cls]) => h('th', { class: cls || null }, c)))));
    return {
      table,
      add(ev, prepend) {
        const body = eventBody(ev, withStream, cols.length);
        table.insertBefore(body, prepend ? table.tBodies[0] || null : null);
        return body;
      },
      size: () => table.tBodies.length,
      trim(max) { while (table.tBodies.length > max) table.tBodies[table.tBodies.length - 1].remove(); },
    };
  }

  function eventBody(ev, withStream, span) {
    const meta = isObj(ev.metadata) ? ev.metadata : {};
    const corr = meta.correlation_id == null ? '' : String(meta.correlation_id);
    const row = h('tr', {
      class: 'event', testid: 'event-row', tabindex: 0, 'aria-expanded': 'false',
      'data-position': ev.position, 'data-version': ev.version, 'data-type': ev.type, 'data-stream': ev.stream_id,
    },
    withStream && h('td', { class: 'ellip' }, streamLink(ev.stream_id)),
    h('td', { class: 'num' }, ev.version),
    h('td', { class: 'num' }, ev.position),
    h('td', { class: 'ellip' }, h('span', { class: 'etype' }, ev.type),
      containsErased(ev.data) && h('span', { class: 'erased small', testid: 'has-erased', title: 'holds erased personal data' }, 'erased')),
    h('td', { class: 'mono' }, fmtTime(ev.timestamp)),
    h('td', { class: 'mono ellip muted', title: corr || null }, corr || '—'));
    const body = h('tbody', null, row);
    const toggle = () => {
      const open = $('tr.detail', body);
      if (open) open.remove();
      else body.append(h('tr', { class: 'detail' }, h('td', { colspan: span, testid: 'event-detail' }, eventDetail(ev))));
      row.setAttribute('aria-expanded', String(!open));
    };
    // A click on the stream link navigates; anywhere else on the row toggles the detail.
    row.addEventListener('click', (e) => { if (!e.target.closest('a')) toggle(); });
    row.addEventListener('keydown', (e) => {
      if (e.target === row && (e.key === 'Enter' || e.key === ' ')) { e.preventDefault(); toggle(); }
    });
    return body;
  }

  function eventDetail(ev) {
    const meta = isObj(ev.metadata) ? ev.metadata : {};
    const facts = [
      ['Id', ev.id], ['Type', ev.type], ['Schema version', ev.schema_version],
      ['Stream', streamLink(ev.stream_id)], ['Version', ev.version], ['Position', ev.position],
      ['Time', `${fmtTime(ev.timestamp)} (${ev.timestamp} µs)`],
      ['Correlation id', meta.correlation_id], ['Causation id', meta.causation_id], ['Traceparent', meta.traceparent],
    ].filter(([, v]) => v != null);
    return h('div', { class: 'detail-body' },
      h('dl', { class: 'facts' }, facts.map(([k, v]) => [h('dt', null, k), h('dd', { class: 'mono' }, v)])),
      h('div', { class: 'json-pair' },
        h('section', null, h('h4', null, 'Data'), jsonView(ev.data, 'event-data')),
        h('section', null, h('h4', null, 'Metadata'), jsonView(ev.metadata, 'event-metadata'))));
  }

  const placeholder = (text) => h('p', { class: 'placeholder' }, text);

  // --------------------------------------------------------------- overview

  function viewOverview(c, r, main) {
    const stats = h('section', { class: 'cards', testid: 'stats' }, placeholder('Loading…'));
    const health = h('section', { class: 'panel health', testid: 'health' }, placeholder('Loading…'));
    main.append(heading('Overview', h('span', { class: 'muted' }, 'refreshes every 2 s')));
    if (config.store != null) main.append(h('h2', null, 'Store'), stats);
    else main.append(placeholder('This process has no store.'));
    main.append(h('h2', null, 'Health'), health);

    if (config.store != null) {
      poll(c, 2000, 'stats', async () => renderStats(stats, await api(storePath('/stats'), c.signal)));
    }
    // 503 is an answer here (not ready), not a failure to read.
    poll(c, 2000, 'health', async () => renderHealth(health, await api('/health/ready', c.signal, { accept: [503] })));
  }

  function card(key, label, value, raw, sub, tone) {
    return h('div', { class: `card ${tone || ''}`, 'data-stat': key, 'data-value': raw },
      h('div', { class: 'label' }, label),
      h('div', { class: 'value num' }, value),
      sub && h('div', { class: 'sub' }, sub));
  }

  function renderStats(box, s) {
    const cards = [
      card('events', 'Events', fmtCount(s.events), s.events),
      card('streams', 'Streams', fmtCount(s.streams), s.streams),
      card('head', 'Head position', fmtCount(s.head), s.head),
      card('segments', 'Segments', fmtCount(s.segments), s.segments, `${fmtCount(s.sealed_segments)} sealed`),
      card('bytes', 'Size', fmtBytes(s.bytes), s.bytes, `${fmtCount(s.bytes)} bytes`),
      card('snapshots', 'Snapshots', fmtCount(s.snapshots), s.snapshots, fmtBytes(s.snapshot_bytes)),
      card('searches', 'Segment searches', fmtCount(s.segments_searched), s.segments_searched,
        `${fmtCount(s.segments_skipped_by_bloom)} skipped by bloom filter`),
    ];
    if (s.read_only_reason) {
      cards.unshift(h('div', { class: 'card wide bad', 'data-stat': 'read_only_reason', testid: 'read-only' },
        h('div', { class: 'label' }, 'Read-only'), h('div', { class: 'reason' }, s.read_only_reason)));
    }
    box.replaceChildren(...cards);
  }

  function keyValues(obj, testid) {
    return h('dl', { class: 'checks', testid }, Object.entries(obj).map(([k, v]) => {
      const ok = v === 'ok';
      return h('div', { class: `check ${ok ? 'ok' : 'bad'}`, 'data-check': k },
        h('dt', null, k), h('dd', null, typeof v === 'string' ? v : JSON.stringify(v)));
    }));
  }

  function renderHealth(box, { status, body }) {
    const b = isObj(body) ? body : {};
    const ready = status === 200;
    const parts = [h('div', { class: 'health-status' }, badge(ready ? 'ready' : 'not_ready', 'health-status'),
      h('span', { class: 'muted' }, ready ? 'ready: every dependency answers' : `${b.title || 'not ready'}${b.detail ? `: ${b.detail}` : ''}`))];
    if (isObj(b.checks)) parts.push(h('h3', null, 'Checks'), keyValues(b.checks, 'health-checks'));
    if (isObj(b.sagas) && Object.keys(b.sagas).length) parts.push(h('h3', null, 'Sagas'), keyValues(b.sagas, 'health-sagas'));
    if (Array.isArray(b.projections) && b.projections.length) {
      parts.push(h('h3', null, 'Projections at fault'), h('ul', { class: 'faults' },
        b.projections.map((p) => h('li', null, h('b', null, String(p.name)),
          ` ${p.state} at position ${p.error_position ?? p.position}: ${p.error ?? ''}`))));
    }
    if (Array.isArray(b.warnings) && b.warnings.length) {
      parts.push(h('ul', { class: 'warnings' }, b.warnings.map((w) => h('li', null, String(w)))));
    }
    box.replaceChildren(...parts);
  }

  // ---------------------------------------------------------------- streams

  function viewStreams(c, r, main) {
    const prefix = r.params.get('prefix') || '';
    const after = r.params.get('after') || '';
    const chips = h('div', { class: 'chips', testid: 'categories' }, placeholder('Loading categories…'));
    const input = h('input', {
      type: 'text', testid: 'prefix-input', value: prefix, placeholder: 'stream id prefix, e.g. customer-',
      spellcheck: 'false', autocomplete: 'off', 'aria-label': 'Stream id prefix',
    });
    const form = h('form', { class: 'toolbar' },
      h('label', null, 'Prefix'), input, h('button', { type: 'submit', class: 'primary', testid: 'prefix-go' }, 'List'));
    form.addEventListener('submit', (e) => { e.preventDefault(); go('streams', null, { prefix: input.value }); });
    const matching = h('span', { class: 'muted', testid: 'matching' });
    const tbody = h('tbody');
    const table = h('table', { class: 'grid' },
      h('thead', null, h('tr', null, h('th', null, 'Stream'), h('th', { class: 'num' }, 'Version'), h('th', { class: 'num' }, 'Last position'))),
      tbody);
    const first = h('button', { type: 'button', hidden: !after, onclick: () => go('streams', null, { prefix }) }, '« First page');
    const next = h('button', { type: 'button', testid: 'next-page', hidden: true }, 'Next page »');
    main.append(heading('Streams'), h('h2', null, 'Categories'), chips, form,
      h('div', { class: 'table-head' }, h('span', null, matching, after && h('span', { class: 'muted' }, ` · after ${after}`))),
      table, h('div', { class: 'pager' }, first, next));

    once(c, 'categories', async () => {
      const data = await api(storePath('/categories?limit=200'), c.signal);
      const cats = data.categories || [];
      chips.replaceChildren(...cats.map((cat) => h('a', {
        class: `chip${prefix === `${cat.category}-` ? ' active' : ''}`, testid: 'category', 'data-category': cat.category,
        href: link('streams', null, { prefix: `${cat.category}-` }), title: `${fmtCount(cat.events)} events`,
      }, cat.category, h('span', { class: 'count' }, fmtCount(cat.streams)))));
      if (!cats.length) chips.append(placeholder('No streams yet.'));
      if (data.truncated) chips.append(h('span', { class: 'muted' }, 'more categories not shown'));
    });

    once(c, 'streams', async () => {
      const q = new URLSearchParams({ prefix, limit: String(PAGE_STREAMS) });
      if (after) q.set('after', after);
      const data = await api(storePath(`/streams?${q}`), c.signal);
      const streams = data.streams || [];
      matching.dataset.value = data.matching;
      matching.textContent = `${fmtCount(data.matching)} matching stream${data.matching === 1 ? '' : 's'}${prefix ? ` for prefix “${prefix}”` : ''}`;
      tbody.replaceChildren(...streams.map((s) => h('tr', { testid: 'stream-row', 'data-stream': s.stream_id },
        h('td', null, streamLink(s.stream_id)), h('td', { class: 'num' }, s.version), h('td', { class: 'num' }, s.last_position))));
      if (!streams.length) tbody.append(h('tr', null, h('td', { colspan: 3, class: 'placeholder' }, 'No streams match.')));
      if (data.next_after != null) {
        next.hidden = false;
        next.addEventListener('click', () => go('streams', null, { prefix, after: data.next_after }));
      }
    });
  }

  // ----------------------------------------------------------------- stream

  function viewStream(c, r, main) {
    const id = r.arg;
    const from = Math.max(1, parseInt(r.params.get('from') || '1', 10) || 1);
    const version = h('span', { class: 'muted', testid: 'stream-version' });
    const range = h('span', { class: 'muted', testid: 'stream-range' });
    const table = eventTable(false);
    const btn = (label, testid) => h('button', { type: 'button', testid, disabled: true }, label);
    const prevB = btn('‹ Previous', 'prev-page');
    const nextB = btn('Next ›', 'next-page');
    const lastB = btn('Last »', 'last-page');
    main.append(heading('Stream', h('code', { class: 'stream-id', testid: 'stream-id' }, id), version),
      h('div', { class: 'table-head' }, range, h('span', { class: 'pager' }, prevB, nextB, lastB)),
      table.table);

    once(c, 'stream', async () => {
      const q = new URLSearchParams({ from: String(from), direction: 'forward', max_count: String(PAGE_EVENTS) });
      const data = await api(storePath(`/streams/${encodeURIComponent(id)}?${q}`), c.signal);
      const events = data.events || [];
      const total = data.stream_version;
      version.textContent = `version ${total}`;
      version.dataset.value = total;
      events.forEach((ev) => table.add(ev));
      range.textContent = events.length
        ? `events ${events[0].version}–${events[events.length - 1].version} of ${total}`
        : total ? `no events from version ${from} (the stream has ${total})` : 'this stream has no events';
      const lastFrom = Math.max(1, total - PAGE_EVENTS + 1);
      const goFrom = (f) => go('stream', id, { from: f > 1 ? f : null });
      prevB.disabled = from <= 1;
      nextB.disabled = data.is_end || !events.length;
      lastB.disabled = from >= lastFrom;
      prevB.addEventListener('click', () => goFrom(Math.max(1, from - PAGE_EVENTS)));
      nextB.addEventListener('click', () => goFrom(events[events.length - 1].version + 1));
      lastB.addEventListener('click', () => goFrom(lastFrom));
    });
  }

  // -------------------------------------------------------------- all events

  function viewAll(c, r, main) {
    const from = Math.max(1, parseInt(r.params.get('from') || '1', 10) || 1);
    const input = h('input', { type: 'number', min: 1, step: 1, testid: 'from-input', value: from, 'aria-label': 'From position' });
    const form = h('form', { class: 'toolbar' }, h('label', null, 'From position'), input,
      h('button', { type: 'submit', class: 'primary', testid: 'from-go' }, 'Read'),
      h('button', { type: 'button', testid: 'from-latest', onclick: latest }, 'Latest'));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      go('all', null, { from: Math.max(1, parseInt(input.value, 10) || 1) });
    });
    const range = h('span', { class: 'muted' });
    const table = eventTable(true);
    const next = h('button', { type: 'button', testid: 'next-page', hidden: true }, 'Next page »');
    main.append(heading('All events', h('span', { class: 'muted' }, 'the log in position order')), form,
      h('div', { class: 'table-head' }, range), table.table, h('div', { class: 'pager' }, next));

    async function latest() {
      try {
        const head = await api(storePath('/head'), c.signal);
        go('all', null, { from: Math.max(1, head.position - PAGE_ALL + 1) });
      } catch (e) { report(c, 'head', e); }
    }

    once(c, 'all', async () => {
      const q = new URLSearchParams({ from: String(from), max_count: String(PAGE_ALL) });
      const data = await api(storePath(`/all?${q}`), c.signal);
      const events = data.events || [];
      events.forEach((ev) => table.add(ev));
      range.textContent = events.length
        ? `positions ${events[0].position}–${events[events.length - 1].position}`
        : `no events from position ${from}`;
      if (events.length >= PAGE_ALL) {
        next.hidden = false;
        next.addEventListener('click', () => go('all', null, { from: events[events.length - 1].position + 1 }));
      }
    });
  }

  // -------------------------------------------------------------- live tail

  /**
   * Server-Sent Events framing (the HTML standard's rules, minus retry):
   * lines end in CRLF, LF or CR, a blank line dispatches the message,
   * ':' starts a comment. Chunks may split anywhere, even inside a CRLF.
   */
  class SseParser {
    constructor(onMessage) {
      this.onMessage = onMessage;
      this.buf = '';
      this.reset();
    }

    reset() { this.event = ''; this.data = []; }

    feed(chunk) {
      // A CR that ended the last chunk may have been the first half of a CRLF.
      if (this.skipLF && chunk[0] === '\n') chunk = chunk.slice(1);
      this.skipLF = false;
      this.buf += chunk;
      let start = 0;
      for (let i = 0; i < this.buf.length; i++) {
        const ch = this.buf[i];
        if (ch !== '\n' && ch !== '\r') continue;
        this.line(this.buf.slice(start, i));
        if (ch === '\r') {
          if (i + 1 === this.buf.length) this.skipLF = true;
          else if (this.buf[i + 1] === '\n') i++;
        }
        start = i + 1;
      }
      this.buf = this.buf.slice(start);
    }

    line(line) {
      if (line === '') {
        if (this.data.length) this.onMessage(this.event || 'message', this.data.join('\n'));
        this.reset();
        return;
      }
      if (line[0] === ':') return; // keep-alive comment
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value[0] === ' ') value = value.slice(1);
      if (field === 'event') this.event = value;
      else if (field === 'data') this.data.push(value); // id and retry are not needed here
    }
  }

  function viewTail(c, r, main) {
    const status = h('span', { class: 'tail-status', testid: 'tail-status' }, 'stopped');
    const count = h('span', { class: 'muted', testid: 'tail-count' });
    const startB = h('button', { type: 'button', class: 'primary', testid: 'tail-start', onclick: start }, 'Start');
    const stopB = h('button', { type: 'button', testid: 'tail-stop', disabled: true, onclick: stop }, 'Stop');
    const table = eventTable(true);
    const empty = placeholder('Waiting for new events…');
    main.append(heading('Live tail', h('span', { class: 'muted' }, `newest first, the last ${TAIL_CAP} kept`)),
      h('div', { class: 'toolbar' }, startB, stopB, status, count), table.table, empty);

    let run = null; // the running subscription's AbortController
    let seen = 0;
    const show = () => {
      empty.hidden = table.size() > 0;
      count.textContent = seen ? `${fmtCount(seen)} event${seen === 1 ? '' : 's'} received` : '';
    };

    function setStatus(text, tone) {
      status.textContent = text;
      status.className = `tail-status ${tone || ''}`;
    }

    function stop() { if (run) run.abort(); }

    async function start() {
      if (run || !c.alive) return;
      const ctrl = new AbortController();
      run = ctrl;
      const leave = () => ctrl.abort(); // leaving the view stops the tail
      c.signal.addEventListener('abort', leave);
      startB.disabled = true;
      stopB.disabled = false;
      setStatus('connecting…', 'info');
      setError('tail', null);
      let failure = null;
      try {
        const head = await api(storePath('/head'), ctrl.signal);
        const from = head.position + 1;
        const res = await fetch(storePath(`/subscriptions?from=${from}`), {
          signal: ctrl.signal, cache: 'no-store', headers: authHeaders({ Accept: 'text/event-stream' }),
        });
        if (!res.ok) throw await problemOf(res);
        setStatus(`following from position ${from}`, 'ok');
        const parser = new SseParser((type, data) => {
          if (type === 'event') {
            table.add(JSON.parse(data), true);
            table.trim(TAIL_CAP);
            seen++;
            show();
          } else if (type === 'error') {
            // The server ends the subscription with a problem document.
            let p = {};
            try { p = JSON.parse(data); } catch { p = { title: data }; }
            failure = new ApiError(p.status || 0, p.title || 'Subscription error', p.detail || '');
            ctrl.abort();
          }
        });
        const reader = res.body.getReader();
        const decoder = new TextDecoder();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          parser.feed(decoder.decode(value, { stream: true }));
        }
        failure = failure || new ApiError(0, 'The server ended the subscription');
      } catch (e) {
        if (!isAbort(e)) failure = e instanceof ApiError ? e : new ApiError(0, 'Subscription failed', e.message);
      } finally {
        c.signal.removeEventListener('abort', leave);
        ctrl.abort(); // a parse failure leaves the response open otherwise
        run = null;
        if (c.alive) {
          startB.disabled = false;
          stopB.disabled = true;
          setStatus(failure ? `stopped: ${failure.message}` : 'stopped', failure ? 'bad' : '');
          if (failure) setError('tail', failure.message);
        }
      }
    }

    show();
    start();
  }

  // ------------------------------------------------------------ projections

  const ACTIONS = {
    rebuild: ['Rebuild', (n) => `Rebuild projection “${n}”? It is rebuilt from the start of the log into shadow tables `
      + 'and swapped in once caught up; queries keep reading the current tables meanwhile.'],
    skip: ['Skip', (n) => `Skip the event projection “${n}” failed on? It will never apply that event and goes on with the next.`],
    resume: ['Resume', (n) => `Resume projection “${n}”? It tries the event it failed on again.`],
  };

  function viewProjections(c, r, main) {
    const tbody = h('tbody');
    const heads = ['Name', 'State', 'Position / head', 'Lag', 'Events/s', 'Last error', 'Rebuild', 'Last rebuild', ''];
    const numeric = new Set(['Position / head', 'Lag', 'Events/s']);
    main.append(heading('Projections', h('span', { class: 'muted' }, 'refreshes every second')),
      h('table', { class: 'grid projections' },
        h('thead', null, h('tr', null, heads.map((t) => h('th', { class: numeric.has(t) ? 'num' : null }, t)))), tbody));
    const rows = new Map();
    const refresh = async () => {
      const data = await api('/projections', c.signal);
      // Rows are updated in place (not rebuilt) so that buttons keep focus and clicks land.
      syncRows(tbody, rows, data.projections || [], (p) => projectionRow(c, p.name, refresh));
    };
    poll(c, 1000, 'projections', refresh);
  }

  /** Keyed rows: make the new, update all, drop the gone, keep the server's order. */
  function syncRows(parent, rows, items, make) {
    const seen = new Set();
    items.forEach((item, i) => {
      seen.add(item.name);
      let row = rows.get(item.name);
      if (!row) { row = make(item); rows.set(item.name, row); }
      row.update(item);
      const at = parent.children[i] || null;
      if (at !== row.node) parent.insertBefore(row.node, at);
    });
    for (const [name, row] of rows) if (!seen.has(name)) { row.node.remove(); rows.delete(name); }
  }

  function projectionRow(c, name, refresh) {
    let current = null;
    const pending = new Set();
    const state = badge('', 'projection-state');
    const versions = h('div', { class: 'muted small' });
    const position = h('td', { class: 'num' });
    const lag = h('td', { class: 'num' });
    const rate = h('td', { class: 'num' });
    const error = h('td', { class: 'error-cell' });
    const progress = h('progress', { testid: 'rebuild-progress', max: 1, value: 0, hidden: true });
    const progressText = h('div', { class: 'small' });
    const lastRebuild = h('td', { testid: 'last-rebuild', class: 'small' });
    const button = (action) => h('button', { type: 'button', testid: action, onclick: () => act(action) }, ACTIONS[action][0]);
    const buttons = { rebuild: button('rebuild'), skip: button('skip'), resume: button('resume') };
    const node = h('tr', { testid: 'projection-row', 'data-name': name },
      h('td', null, h('b', null, name), versions), h('td', null, state), position, lag, rate, error,
      h('td', { class: 'rebuild-cell' }, progress, progressText), lastRebuild,
      h('td', { class: 'actions' }, buttons.rebuild, buttons.skip, buttons.resume));

    async function act(action) {
      const [label, text] = ACTIONS[action];
      if (!(await confirmAction(text(name), label))) return;
      pending.add(action);
      update(current);
      try {
        await api(`/projections/${encodeURIComponent(name)}/${action}`, c.signal, { method: 'POST' });
        setError('action', null);
        notice(`${label}: requested for projection “${name}”.`);
      } catch (e) {
        report(c, 'action', e);
      } finally {
        pending.delete(action);
        if (c.alive) refresh().catch((e) => report(c, 'projections', e));
      }
    }

    function update(p) {
      current = p;
      setBadge(state, p.state);
      node.dataset.state = p.state;
      versions.textContent = `v${p.version}${p.tables_version != null && p.tables_version !== p.version ? ` · tables v${p.tables_version}` : ''}`;
      position.textContent = `${p.position} / ${p.head}`;
      lag.textContent = fmtCount(p.lag);
      rate.textContent = fmtRate(p.events_per_second);
      const errs = [];
      if (p.last_error) errs.push(`${p.error_position != null ? `at ${p.error_position}: ` : ''}${p.last_error}`);
      if (p.retrying_for_ms != null) errs.push(`retrying for ${fmtSeconds(p.retrying_for_ms / 1000)}`);
      error.textContent = errs.join(' · ') || '—';
      error.title = errs.join('\n');
      error.classList.toggle('bad', !!p.last_error);

      const rb = p.rebuild;
      progress.hidden = !rb;
      if (rb) {
        const total = Math.max(1, rb.position + rb.lag);
        progress.max = total;
        progress.value = rb.position;
        progressText.textContent = [
          `${rb.state} v${rb.version}: ${rb.position} / ${rb.position + rb.lag}`,
          `${fmtRate(rb.events_per_second)}/s`,
          rb.eta_seconds != null ? `ETA ${fmtSeconds(rb.eta_seconds)}` : null,
          rb.running_here === false ? 'on another process' : null,
          rb.last_error ? `error${rb.error_position != null ? ` at ${rb.error_position}` : ''}: ${rb.last_error}` : null,
        ].filter(Boolean).join(' · ');
      } else {
        progressText.textContent = '—';
      }
      const last = p.last_rebuild;
      lastRebuild.dataset.number = last ? last.number : 0;
      lastRebuild.replaceChildren(...(last
        ? [`#${last.number} at ${last.position}${last.error ? ` · failed: ${last.error}` : ''}`,
          h('div', { class: 'muted' }, `finished ${last.finished_at}`)]
        : ['—']));
      lastRebuild.title = last && last.error ? last.error : '';
      lastRebuild.classList.toggle('bad', !!(last && last.error));

      const failed = p.state === 'failed';
      buttons.rebuild.disabled = !!rb || p.state === 'rebuilding' || pending.size > 0;
      buttons.skip.disabled = !failed || pending.size > 0;
      buttons.resume.disabled = !failed || pending.size > 0;
    }

    return { node, update };
  }

  // ------------------------------------------------------------------ sagas

  function viewSagas(c, r, main) {
    const heads = ['Name', 'State', 'Position', 'Checkpoint', 'Handled', 'Skipped', 'In flight', 'Retrying', 'Last error', 'State summary'];
    const tbody = h('tbody');
    main.append(heading('Sagas', h('span', { class: 'muted' }, 'refreshes every second')),
      h('table', { class: 'grid sagas' }, h('thead', null, h('tr', null,
        heads.map((t, i) => h('th', { class: i >= 2 && i < 8 ? 'num' : null }, t)))), tbody));
    const empty = placeholder('This process runs no sagas.');
    main.append(empty);
    const rows = new Map();
    poll(c, 1000, 'sagas', async () => {
      const data = await api('/sagas', c.signal);
      empty.hidden = (data.sagas || []).length > 0;
      syncRows(tbody, rows, data.sagas || [], () => sagaRow(heads.length));
    });
  }

  function sagaRow(span) {
    const cells = Array.from({ length: span }, (_, i) => h('td', { class: i >= 2 && i < 8 ? 'num' : null }));
    const state = badge('', 'saga-state');
    cells[1].append(state);
    const node = h('tr', { testid: 'saga-row' }, cells);
    function update(s) {
      node.dataset.name = s.name;
      cells[0].replaceChildren(h('b', null, s.name));
      setBadge(state, s.state);
      [s.position, s.checkpoint, s.events_handled, s.events_skipped, s.events_in_flight, s.events_retrying]
        .forEach((v, i) => { cells[i + 2].textContent = fmtCount(v); });
      const e = s.last_error;
      cells[8].textContent = e ? `at ${e.position} (${e.event_type})${e.skipped ? ', skipped' : ''}: ${e.error}` : '—';
      cells[8].title = e ? e.error : '';
      cells[8].className = e ? 'error-cell bad' : 'error-cell';
      // The summary is the saga's own shape: compact here, in full on hover.
      const summary = s.state_summary == null ? '—' : JSON.stringify(s.state_summary);
      cells[9].textContent = summary;
      cells[9].title = s.state_summary == null ? '' : JSON.stringify(s.state_summary, null, 2);
      cells[9].className = 'mono ellip muted';
    }
    return { node, update };
  }

  // ------------------------------------------------------------------- start

  async function init() {
    wireKeyForm();
    wireConfirm();
    try {
      const res = await fetch('/ui/config.json', { cache: 'no-store' });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      config = await res.json();
    } catch (e) {
      setError('config', `Cannot read /ui/config.json: ${e.message}`);
      return;
    }
    byTestId('app-name').textContent = config.app || '';
    byTestId('process').textContent = config.process || '';
    document.title = `annals · ${config.app || ''} (${config.process || ''})`;
    for (const a of document.querySelectorAll('.tabs a')) a.hidden = !VIEWS[a.dataset.view].needs();
    window.addEventListener('hashchange', route);
    route();
  }

  init();
})();
