// Runtimes (the catalog's versions, their images and what probing verified) and health (is the
// server up and ready, and its load: the figures /metrics gives, for tokens that may read them).

import { api, ApiError, headers } from './api.js';
import { bytes, every, fill, h, notice, time } from './dom.js';

const HEALTH_REFRESH_MS = 5000;

export function runtimesPage(view) {
  view.title('Runtimes');
  const body = h('div', null, h('p', null, 'Loading…'));
  fill(view.main, h('h1', { tabindex: '-1' }, 'Runtimes'), body);
  api('/v1/runtimes', { signal: view.signal }).then((listed) => {
    const runtimes = listed.runtimes || [];
    if (!runtimes.length) {
      fill(body, h('p', null, 'The catalog has no runtime.'));
      return;
    }
    fill(body, h('div', { class: 'scroll' }, h('table', null,
      h('thead', null, h('tr', null, ['Runtime', 'Version', 'Found', 'Image', 'Available', 'Verified'].map((n) => h('th', { scope: 'col' }, n)))),
      h('tbody', null, runtimes.map((r) => h('tr', null,
        h('td', null, r.runtime),
        h('td', null, r.version),
        h('td', null, r.detected_version || '—'),
        h('td', null, h('span', { class: 'mono wrap', title: r.image_id || 'not on the engine' }, r.image)),
        h('td', null, availability(r)),
        h('td', null, r.verified_at ? [time(r.verified_at), r.cached ? ' (cached)' : ''] : 'not yet')))))),
    h('p', { class: 'help' }, 'Versions are verified by running each image\'s version command once; the result is cached by image id.'));
  }).catch((error) => {
    if (error?.name !== 'AbortError') fill(body, notice(`Could not list runtimes: ${error.message}`));
  });
}

function availability(r) {
  if (r.available === true) return h('span', { class: 'badge status-succeeded' }, 'yes');
  if (r.available === false) return [h('span', { class: 'badge status-failed' }, 'no'), r.reason ? h('span', { class: 'reason' }, ` ${r.reason}`) : null];
  return h('span', { class: 'badge status-queued' }, 'not verified');
}

export function healthPage(view) {
  view.title('Health');
  const updated = h('span', { class: 'updated' });
  const ready = h('section', { 'aria-labelledby': 'ready-title' }, h('h2', { id: 'ready-title' }, 'Readiness'));
  const load = h('section', { 'aria-labelledby': 'load-title' }, h('h2', { id: 'load-title' }, 'Load'));
  fill(view.main, h('div', { class: 'title' }, h('h1', { tabindex: '-1' }, 'Health'), updated), ready, load);
  every(HEALTH_REFRESH_MS, view.signal, async () => {
    const [readiness, metrics] = await Promise.allSettled([
      readyz(view.signal),
      api('/metrics', { signal: view.signal }),
    ]);
    fill(updated, `Live · updated ${new Date().toLocaleTimeString()}`);
    fill(ready, h('h2', { id: 'ready-title' }, 'Readiness'),
      readiness.status === 'fulfilled' ? readinessView(readiness.value) : notice(`Could not ask: ${readiness.reason?.message}`));
    let content;
    if (metrics.status === 'fulfilled') content = loadView(parseMetrics(String(metrics.value)));
    else if (metrics.reason instanceof ApiError && metrics.reason.status === 403) {
      content = h('p', null, 'The load figures (/metrics) need a token with the admin scope.');
    } else content = notice(`Could not read /metrics: ${metrics.reason?.message}`);
    fill(load, h('h2', { id: 'load-title' }, 'Load'), content);
  });
}

/** /readyz: 200 when ready, 503 with the checks that are not: both are answers here. */
async function readyz(signal) {
  const response = await fetch('/readyz', { headers: headers(), cache: 'no-store', credentials: 'omit', signal });
  if (response.status === 200 || response.status === 503) return response.json();
  throw new Error(`the server answered ${response.status}`);
}

function readinessView(answer) {
  const checks = answer.checks || {};
  return [
    h('p', null, answer.ready ? h('span', { class: 'badge status-succeeded' }, 'ready') : h('span', { class: 'badge status-failed' }, 'not ready')),
    h('dl', { class: 'fields' }, Object.entries(checks).map(([name, value]) => [h('dt', null, name), h('dd', null, String(value))])),
  ];
}

/** The samples of a Prometheus/OpenMetrics text: [{ name, labels, value }]. */
export function parseMetrics(text) {
  const samples = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const match = line.match(/^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!match) continue;
    const labels = {};
    for (const [, key, value] of (match[2] || '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      labels[key] = value.replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
    }
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return samples;
}

function loadView(samples) {
  const one = (name) => samples.find((s) => s.name === name)?.value ?? 0;
  const all = (name) => samples.filter((s) => s.name === name);
  const byStatus = new Map();
  const byAction = new Map();
  const entry = (action) => {
    if (!byAction.has(action)) byAction.set(action, { runs: 0, failed: 0, seconds: 0, count: 0, warm: 0 });
    return byAction.get(action);
  };
  for (const s of all('packbox_executions_total')) {
    byStatus.set(s.labels.status, (byStatus.get(s.labels.status) || 0) + s.value);
    const e = entry(s.labels.action);
    e.runs += s.value;
    if (s.labels.status !== 'succeeded') e.failed += s.value;
  }
  for (const s of all('packbox_execution_duration_seconds_sum')) entry(s.labels.action).seconds += s.value;
  for (const s of all('packbox_execution_duration_seconds_count')) entry(s.labels.action).count += s.value;
  let warm = 0;
  for (const s of all('packbox_warm_idle_containers')) {
    warm += s.value;
    entry(s.labels.action).warm += s.value;
  }
  const figure = (label, value) => h('div', { class: 'figure' }, h('span', { class: 'value' }, String(value)), h('span', { class: 'label' }, label));
  return [
    h('div', { class: 'figures' },
      figure('running', one('packbox_executions_in_flight')),
      figure('queued', one('packbox_queue_depth')),
      figure('warm containers idle', warm),
      figure('environment builds', one('packbox_env_builds_total')),
      figure('engine errors', one('packbox_engine_errors_total')),
      figure('records', bytes(one('packbox_records_bytes')))),
    byStatus.size ? h('p', null, 'Ended since the server started: ',
      [...byStatus].map(([status, n], i) => [i ? ', ' : '', `${n} ${status}`])) : h('p', null, 'No execution has ended since the server started.'),
    byAction.size ? h('div', { class: 'scroll' }, h('table', null,
      h('thead', null, h('tr', null, ['Action', 'Ended', 'Not succeeded', 'Mean time', 'Warm idle'].map((n) => h('th', { scope: 'col' }, n)))),
      h('tbody', null, [...byAction].sort().map(([action, e]) => h('tr', null,
        h('td', null, action), h('td', null, String(e.runs)), h('td', null, String(e.failed)),
        h('td', null, e.count ? `${(e.seconds / e.count).toFixed(2)} s` : '—'), h('td', null, String(e.warm))))))) : null,
  ];
}
