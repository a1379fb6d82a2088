// One execution: its record (status, times, pack, image, runtime, the sandbox applied, the
// egress audit, the names of the keys it received), its output streaming live
// (resumed after a dropped connection), and a cancel button while it has not ended.

import { api, ApiError, executionPath } from './api.js';
import { badge, bytes, duration, every, field, fill, h, json, notice, time, visible } from './dom.js';
import { followOutput } from './events.js';

const FINAL = new Set(['succeeded', 'failed', 'timeout', 'oom', 'cancelled', 'error', 'invalid', 'abandoned']);
const REFRESH_MS = 2000;
// Text kept on the page per stream; past it the page says so (the record keeps its own share).
const SHOWN_BYTES = 2 << 20;

export function executionPage(view, id) {
  view.title(`Execution ${id.slice(0, 8)}`);
  const heading = h('h1', { tabindex: '-1' }, 'Execution');
  const status = h('span', { class: 'record-status' });
  const actions = h('div', { class: 'buttons' });
  const problem = h('div', { 'aria-live': 'polite' });
  const summary = h('dl', { class: 'fields' });
  const details = h('div', { class: 'details' });
  const outputState = h('span', { class: 'stream-state', role: 'status' });
  const stdout = pane('stdout');
  const stderr = pane('stderr');
  const outputSection = h('section', { class: 'output', 'aria-labelledby': 'output-title' },
    h('div', { class: 'title' }, h('h2', { id: 'output-title' }, 'Output'), outputState),
    h('div', { class: 'panes' }, stdout.element, stderr.element));

  fill(view.main,
    h('div', { class: 'title' }, heading, status, actions),
    problem, summary, outputSection, details);

  let record = null;
  let gap = false;
  let stopFollowing = null;

  let shown = null;
  const show = (next) => {
    record = next;
    // Drawn again only when it changed, so a reader's selection and focus stay put.
    const text = JSON.stringify({ ...next, stdout: null, stderr: null });
    if (text === shown) return;
    shown = text;
    fill(heading, `${next.action} `, h('span', { class: 'mono subtle' }, next.id));
    fill(status, badge(next.status));
    fill(summary, summaryFields(next));
    fill(details, detailSections(next));
    if (FINAL.has(next.status)) fill(actions);
    else if (!actions.firstChild) fill(actions, cancelButton(next, problem, refresh));
  };

  const refresh = async () => {
    try {
      show(await api(executionPath(id), { signal: view.signal }));
    } catch (error) {
      if (error?.name === 'AbortError') throw error;
      if (error instanceof ApiError && error.status === 404) {
        fill(view.main, h('h1', { tabindex: '-1' }, 'Execution'),
          notice(`No execution ${id} that this token may read.`));
        stopFollowing?.();
        return false;
      }
      fill(problem, notice(`Could not read the execution: ${error.message}`));
    }
    return !(record && FINAL.has(record.status));
  };

  stopFollowing = followOutput(id, {
    event(event) {
      if (event.type === 'stdout' || event.type === 'stderr') {
        let text;
        try {
          text = JSON.parse(event.data);
        } catch {
          return;
        }
        (event.type === 'stdout' ? stdout : stderr).add(String(text));
      } else if (event.type === 'gap') {
        gap = true;
        let skipped = {};
        try {
          skipped = JSON.parse(event.data);
        } catch { /* shown without the count */ }
        const target = skipped.stream === 'stderr' ? stderr : stdout;
        target.note(`[${skipped.skipped ?? 'some'} bytes skipped: this page read slower than the action printed; the record below keeps its share]`);
      } else if (event.type === 'end') {
        refresh().then(() => {
          if (gap && record) {
            stdout.reset(record.stdout || '');
            stderr.reset(record.stderr || '');
          }
        });
      }
    },
    state(name, detail) {
      const text = {
        connecting: 'connecting…',
        resuming: 'resuming…',
        live: 'live',
        reconnecting: `connection lost: trying again in ${Math.ceil((detail || 0) / 1000)} s`,
        ended: 'complete',
        refused: `not available (${detail})`,
        stopped: '',
      }[name] ?? name;
      fill(outputState, text);
      outputState.dataset.state = name;
    },
  });
  view.signal.addEventListener('abort', () => stopFollowing?.(), { once: true });

  every(REFRESH_MS, view.signal, refresh);
}

/** A pane that shows one stream's text as it arrives, bounded, scrolled along while the reader
 * is at its end. */
function pane(name) {
  const pre = h('pre', { class: `stream ${name}`, id: `stream-${name}`, tabindex: '0', 'aria-label': name });
  const element = h('section', { class: 'pane' }, h('h3', null, name), pre);
  let shown = 0;
  let full = false;
  const stick = (work) => {
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
    work();
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  };
  return {
    element,
    add(text) {
      if (full) return;
      let piece = text;
      if (shown + piece.length > SHOWN_BYTES) {
        piece = piece.slice(0, SHOWN_BYTES - shown);
        full = true;
      }
      shown += piece.length;
      stick(() => {
        pre.append(document.createTextNode(visible(piece)));
        if (full) pre.append(h('span', { class: 'note' }, '\n[the page shows no more of this stream; the record keeps its share]\n'));
      });
    },
    note(text) {
      stick(() => pre.append(h('span', { class: 'note' }, `\n${text}\n`)));
    },
    reset(text) {
      pre.replaceChildren();
      shown = 0;
      full = false;
      this.add(text);
    },
  };
}

function summaryFields(record) {
  const started = record.token_name ? record.token_name : null;
  return [
    field('Status', record.status),
    field('Exit code', record.exit_code),
    field('Error', record.error ? h('span', { class: 'error-text' }, record.error) : null),
    field('Started by', started),
    field('Queued', time(record.queued_at)),
    field('Started', time(record.started_at)),
    field('Finished', time(record.finished_at)),
    field('Duration', duration(record.duration_ms)),
    field('Preparing the image', duration(record.prepare_ms)),
    field('Time limit', record.timeout_seconds ? `${record.timeout_seconds} s` : null),
    field('Pack version', record.pack_version),
    field('Pack digest', record.pack_digest ? h('span', { class: 'mono wrap' }, record.pack_digest) : null),
    field('Image', record.image ? h('span', { class: 'mono wrap' }, record.image) : null),
    field('Runtime', record.runtime ? `${record.runtime} ${record.runtime_version || ''}`.trim() : null),
    field('Exec id', record.exec_id ? h('span', { class: 'mono' }, record.exec_id) : null),
    field('Idempotency key', record.idempotency_key),
    field('Output cut', [record.stdout_truncated && 'stdout', record.stderr_truncated && 'stderr', record.result_truncated && 'result']
      .filter(Boolean).join(', ') || null),
    field('Result not parsed', record.result_error),
  ];
}

function detailSections(record) {
  const sections = [];
  if (record.result !== undefined && record.result !== null) {
    sections.push(section('Result', h('pre', { class: 'json', tabindex: '0' }, json(record.result))));
  }
  if (Array.isArray(record.keys) && record.keys.length) {
    sections.push(section('Keys received', table(['Name', 'From'],
      record.keys.map((key) => [h('span', { class: 'mono' }, key.name), key.scope])),
    h('p', { class: 'help' }, 'Names only: values never leave the run\'s input.')));
  }
  if (record.egress) sections.push(section('Network (egress)', egressView(record.egress)));
  if (record.sandbox && typeof record.sandbox === 'object') {
    sections.push(section('Sandbox', h('dl', { class: 'fields' },
      Object.entries(record.sandbox).map(([key, value]) => field(key, typeof value === 'object' && value !== null ? json(value) : String(value))))));
  }
  return sections;
}

function section(title, ...content) {
  return h('section', null, h('h2', null, title), content);
}

function table(columns, rows) {
  return h('div', { class: 'scroll' }, h('table', null,
    h('thead', null, h('tr', null, columns.map((name) => h('th', { scope: 'col' }, name)))),
    h('tbody', null, rows.map((cells) => h('tr', null, cells.map((cell) => h('td', null, cell ?? '—')))))));
}

function egressView(egress) {
  const granted = Array.isArray(egress.granted) ? egress.granted : [];
  const connections = Array.isArray(egress.connections) ? egress.connections : [];
  return [
    granted.length
      ? table(['Destination', 'Granted by', 'Declared by'],
        granted.map((grant) => [h('span', { class: 'mono' }, typeof grant.destination === 'string' ? grant.destination : json(grant.destination)), grant.granted_by, grant.declared_by]))
      : h('p', null, 'No destination was granted.'),
    h('dl', { class: 'fields' },
      field('Attempts', egress.attempts),
      field('Refused', egress.refused),
      field('Bytes sent', bytes(egress.bytes_sent)),
      field('Bytes received', bytes(egress.bytes_received))),
    connections.length
      ? table(['Destination', 'Kind', 'Outcome', 'Address', 'Sent', 'Received', 'Time'],
        connections.map((c) => [
          h('span', { class: 'mono' }, `${c.host}:${c.port}`), c.kind,
          c.allowed ? (c.error ? `allowed, failed: ${c.error}` : 'allowed') : `refused: ${c.refusal || ''}`,
          c.address, bytes(c.bytes_sent), bytes(c.bytes_received), duration(c.duration_ms)]))
      : null,
    egress.truncated ? h('p', { class: 'help' }, 'More attempts were made than the record lists.') : null,
    egress.incomplete ? notice(`The audit may be incomplete: ${egress.incomplete}`, 'warning') : null,
  ];
}

function cancelButton(record, problem, refresh) {
  const box = h('div', { class: 'buttons' });
  const ask = () => {
    const confirm = h('button', {
      type: 'button', class: 'danger', id: 'cancel-confirm',
      on: {
        click: async () => {
          confirm.disabled = true;
          try {
            await api(`${executionPath(record.id)}/cancel`, { method: 'POST' });
            fill(problem, notice('Cancel asked: the run gets SIGTERM, its grace, then SIGKILL.', 'info'));
          } catch (error) {
            fill(problem, notice(`Could not cancel: ${error.message}`));
          }
          refresh();
        },
      },
    }, 'Yes, cancel it');
    const keep = h('button', { type: 'button', class: 'secondary', on: { click: () => { fill(box, first()); box.querySelector('button')?.focus(); } } }, 'Keep it running');
    fill(box, h('span', null, 'Cancel this run?'), confirm, keep);
    confirm.focus();
  };
  const first = () => h('button', { type: 'button', class: 'danger', id: 'cancel', on: { click: ask } }, 'Cancel run');
  return fill(box, first());
}
