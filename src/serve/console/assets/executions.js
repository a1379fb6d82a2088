// The executions page: newest first, filtered by action and status, paged by the API's cursor,
// and kept up to date while it is on screen (the page it shows is fetched again every few
// seconds). The filters and the cursor live in the fragment, so Back and reload keep them.

import { api, withQuery } from './api.js';
import { badge, duration, every, fill, h, notice, time } from './dom.js';

export const STATUSES = ['queued', 'running', 'succeeded', 'failed', 'timeout', 'oom', 'cancelled',
  'error', 'invalid', 'abandoned'];
const PAGE_SIZE = 25;
const REFRESH_MS = 2000;

// Cursors of the pages before the one on screen, per filter, so "Newer" can go back.
const earlier = new Map();

function address({ action, status, cursor }) {
  const query = new URLSearchParams();
  if (action) query.set('action', action);
  if (status) query.set('status', status);
  if (cursor) query.set('cursor', cursor);
  const text = query.toString();
  return text ? `#/executions?${text}` : '#/executions';
}

export function executionsPage(view, params) {
  view.title('Executions');
  const action = params.get('action') || '';
  const status = STATUSES.includes(params.get('status')) ? params.get('status') : '';
  const cursor = params.get('cursor') || '';
  const filterKey = `${action}\u0000${status}`;
  const stack = earlier.get(filterKey) || [];
  earlier.set(filterKey, stack);

  const actionInput = h('input', { id: 'filter-action', name: 'action', list: 'action-refs', value: action, autocomplete: 'off', spellcheck: 'false' });
  const refs = h('datalist', { id: 'action-refs' });
  const statusSelect = h('select', { id: 'filter-status', name: 'status' },
    h('option', { value: '' }, 'any'),
    STATUSES.map((name) => h('option', { value: name, selected: name === status }, name)));
  const filters = h('form', {
    class: 'filters', role: 'search',
    on: {
      submit: (event) => {
        event.preventDefault();
        location.hash = address({ action: actionInput.value.trim(), status: statusSelect.value });
      },
    },
  },
  h('div', { class: 'field' }, h('label', { for: 'filter-action' }, 'Action'), actionInput, refs),
  h('div', { class: 'field' }, h('label', { for: 'filter-status' }, 'Status'), statusSelect),
  h('button', { type: 'submit' }, 'Filter'),
  (action || status) ? h('a', { href: '#/executions', class: 'button secondary' }, 'Clear') : null);

  const updated = h('span', { class: 'updated' });
  const problem = h('div', { 'aria-live': 'polite' });
  const body = h('tbody');
  const table = h('div', { class: 'scroll' }, h('table', { class: 'executions' },
    h('caption', { class: 'visually-hidden' }, 'Executions, newest first'),
    h('thead', null, h('tr', null,
      ['Status', 'Action', 'Execution', 'Started by', 'Queued', 'Duration', 'Exit'].map((name) => h('th', { scope: 'col' }, name)))),
    body));
  const newer = h('a', {
    class: 'button secondary', href: cursor ? address({ action, status, cursor: stack.at(-1) || '' }) : '#/executions',
    'aria-disabled': cursor ? null : 'true',
    on: { click: (event) => { if (!cursor) event.preventDefault(); else stack.pop(); } },
  }, '← Newer');
  const older = h('a', { class: 'button secondary', href: '#/executions', 'aria-disabled': 'true' }, 'Older →');
  const pager = h('nav', { class: 'pager', 'aria-label': 'Pages' }, newer, older);

  fill(view.main,
    h('div', { class: 'title' }, h('h1', { tabindex: '-1' }, 'Executions'), updated),
    filters, problem, table, pager);

  api('/v1/actions', { signal: view.signal })
    .then((listed) => fill(refs, (listed.actions || []).map((a) => h('option', { value: a.ref }))))
    .catch(() => {});

  let shown = null;
  every(REFRESH_MS, view.signal, async () => {
    let page;
    try {
      page = await api(withQuery('/v1/executions', { action, status, cursor, limit: PAGE_SIZE }), { signal: view.signal });
    } catch (error) {
      if (error?.name === 'AbortError') throw error;
      fill(problem, notice(`Could not list executions: ${error.message}`));
      return;
    }
    fill(problem);
    const now = new Date();
    fill(updated, `Live · updated ${now.toLocaleTimeString()}`);
    const text = JSON.stringify(page);
    if (text === shown) return;
    shown = text;
    const rows = (page.executions || []).map(row);
    fill(body, rows.length ? rows
      : h('tr', null, h('td', { colspan: '7', class: 'empty' }, cursor ? 'No older executions.' : 'No executions yet.')));
    if (page.next_cursor) {
      older.setAttribute('href', address({ action, status, cursor: page.next_cursor }));
      older.removeAttribute('aria-disabled');
      older.onclick = () => stack.push(cursor);
    } else {
      older.setAttribute('href', '#/executions');
      older.setAttribute('aria-disabled', 'true');
      older.onclick = (event) => event.preventDefault();
    }
  });
}

function row(execution) {
  const id = String(execution.id);
  return h('tr', { 'data-id': id },
    h('td', null, badge(execution.status)),
    h('td', null, execution.action),
    h('td', null, h('a', { href: `#/executions/${encodeURIComponent(id)}`, class: 'mono' }, id.slice(0, 8))),
    h('td', null, execution.token_name || '—'),
    h('td', null, time(execution.queued_at)),
    h('td', null, duration(execution.duration_ms) || '—'),
    h('td', null, execution.exit_code ?? '—'));
}
