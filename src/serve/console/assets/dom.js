// Elements made from data without ever parsing markup: every string becomes a text node, with
// terminal escapes and other control characters made visible instead of obeyed. Pages build
// everything through h(); nothing in the console assigns HTML (the server's Trusted Types
// policy would refuse it anyway).

// C0 and C1 controls but tab and newline, DEL, and the invisible marks that reorder text.
const HIDDEN = /\r\n|[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/g;

/** The text as a person should see it: ESC shows as ␛, other C0 controls as their control
 * pictures, and the rest (C1, bidi overrides, zero-width marks) as <U+XXXX>. */
export function visible(text) {
  return String(text).replace(HIDDEN, (found) => {
    if (found === '\r\n') return '\n';
    const code = found.codePointAt(0);
    if (code < 0x20) return String.fromCodePoint(0x2400 + code);
    if (code === 0x7f) return '\u2421';
    return `<U+${code.toString(16).toUpperCase().padStart(4, '0')}>`;
  });
}

// Links and sources the console makes: its own routes and its API (never `//host`).
const SAFE_URL = /^(#\/|#main$|\/(?!\/))/;

/** An element: `props` sets attributes (never one that runs code), `on` listeners, `value`
 * and `checked` as properties; children are nodes or text. */
export function h(tag, props, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'on') {
      for (const [type, listener] of Object.entries(value)) element.addEventListener(type, listener);
    } else if (key === 'value' || key === 'checked') {
      element[key] = value;
    } else if (/^on/i.test(key) || key === 'style' || key === 'srcdoc') {
      throw new Error(`h(): attribute ${key} is not allowed`);
    } else if ((key === 'href' || key === 'src' || key === 'action') && !SAFE_URL.test(String(value))) {
      throw new Error(`h(): ${key} must be one of the console's own addresses`);
    } else {
      element.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(element, children);
  return element;
}

/** Appends children (nodes, text, nested lists; null and false are skipped). */
export function append(element, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(visible(child)));
  }
  return element;
}

/** Replaces an element's children. */
export function fill(element, ...children) {
  element.replaceChildren();
  return append(element, children);
}

/** A term and its description, for <dl> lists of record fields; nothing when there is no value. */
export function field(term, value) {
  if (value === undefined || value === null || value === '') return null;
  return [h('dt', null, term), h('dd', null, value)];
}

/** A JSON value as text: strings as they are, anything else indented. */
export function json(value) {
  return typeof value === 'string' ? value : JSON.stringify(value, null, 2);
}

/** A status as a badge whose colour says how it ended. */
export function badge(status) {
  return h('span', { class: `badge status-${/^[a-z]+$/.test(status) ? status : 'unknown'}` }, status);
}

/** An RFC 3339 time in the reader's time zone, the exact value on hover. */
export function time(rfc3339) {
  if (!rfc3339) return null;
  const at = new Date(rfc3339);
  if (Number.isNaN(at.getTime())) return rfc3339;
  const pad = (n) => String(n).padStart(2, '0');
  const text = `${at.getFullYear()}-${pad(at.getMonth() + 1)}-${pad(at.getDate())} ` +
    `${pad(at.getHours())}:${pad(at.getMinutes())}:${pad(at.getSeconds())}`;
  return h('time', { datetime: rfc3339, title: rfc3339 }, text);
}

/** Milliseconds for a person. */
export function duration(ms) {
  if (ms === undefined || ms === null) return null;
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  const minutes = Math.floor(ms / 60000);
  return `${minutes} min ${Math.round((ms % 60000) / 1000)} s`;
}

/** Bytes for a person. */
export function bytes(n) {
  if (n === undefined || n === null) return null;
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1 << 30) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  return `${(n / (1 << 30)).toFixed(1)} GiB`;
}

/** A message in the page for an error (or for news), announced to screen readers. */
export function notice(text, kind = 'error') {
  return h('p', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text);
}

/** Waits `ms`, or less when `signal` is aborted. */
export function pause(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

/** Calls `work` now and every `ms` until `signal` is aborted, skipping rounds while the tab is
 * hidden; a round starts only when the last one ended. */
export async function every(ms, signal, work) {
  while (!signal.aborted) {
    if (document.visibilityState !== 'hidden') {
      try {
        if (await work() === false) return;
      } catch (error) {
        if (error?.name === 'AbortError') return;
      }
    }
    await pause(ms, signal);
  }
}
