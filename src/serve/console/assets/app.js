// The console's shell: sign-in, the header and its navigation, and the router that maps the
// address's fragment (#/executions, #/executions/ID, #/actions, #/actions/REF, #/runtimes,
// #/health) to a page. The fragment never leaves the browser and never holds a token.

import { api, ApiError, forget, keepToken, token, whenUnauthorized } from './api.js';
import { fill, h, notice } from './dom.js';
import { executionsPage } from './executions.js';
import { executionPage } from './execution.js';
import { actionPage, actionsPage } from './actions.js';
import { healthPage, runtimesPage } from './status.js';

const PAGES = [
  [/^#\/executions\/([^/?]+)$/, (m, view) => executionPage(view, decodeURIComponent(m[1]))],
  [/^#\/executions(?:\?(.*))?$/, (m, view) => executionsPage(view, new URLSearchParams(m[1] || ''))],
  [/^#\/actions\/([^/?]+)$/, (m, view) => actionPage(view, decodeURIComponent(m[1]))],
  [/^#\/actions$/, (m, view) => actionsPage(view)],
  [/^#\/runtimes$/, (m, view) => runtimesPage(view)],
  [/^#\/health$/, (m, view) => healthPage(view)],
];

const NAV = [
  ['#/executions', 'Executions'],
  ['#/actions', 'Actions'],
  ['#/runtimes', 'Runtimes'],
  ['#/health', 'Health'],
];

let current = null; // the page on screen: { stop: AbortController }
let shell = null; // { main, nav } once signed in

/** Stops what the page on screen is doing (timers, streams, requests). */
function leavePage() {
  current?.stop.abort();
  current = null;
}

function signOut(message) {
  leavePage();
  forget();
  shell = null;
  signInPage(message);
}

/** The form that takes a token. */
function signInPage(message) {
  document.title = 'Sign in · packbox';
  const input = h('input', {
    id: 'token', name: 'token', type: 'password', autocomplete: 'off',
    spellcheck: 'false', autocapitalize: 'off', required: true,
    'aria-describedby': 'token-help',
  });
  const problem = h('div', { class: 'problem', 'aria-live': 'polite' }, message ? notice(message) : null);
  const button = h('button', { type: 'submit' }, 'Sign in');
  const form = h('form', {
    class: 'signin', novalidate: true,
    on: {
      submit: async (event) => {
        event.preventDefault();
        const value = input.value.trim();
        if (!value) {
          fill(problem, notice('Paste an API token first.'));
          input.focus();
          return;
        }
        button.disabled = true;
        try {
          await api('/v1/executions?limit=1', { bearer: value });
          keepToken(value);
          input.value = '';
          start();
        } catch (error) {
          const text = error instanceof ApiError && error.status === 401
            ? 'The server does not know this token.'
            : `Sign-in failed: ${error.message}`;
          fill(problem, notice(text));
          input.focus();
        } finally {
          button.disabled = false;
        }
      },
    },
  },
  h('h1', null, 'packbox'),
  h('label', { for: 'token' }, 'API token'),
  input,
  h('p', { id: 'token-help', class: 'help' },
    'The token is kept in this tab only and sent to this server alone; closing the tab or signing out forgets it.'),
  problem,
  button);
  fill(document.body, h('main', { id: 'main', class: 'signin-page' }, form));
  input.focus();
}

/** The header and the page area. */
function buildShell() {
  const nav = h('nav', { 'aria-label': 'Console' },
    h('ul', null, NAV.map(([href, text]) => h('li', null, h('a', { href }, text)))));
  const main = h('main', { id: 'main', tabindex: '-1' });
  const open = token() === '';
  fill(document.body,
    // Moves the focus without changing the address, so a reload stays on the page.
    h('a', {
      class: 'skip', href: '#main',
      on: { click: (event) => { event.preventDefault(); main.focus(); } },
    }, 'Skip to content'),
    h('header', null,
      h('a', { class: 'brand', href: '#/executions' }, 'packbox'),
      nav,
      h('div', { class: 'session' },
        open ? h('span', { class: 'open', title: 'This server has no API token: anyone who reaches it can use it' }, 'no token') : null,
        h('button', { type: 'button', class: 'link', on: { click: () => signOut('Signed out.') } }, 'Sign out'))),
    main);
  shell = { main, nav };
}

/** Shows the page the fragment names. */
function route(focus) {
  const hash = location.hash;
  if (hash === '#main') return; // the skip link, opened without its script: stay on the page
  const found = PAGES.find(([pattern]) => pattern.test(hash));
  if (!found) {
    location.replace('#/executions');
    return;
  }
  leavePage();
  const stop = new AbortController();
  current = { stop };
  for (const link of shell.nav.querySelectorAll('a')) {
    const here = hash === link.getAttribute('href') || hash.startsWith(`${link.getAttribute('href')}/`)
      || hash.startsWith(`${link.getAttribute('href')}?`);
    if (here) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  fill(shell.main);
  const view = {
    main: shell.main,
    signal: stop.signal,
    title(text) {
      document.title = `${text} · packbox`;
    },
  };
  found[1](hash.match(found[0]), view);
  if (focus) shell.main.querySelector('h1')?.focus();
}

function start() {
  buildShell();
  route(false);
}

window.addEventListener('hashchange', () => {
  if (shell) route(true);
});
whenUnauthorized(() => signOut('The server no longer takes this token: sign in again.'));

(async () => {
  if (token() !== null) {
    start();
    return;
  }
  // A server without tokens (loopback only) lets anyone in: no sign-in to ask for.
  try {
    await api('/v1/executions?limit=1', { bearer: '' });
    keepToken('');
    start();
  } catch {
    signInPage();
  }
})();
