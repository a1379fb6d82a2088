// An execution's output as Server-Sent Events, read with fetch (EventSource cannot send an
// Authorization header). Each event's id is the position after it; after a dropped connection
// the stream is asked again from the last id received (Last-Event-ID), so nothing is shown
// twice and nothing is missed.

import { headers, executionPath } from './api.js';
import { pause } from './dom.js';

/** Follows the output of execution `id` until its `end` event or until the returned function
 * is called. `on.event({type, id, data})` hears each event; `on.state(name, detail)` hears
 * 'connecting', 'live', 'reconnecting' (detail: ms until the next try), 'ended', 'refused'
 * (detail: the HTTP status) and 'stopped'. */
export function followOutput(id, on) {
  const stop = new AbortController();
  let lastId = null;
  let ended = false;
  let failures = 0;

  (async () => {
    while (!ended && !stop.signal.aborted) {
      on.state(lastId ? 'resuming' : 'connecting');
      let wait = null;
      try {
        const extra = { Accept: 'text/event-stream' };
        if (lastId) extra['Last-Event-ID'] = lastId;
        const response = await fetch(`${executionPath(id)}/output`, {
          headers: headers(extra),
          signal: stop.signal,
          cache: 'no-store',
          credentials: 'omit',
        });
        if (response.status === 429) {
          wait = 1000 * Math.max(1, Number(response.headers.get('Retry-After')) || 1);
        } else if (!response.ok) {
          on.state('refused', response.status);
          return;
        } else {
          on.state('live');
          failures = 0;
          await readEvents(response.body, (event) => {
            on.event(event);
            if (event.id) lastId = event.id;
            if (event.type === 'end') ended = true;
          });
        }
      } catch (error) {
        if (stop.signal.aborted) break;
      }
      if (ended || stop.signal.aborted) break;
      failures += 1;
      wait ??= Math.min(250 * 2 ** failures, 5000);
      on.state('reconnecting', wait);
      await pause(wait, stop.signal);
    }
    on.state(ended ? 'ended' : 'stopped');
  })();

  return () => stop.abort();
}

/** Reads an event stream to its end, calling `deliver` with each complete event. */
async function readEvents(body, deliver) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let event = { type: 'message', id: null, data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    for (;;) {
      const end = buffer.search(/\r\n|\r|\n/);
      // A lone CR at the end may be the first half of a CRLF still on its way.
      if (end < 0 || (buffer[end] === '\r' && end === buffer.length - 1)) break;
      const line = buffer.slice(0, end);
      buffer = buffer.slice(end + (buffer.startsWith('\r\n', end) ? 2 : 1));
      if (line === '') {
        if (event.data.length > 0) {
          deliver({ type: event.type, id: event.id, data: event.data.join('\n') });
        }
        event = { type: 'message', id: null, data: [] };
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const name = colon < 0 ? line : line.slice(0, colon);
      let text = colon < 0 ? '' : line.slice(colon + 1);
      if (text.startsWith(' ')) text = text.slice(1);
      if (name === 'event') event.type = text;
      else if (name === 'data') event.data.push(text);
      else if (name === 'id') event.id = text;
    }
  }
}
