// The console's only way to the server: API v1 with the bearer token the person pasted. The
// token lives in this tab's sessionStorage (gone when the tab closes; never in a URL, a cookie
// or storage that outlives the tab) and goes out in the Authorization header only.

const TOKEN_KEY = 'packbox.token';

/** The token of this tab, or null before sign-in. */
export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** Keeps the token for this tab ('' for a server that has no tokens). */
export function keepToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

/** Forgets the token (and anything else this tab kept). */
export function forget() {
  sessionStorage.clear();
}

/** An API error answer, or no answer at all (status 0). */
export class ApiError extends Error {
  constructor(status, code, message, problems = []) {
    super(message);
    this.status = status;
    this.code = code;
    this.problems = problems;
  }
}

/** Headers for a request to the API, with the token when there is one. */
export function headers(extra = {}) {
  const all = { ...extra };
  const bearer = token();
  if (bearer) all.Authorization = `Bearer ${bearer}`;
  return all;
}

/** What the app does when the server no longer takes the token (set by app.js). */
let onUnauthorized = () => {};
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

/** Calls the API; resolves to the JSON answer (text for non-JSON, null for 204), rejects with
 * ApiError. A 401 signs the tab out. */
export async function api(path, { method = 'GET', body, signal, bearer } = {}) {
  const extra = body === undefined ? {} : { 'Content-Type': 'application/json' };
  const sent = bearer === undefined ? headers(extra) : { ...extra, ...(bearer ? { Authorization: `Bearer ${bearer}` } : {}) };
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: sent,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: 'no-store',
      credentials: 'omit',
      redirect: 'error',
    });
  } catch (error) {
    if (error?.name === 'AbortError') throw error;
    throw new ApiError(0, 'unreachable', 'the server did not answer');
  }
  const type = response.headers.get('Content-Type') || '';
  if (!response.ok) {
    let error = {};
    try {
      error = (await response.json()).error || {};
    } catch {
      // Not an API error body: the status says enough.
    }
    const failure = new ApiError(response.status, error.code || 'http',
      error.message || `the server answered ${response.status}`, error.problems || []);
    if (response.status === 401 && bearer === undefined) onUnauthorized(failure);
    throw failure;
  }
  if (response.status === 204) return null;
  return type.includes('json') ? response.json() : response.text();
}

/** `path` with a query made of the entries of `params` that have a value. */
export function withQuery(path, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') query.set(key, value);
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

/** An execution's address in the API. */
export function executionPath(id) {
  return `/v1/executions/${encodeURIComponent(id)}`;
}
