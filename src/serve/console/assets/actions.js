// The actions the token may run: a list, and one action's page with its parameters and a form
// made from their schema that starts a run and goes to it.

import { api, ApiError } from './api.js';
import { fill, h, notice } from './dom.js';
import { parameterForm } from './form.js';

async function listActions(signal) {
  const listed = await api('/v1/actions', { signal });
  return listed.actions || [];
}

export function actionsPage(view) {
  view.title('Actions');
  const body = h('div', { 'aria-busy': 'true' }, h('p', null, 'Loading…'));
  fill(view.main, h('h1', { tabindex: '-1' }, 'Actions'), body);
  listActions(view.signal).then((actions) => {
    body.removeAttribute('aria-busy');
    if (!actions.length) {
      fill(body, h('p', null, 'This token may run no action of this server\'s packs.'));
      return;
    }
    fill(body, h('ul', { class: 'cards' }, actions.map((action) => h('li', { class: 'card' },
      h('h2', null, h('a', { href: `#/actions/${encodeURIComponent(action.ref)}` }, action.ref)),
      action.description ? h('p', null, action.description) : null,
      h('p', { class: 'meta' }, runtimeText(action)),
      parametersSummary(action.parameters || [])))));
  }).catch((error) => {
    if (error?.name !== 'AbortError') fill(body, notice(`Could not list actions: ${error.message}`));
  });
}

function runtimeText(action) {
  const parts = [action.runtime];
  if (action.selected_version) parts.push(action.selected_version);
  if (action.runtime_version) parts.push(`(asks ${action.runtime_version})`);
  return parts.filter(Boolean).join(' ');
}

function parametersSummary(parameters) {
  if (!parameters.length) return h('p', { class: 'meta' }, 'No parameters.');
  return h('p', { class: 'meta' }, 'Parameters: ',
    parameters.map((p, i) => [i ? ', ' : '', h('span', { class: 'mono' }, p.name), p.required ? '*' : '', p.secret ? ' (secret)' : '']));
}

export function actionPage(view, ref) {
  view.title(ref);
  const body = h('div', null, h('p', null, 'Loading…'));
  fill(view.main, h('p', { class: 'crumbs' }, h('a', { href: '#/actions' }, 'Actions')),
    h('h1', { tabindex: '-1', class: 'mono' }, ref), body);
  listActions(view.signal).then((actions) => {
    const action = actions.find((a) => a.ref === ref);
    if (!action) {
      fill(body, notice(`No action ${ref} that this token may run.`));
      return;
    }
    fill(body, actionView(action));
  }).catch((error) => {
    if (error?.name !== 'AbortError') fill(body, notice(`Could not read the action: ${error.message}`));
  });
}

function actionView(action) {
  const parameters = action.parameters || [];
  const form = parameterForm(parameters);
  const timeout = h('input', { id: 'run-timeout', name: 'timeout_seconds', type: 'number', min: '1', step: '1', inputmode: 'numeric', autocomplete: 'off' });
  const problem = h('div', { 'aria-live': 'polite' });
  const button = h('button', { type: 'submit' }, 'Run');
  const element = h('form', {
    class: 'run', novalidate: true, 'aria-labelledby': 'run-title',
    on: {
      submit: async (event) => {
        event.preventDefault();
        const { parameters: values, secrets, errors } = form.read();
        form.problems(errors);
        if (Object.keys(errors).length) {
          fill(problem, notice('Some parameters need another value.'));
          return;
        }
        const body = { action: action.ref, parameters: values };
        if (Object.keys(secrets).length) body.secrets = secrets;
        const seconds = timeout.value.trim();
        if (seconds) body.timeout_seconds = Number(seconds);
        button.disabled = true;
        fill(problem);
        try {
          const record = await api('/v1/executions', { method: 'POST', body });
          form.clearSecrets();
          location.hash = `#/executions/${encodeURIComponent(record.id)}`;
        } catch (error) {
          const byName = {};
          if (error instanceof ApiError) {
            for (const p of error.problems) if (p.parameter) byName[p.parameter] = p.message;
          }
          form.problems(byName);
          fill(problem, notice(`The run was refused: ${error.message}`));
        } finally {
          button.disabled = false;
        }
      },
    },
  },
  h('h2', { id: 'run-title' }, 'Run it'),
  form.element,
  h('details', null, h('summary', null, 'More'),
    h('div', { class: 'field' }, h('label', { for: 'run-timeout' }, 'Time limit (seconds)'), timeout,
      h('p', { class: 'help' }, 'Empty: the action\'s own limit (the server caps it).'))),
  problem,
  button);
  return [
    action.description ? h('p', { class: 'lead' }, action.description) : null,
    h('dl', { class: 'fields' },
      h('dt', null, 'Runtime'), h('dd', null, runtimeText(action)),
      action.runner_type ? [h('dt', null, 'Runner'), h('dd', null, action.runner_type)] : null,
      action.dependencies ? [h('dt', null, 'Dependencies'), h('dd', null, typeof action.dependencies === 'string' ? action.dependencies : JSON.stringify(action.dependencies))] : null,
      h('dt', null, 'Executions'), h('dd', null, h('a', { href: `#/executions?action=${encodeURIComponent(action.ref)}` }, 'Runs of this action'))),
    action.enabled === false ? notice('This action is disabled in its pack.', 'warning') : null,
    element,
  ];
}
