// A form made from an action's parameter schema: one control per parameter, typed by its
// declaration (text, number, checkbox, a list for enums, JSON for arrays and objects), secret
// parameters as password fields. Values are read from the controls only when the form is sent;
// secret values go in the request's `secrets` and nowhere else, and the fields are emptied after.

import { h, json } from './dom.js';

/** The controls for `parameters` (as /v1/actions lists them). Returns { element, read, clear,
 * problems } where read() gives { parameters, secrets, errors }. */
export function parameterForm(parameters) {
  // Required ones first, secrets last; otherwise in the order the server lists them.
  const rank = (p) => (p.required ? 0 : p.secret ? 2 : 1);
  const controls = [...parameters].sort((a, b) => rank(a) - rank(b)).map(control);
  return {
    element: h('div', { class: 'parameters' }, controls.map((c) => c.element)),
    read() {
      const parameters = {};
      const secrets = {};
      const errors = {};
      for (const c of controls) {
        const result = c.read();
        if (result.error) errors[c.name] = result.error;
        else if (result.given) (c.secret ? secrets : parameters)[c.name] = result.value;
      }
      return { parameters, secrets, errors };
    },
    clearSecrets() {
      for (const c of controls) if (c.secret) c.clear();
    },
    problems(byName) {
      for (const c of controls) c.problem(byName[c.name] || null);
      const first = controls.find((c) => byName[c.name]);
      first?.focus();
    },
  };
}

let counter = 0;

function control(parameter) {
  const name = String(parameter.name);
  const id = `parameter-${counter += 1}`;
  const type = parameter.type || 'string';
  const secret = parameter.secret === true;
  const required = parameter.required === true;
  const hasDefault = parameter.default !== undefined && parameter.default !== null;
  const helpId = `${id}-help`;
  const problemId = `${id}-problem`;
  const described = [parameter.description ? helpId : null, problemId].filter(Boolean).join(' ');
  const common = { id, name, 'aria-describedby': described, 'aria-required': required ? 'true' : null };
  let input;
  let read;

  if (Array.isArray(parameter.enum) && parameter.enum.length) {
    const values = parameter.enum;
    input = h('select', common,
      required ? null : h('option', { value: '' }, hasDefault ? `(default: ${json(parameter.default)})` : '(not given)'),
      values.map((value, index) => h('option', {
        value: String(index),
        selected: hasDefault && JSON.stringify(value) === JSON.stringify(parameter.default),
      }, json(value))));
    read = () => (input.value === '' ? { given: false } : { given: true, value: values[Number(input.value)] });
  } else if (type === 'boolean') {
    input = h('input', { ...common, type: 'checkbox', checked: parameter.default === true });
    read = () => ({ given: true, value: input.checked });
  } else if (type === 'integer' || type === 'number') {
    input = h('input', {
      ...common, type: secret ? 'password' : 'number', inputmode: type === 'integer' ? 'numeric' : 'decimal',
      step: type === 'integer' ? '1' : 'any', min: parameter.minimum, max: parameter.maximum,
      value: !secret && hasDefault ? String(parameter.default) : null, autocomplete: 'off',
    });
    read = () => {
      const text = input.value.trim();
      if (text === '') return { given: false };
      const value = Number(text);
      if (!Number.isFinite(value) || (type === 'integer' && !Number.isInteger(value))) {
        return { error: `expected ${type === 'integer' ? 'a whole number' : 'a number'}` };
      }
      return { given: true, value };
    };
  } else if (type === 'array' || type === 'object') {
    input = h('textarea', {
      ...common, rows: '3', spellcheck: 'false',
      placeholder: type === 'array' ? '["one", "two"]' : '{"key": "value"}',
      value: hasDefault ? JSON.stringify(parameter.default) : null,
    });
    read = () => {
      const text = input.value.trim();
      if (text === '') return { given: false };
      try {
        return { given: true, value: JSON.parse(text) };
      } catch {
        return { error: `expected JSON (${type === 'array' ? 'a list in [ ]' : 'an object in { }'})` };
      }
    };
  } else {
    input = h('input', {
      ...common, type: secret ? 'password' : 'text', spellcheck: 'false', autocapitalize: 'off',
      autocomplete: 'off', value: !secret && hasDefault ? String(parameter.default) : null,
    });
    read = () => (input.value === '' ? { given: false } : { given: true, value: input.value });
  }

  const problem = h('p', { id: problemId, class: 'field-problem', 'aria-live': 'polite' });
  const label = h('label', { for: id },
    h('span', { class: 'mono' }, name),
    required ? h('span', { class: 'required', title: 'required' }, ' *') : null,
    h('span', { class: 'kind' }, ` ${secret ? 'secret ' : ''}${type}`));
  const element = h('div', { class: `field${type === 'boolean' ? ' checkbox' : ''}` },
    type === 'boolean' ? [input, label] : [label, input],
    parameter.description ? h('p', { id: helpId, class: 'help' }, parameter.description) : null,
    secret ? h('p', { class: 'help' }, 'Sent once with this run; never shown, kept or put in the address.') : null,
    problem);
  return {
    name,
    secret,
    element,
    read() {
      const result = read();
      if (!result.error && !result.given && required) return { error: 'required' };
      return result;
    },
    clear() {
      input.value = '';
    },
    focus() {
      input.focus();
    },
    problem(text) {
      problem.textContent = text || '';
      if (text) input.setAttribute('aria-invalid', 'true');
      else input.removeAttribute('aria-invalid');
    },
  };
}
