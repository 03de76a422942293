// llmgate status page. Reads the admin API with the admin key the operator typed (kept in
// this tab's sessionStorage only, sent as a bearer token, never put in a URL), every
// POLL_MS, one poll at a time, each bounded by TIMEOUT_MS. Everything from the API is put in
// the page as text (textContent) or as numbers in SVG attributes, never as markup.
'use strict';

(() => {
  const POLL_MS = 3000;
  const TIMEOUT_MS = 2500;
  const STORE = 'llmgate.adminKey';
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const CIRCUIT = { closed: 'closed', ejected: 'ejected', half_open: 'half-open' };
  const SEVERITY = { ejected: 0, half_open: 1, closed: 2 };

  let timer = null;
  let polling = false;
  let lastGood = null;
  // The key when sessionStorage is unavailable.
  let memoryKey = '';

  const $ = (id) => document.getElementById(id);

  /** An element with a class and text (or children). */
  function el(tag, className, ...children) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    for (const child of children) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** An SVG element with attributes. */
  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    return node;
  }

  // ---- the key ----

  function storedKey() {
    try {
      return sessionStorage.getItem(STORE) || '';
    } catch (_) {
      return '';
    }
  }

  function storeKey(key) {
    try {
      sessionStorage.setItem(STORE, key);
    } catch (_) {
      // Storage off: the key lives until the page is left.
    }
  }

  function forgetKey() {
    try {
      sessionStorage.removeItem(STORE);
    } catch (_) {
      // Nothing stored.
    }
    memoryKey = '';
  }

  const currentKey = () => storedKey() || memoryKey;

  // ---- messages and views ----

  function say(text, kind) {
    const box = $('message');
    box.textContent = text;
    box.className = 'message' + (kind === 'info' ? ' info' : '');
    box.hidden = !text;
  }

  function showLogin(text) {
    clearTimeout(timer);
    $('login').hidden = false;
    $('dashboard').hidden = true;
    $('forget').hidden = true;
    say(text || '', 'error');
    $('admin-key').value = '';
    $('admin-key').focus();
  }

  function showDashboard() {
    $('login').hidden = true;
    $('dashboard').hidden = false;
    $('forget').hidden = false;
  }

  // ---- formatting ----

  function fmtNumber(n, digits) {
    if (n === null || n === undefined || !Number.isFinite(n)) return '–';
    return n.toLocaleString('en-US', { maximumFractionDigits: digits || 0 });
  }

  function fmtMs(ms) {
    if (ms === null || ms === undefined || !Number.isFinite(ms)) return '–';
    if (ms >= 1000) return (ms / 1000).toFixed(ms >= 10000 ? 0 : 2) + ' s';
    return (ms < 10 ? ms.toFixed(1) : Math.round(ms)) + ' ms';
  }

  function fmtUsd(usd) {
    if (usd === null || usd === undefined || !Number.isFinite(usd)) return '–';
    return '$' + usd.toFixed(usd < 10 ? 2 : 0);
  }

  function fmtPercent(rate) {
    if (rate === null || rate === undefined || !Number.isFinite(rate)) return '–';
    return (rate * 100).toFixed(rate < 0.1 && rate > 0 ? 1 : 0) + ' %';
  }

  /** "in 12 s" / "3 min ago" from an RFC 3339 time. */
  function relative(iso) {
    const at = Date.parse(iso);
    if (!Number.isFinite(at)) return '–';
    const secs = Math.round((at - Date.now()) / 1000);
    const abs = Math.abs(secs);
    const span = abs < 90 ? abs + ' s' : abs < 5400 ? Math.round(abs / 60) + ' min' : Math.round(abs / 3600) + ' h';
    return secs >= 0 ? 'in ' + span : span + ' ago';
  }

  function localTime(iso) {
    const at = new Date(iso);
    return Number.isFinite(at.getTime()) ? at.toLocaleString() : '–';
  }

  // ---- bars ----

  /** A usage bar: `value` of `limit` (null: unlimited). */
  function bar(value, limit) {
    const track = el('div', 'bar');
    if (limit === null || limit === undefined || !(limit > 0)) {
      track.classList.add('unlimited');
      return track;
    }
    const share = Math.max(0, Math.min(1, value / limit));
    const fill = el('div', 'fill' + (share >= 0.9 ? ' bad' : share >= 0.7 ? ' warn' : ''));
    fill.style.width = (share * 100).toFixed(1) + '%';
    track.append(fill);
    return track;
  }

  // ---- header ----

  function renderHeader(status) {
    $('version').textContent = 'v' + status.version;
    const hash = status.config.hash;
    $('config-hash').textContent = hash ? hash.slice(0, 12) : 'embedded default';
    $('config-hash').title = (status.config.path || 'embedded default') + (hash ? '\nsha256 ' + hash : '');
    $('config-loaded').textContent = localTime(status.config.loaded_at) + ' (' + relative(status.config.loaded_at) + ')';
    const backend = status.state_backend;
    const badge = el('span', 'badge ' + (backend.up ? 'up' : 'down'), backend.up ? 'up' : 'down');
    $('backend').replaceChildren(document.createTextNode(backend.backend + ' '), badge);
  }

  function renderUpdated(ok, detail) {
    const at = lastGood ? lastGood.toLocaleTimeString() : 'never';
    if (ok) {
      $('updated').replaceChildren(document.createTextNode(at));
    } else {
      $('updated').replaceChildren(el('span', 'badge stale', 'stale'), document.createTextNode(' ' + at + ' — ' + detail));
    }
  }

  // ---- targets ----

  function renderTargets(targets) {
    const sorted = targets.slice().sort((a, b) =>
      (SEVERITY[a.circuit] ?? 3) - (SEVERITY[b.circuit] ?? 3) || (a.target < b.target ? -1 : a.target > b.target ? 1 : 0));
    const rows = sorted.map((t) => {
      const row = el('tr');
      row.dataset.circuit = t.circuit;
      row.append(
        el('td', 'target', t.target),
        el('td', '', el('span', 'badge ' + (CIRCUIT[t.circuit] ? t.circuit : 'closed'), CIRCUIT[t.circuit] || t.circuit)),
        el('td', 'num', fmtNumber(t.consecutive_failures)),
        el('td', '', t.cooldown_until && t.circuit !== 'closed' ? relative(t.cooldown_until) : '–'),
        el('td', 'num', fmtNumber(t.recent_attempts)),
        el('td', '', rateCell(t.recent_errors, t.recent_attempts, t.recent_error_rate)),
      );
      if (t.cooldown_until) row.cells[3].title = localTime(t.cooldown_until);
      return row;
    });
    if (rows.length === 0) rows.push(el('tr', '', el('td', 'muted', 'No targets configured.')));
    $('targets').tBodies[0].replaceChildren(...rows);
  }

  function rateCell(errors, attempts, rate) {
    const cell = el('div', 'rate');
    cell.append(bar(errors || 0, attempts || null), el('span', '', fmtPercent(rate)));
    if (attempts) cell.title = errors + ' of ' + attempts + ' attempts failed';
    return cell;
  }

  // ---- keys ----

  function renderKeys(keys) {
    const box = $('keys');
    if (keys.length === 0) {
      box.replaceChildren(el('p', 'muted', 'No gateway keys: completions need no key.'));
      return;
    }
    box.replaceChildren(...keys.map(renderKey));
  }

  function renderKey(key) {
    const usage = key.usage;
    const limits = key.limits;
    const card = el('div', 'key');
    card.dataset.key = key.name;
    card.append(el('h3', '', key.name));
    if (!usage) {
      card.append(el('p', 'muted small', 'usage unavailable (state backend down)'));
      return card;
    }
    const grid = el('div', 'usage');
    const line = (label, value, limit, fmt) => {
      const text = fmt(value) + ' / ' + (limit === null || limit === undefined ? 'no limit' : fmt(limit));
      grid.append(el('span', 'label', label), bar(value, limit), el('span', 'value', text));
    };
    line('requests/min', usage.requests_this_minute, limits.rpm, fmtNumber);
    line('tokens/min', usage.tokens_this_minute, limits.tpm, fmtNumber);
    line('in flight', usage.in_flight, limits.max_concurrent, fmtNumber);
    line('spend' + (limits.budget_window ? ' (' + limits.budget_window + ')' : ''), usage.spend_usd, limits.budget_usd, fmtUsd);
    card.append(grid);
    return card;
  }

  // ---- models ----

  function renderModels(stats) {
    const active = stats.models.filter((m) => m.requests > 0);
    const idle = stats.models.filter((m) => m.requests === 0).map((m) => m.model);
    const cards = active.map((m) => renderModel(m, stats.window_secs));
    if (cards.length === 0) cards.push(el('p', 'muted', 'No requests in the last minute.'));
    $('models').replaceChildren(...cards);
    const shown = idle.slice(0, 40).join(', ') + (idle.length > 40 ? ', and ' + (idle.length - 40) + ' more' : '');
    $('idle').textContent = idle.length ? 'Idle in the last minute: ' + shown : '';
  }

  function renderModel(m, windowSecs) {
    const card = el('div', 'model');
    card.dataset.model = m.model;
    const last = m.series.requests[m.series.requests.length - 1] || 0;
    const summary = el('div', 'summary',
      el('span', '', el('b', '', fmtNumber(last, 1)), ' rps now'),
      el('span', '', el('b', '', fmtNumber(m.requests / windowSecs, 2)), ' rps avg'),
    );
    summary.title = fmtNumber(m.requests) + ' requests, ' + fmtNumber(m.errors) + ' errors in the last ' + windowSecs + ' s';
    if (m.errors > 0) summary.append(el('span', 'errors', el('b', '', fmtNumber(m.errors) + ' errors (' + fmtPercent(m.error_rate) + ')')));
    const legend = el('div', 'legend',
      ...['p50', 'p95', 'p99'].map((p) => el('span', '', el('i', p), p + ' ', el('b', '', fmtMs(m.latency[p + '_ms'])))));
    card.append(
      el('h3', '', m.model),
      summary,
      chartBox('requests / s', rpsChart(m.series.requests, m.series.errors), fmtNumber(Math.max(...m.series.requests), 0) + ' max'),
      chartBox('latency', latencyChart(m.series), fmtMs(maxOf(m.series.p99_ms)) + ' max'),
      legend,
    );
    return card;
  }

  function chartBox(title, chart, scale) {
    return el('div', 'chart', el('div', 'title', title), el('span', 'scale', scale), chart);
  }

  const W = 300;
  const H = 48;

  function maxOf(values) {
    return values.reduce((max, v) => (Number.isFinite(v) && v > max ? v : max), 0);
  }

  function frame() {
    const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img' });
    root.append(svg('line', { class: 'grid', x1: 0, y1: H - 0.5, x2: W, y2: H - 0.5, 'vector-effect': 'non-scaling-stroke' }));
    return root;
  }

  /** Bars of requests per second, errors in red at their foot. */
  function rpsChart(requests, errors) {
    const root = frame();
    const max = Math.max(1, maxOf(requests));
    const step = W / requests.length;
    requests.forEach((n, i) => {
      if (!(n > 0)) return;
      const h = Math.max(1, (n / max) * (H - 2));
      root.append(svg('rect', { class: 'rps', x: i * step + 0.5, y: H - h, width: Math.max(1, step - 1), height: h, 'stroke-width': 0 }));
      const e = errors[i] || 0;
      if (e > 0) {
        const eh = Math.max(1, (e / max) * (H - 2));
        root.append(svg('rect', { class: 'err', x: i * step + 0.5, y: H - eh, width: Math.max(1, step - 1), height: eh }));
      }
    });
    return root;
  }

  /** p50, p95 and p99 lines; gaps where a second had no samples. */
  function latencyChart(series) {
    const root = frame();
    const max = Math.max(1, maxOf(series.p99_ms));
    const step = W / series.p50_ms.length;
    for (const name of ['p99', 'p95', 'p50']) {
      for (const points of segments(series[name + '_ms'], step, max)) {
        root.append(svg('polyline', { class: name, points, 'stroke-width': 1.5, 'vector-effect': 'non-scaling-stroke' }));
      }
    }
    return root;
  }

  /** The runs of non-null values as SVG point lists (a lone point is drawn as a short dash). */
  function segments(values, step, max) {
    const runs = [];
    let run = [];
    values.forEach((v, i) => {
      if (v === null || !Number.isFinite(v)) {
        if (run.length) runs.push(run);
        run = [];
        return;
      }
      const x = i * step + step / 2;
      const y = H - 1 - (v / max) * (H - 3);
      run.push([x, y]);
    });
    if (run.length) runs.push(run);
    return runs.map((r) => {
      if (r.length === 1) r = [[r[0][0] - step / 2, r[0][1]], [r[0][0] + step / 2, r[0][1]]];
      return r.map(([x, y]) => x.toFixed(1) + ',' + y.toFixed(1)).join(' ');
    });
  }

  // ---- polling ----

  class HttpError extends Error {
    constructor(status, path) {
      super('HTTP ' + status + ' from ' + path);
      this.status = status;
    }
  }

  async function getJson(path, key, signal) {
    const response = await fetch(path, {
      headers: { Authorization: 'Bearer ' + key, Accept: 'application/json' },
      signal,
      cache: 'no-store',
      credentials: 'omit',
      redirect: 'error',
    });
    if (!response.ok) throw new HttpError(response.status, path);
    return response.json();
  }

  async function poll() {
    const key = currentKey();
    if (polling || !key) return;
    polling = true;
    const abort = new AbortController();
    const deadline = setTimeout(() => abort.abort(), TIMEOUT_MS);
    try {
      const [status, keys, stats] = await Promise.all(
        ['/admin/status', '/admin/keys', '/admin/stats'].map((path) => getJson(path, key, abort.signal)));
      if (currentKey() !== key) return; // forgotten meanwhile
      lastGood = new Date();
      showDashboard();
      say('');
      renderHeader(status);
      renderTargets(status.targets);
      renderKeys(keys.keys);
      renderModels(stats);
      renderUpdated(true);
    } catch (error) {
      if (currentKey() !== key || !failed(error)) return;
    } finally {
      clearTimeout(deadline);
      polling = false;
    }
    schedule();
  }

  /** Shows why a poll failed; false when polling stops (the key was refused). */
  function failed(error) {
    if (error instanceof HttpError && (error.status === 401 || error.status === 403)) {
      forgetKey();
      showLogin('The gateway refused this key (HTTP ' + error.status + '): it is not an admin key. Type an admin key.');
      return false;
    }
    if (error instanceof HttpError && error.status === 404) {
      forgetKey();
      showLogin('The admin API is off on this gateway (no [auth] admin_keys configured), so there is nothing to show.');
      return false;
    }
    const detail = error && error.name === 'AbortError' ? 'timed out' : String((error && error.message) || error);
    if (lastGood) {
      renderUpdated(false, detail);
    } else {
      say('Cannot reach the admin API: ' + detail + '. Retrying…');
    }
    return true;
  }

  function schedule() {
    clearTimeout(timer);
    if (currentKey()) timer = setTimeout(poll, POLL_MS);
  }

  function start() {
    $('login-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const key = $('admin-key').value.trim();
      $('admin-key').value = '';
      if (!key) return;
      memoryKey = key;
      storeKey(key);
      say('Loading…', 'info');
      poll();
    });
    $('forget').addEventListener('click', () => {
      forgetKey();
      lastGood = null;
      showLogin('');
    });
    if (currentKey()) {
      poll();
    } else {
      showLogin('');
    }
  }

  start();
})();
