// Live following of jobs: one owner per followed job.
//
// follow(jobId, onJob) returns an unsubscribe function. However many views subscribe to
// a job, and however often they re-render (unsubscribe, subscribe again), there is one
// connection per job id:
//
// - the job's server-sent events, read with fetch() streaming so the bearer header goes
//   along (EventSource cannot send headers), parsed as `event: job` / `data: {...}`;
// - when a stream that delivered events ends early (the server ends streams after their
//   lifetime), a new one with `Last-Event-ID`, so nothing is sent twice; when the stream
//   cannot be opened or ends without an event, polling of GET /v1/jobs/{id} every second
//   instead;
// - at a terminal status (completed, failed, cancelled) the stream is closed, polling
//   stops, subscribers are told once more, and no request for that job is ever made
//   again: later follow() calls get the final job from memory.
//
// When the last subscriber leaves, the connection is kept for a short grace period so a
// view that re-renders picks the same stream up again instead of opening a second one.

import { request, getJson, seg } from './api.js';
import { isTerminal } from './ui.js';

const POLL_MS = 1000;
const POLL_MAX_MS = 5000;
// A stream open this long that ends without news ended at its lifetime: open a new one.
const STREAM_RESUME_AFTER_MS = 30000;
const IDLE_GRACE_MS = 5000;
const FINISHED_KEPT = 1000;

/** jobId -> the live entry of a job being followed. */
const entries = new Map();
/** jobId -> the final job, for jobs that reached a terminal status. */
const finished = new Map();

function remember(job) {
  finished.set(job.id, job);
  if (finished.size > FINISHED_KEPT) finished.delete(finished.keys().next().value);
}

/**
 * Follows job `jobId`; `onJob(job)` is called with the latest known state at once (when
 * known) and on every change, the last time with the terminal status. `known`, a job
 * object the caller already holds, lets a job known to be finished be "followed" with
 * no request at all.
 */
export function follow(jobId, onJob, known = null) {
  const subscription = { onJob };
  const final = finished.get(jobId) || (known && known.id === jobId && isTerminal(known.status) ? known : null);
  if (final) {
    remember(final);
    queueMicrotask(() => {
      if (subscription.onJob) subscription.onJob(final);
    });
    return () => {
      subscription.onJob = null;
    };
  }
  let entry = entries.get(jobId);
  if (!entry) {
    entry = {
      id: jobId,
      subscriptions: new Set(),
      job: null,
      last: null,
      done: false,
      stopped: false,
      controller: new AbortController(),
      pollTimer: null,
      idleTimer: null,
      pollDelay: POLL_MS,
      mode: 'stream',
      eventId: null,
    };
    entries.set(jobId, entry);
    openStream(entry);
  }
  if (entry.idleTimer) {
    clearTimeout(entry.idleTimer);
    entry.idleTimer = null;
  }
  entry.subscriptions.add(subscription);
  if (entry.job) {
    const job = entry.job;
    queueMicrotask(() => {
      if (subscription.onJob) subscription.onJob(job);
    });
  }
  return () => {
    subscription.onJob = null;
    entry.subscriptions.delete(subscription);
    if (entry.subscriptions.size === 0 && !entry.done && !entry.stopped && !entry.idleTimer) {
      entry.idleTimer = setTimeout(() => {
        entry.idleTimer = null;
        if (entry.subscriptions.size === 0) stop(entry);
      }, IDLE_GRACE_MS);
    }
  };
}

/** The ids of the jobs with an open stream or poll (for diagnostics and tests). */
export function following() {
  return [...entries.values()].filter((entry) => !entry.done && !entry.stopped).map((entry) => ({ id: entry.id, mode: entry.mode }));
}

function stop(entry) {
  entry.stopped = true;
  entry.controller.abort();
  clearTimeout(entry.pollTimer);
  entries.delete(entry.id);
}

function deliver(entry, job) {
  if (entry.done || entry.stopped || !job || job.id !== entry.id) return;
  const text = JSON.stringify(job);
  if (text === entry.last) return;
  entry.last = text;
  entry.job = job;
  if (isTerminal(job.status)) {
    entry.done = true;
    remember(job);
    entry.controller.abort();
    clearTimeout(entry.pollTimer);
    clearTimeout(entry.idleTimer);
    entries.delete(entry.id);
  }
  for (const subscription of [...entry.subscriptions]) {
    if (!subscription.onJob) continue;
    try {
      subscription.onJob(job);
    } catch (error) {
      console.error(error);
    }
  }
}

/** The job is gone (404): nothing more to ask for. */
function abandon(entry) {
  entry.done = true;
  entry.controller.abort();
  clearTimeout(entry.pollTimer);
  entries.delete(entry.id);
}

async function openStream(entry) {
  const { signal } = entry.controller;
  const seenBefore = entry.eventId;
  const opened = Date.now();
  let failed = false;
  try {
    const headers = { Accept: 'text/event-stream' };
    if (entry.eventId) headers['Last-Event-ID'] = entry.eventId;
    const response = await request(`/v1/jobs/${seg(entry.id)}/events`, { headers, signal });
    if (!response.body) throw new Error('no streaming body');
    await readEvents(entry, response.body.getReader(), signal);
  } catch (error) {
    if (entry.done || entry.stopped) return;
    if (error && error.status === 404) {
      abandon(entry);
      return;
    }
    failed = true;
  }
  if (entry.done || entry.stopped) return;
  const news = entry.eventId !== seenBefore;
  if (news || (!failed && Date.now() - opened > STREAM_RESUME_AFTER_MS)) {
    // The stream worked and ended before a terminal status (the server ends streams after
    // their lifetime): resume it where it was.
    openStream(entry);
    return;
  }
  // The stream failed, or ended at once without news: poll instead.
  entry.mode = 'poll';
  poll(entry);
}

async function readEvents(entry, reader, signal) {
  const decoder = new TextDecoder();
  let buffer = '';
  const onAbort = () => reader.cancel().catch(() => {});
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      // Events end with a blank line (\n\n, \r\n\r\n or \r\r).
      for (;;) {
        const match = /\r\n\r\n|\n\n|\r\r/.exec(buffer);
        if (!match) break;
        const block = buffer.slice(0, match.index);
        buffer = buffer.slice(match.index + match[0].length);
        handleBlock(entry, block);
        if (entry.done || entry.stopped) return;
      }
    }
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

function handleBlock(entry, block) {
  let event = 'message';
  let id = null;
  const data = [];
  for (const line of block.split(/\r\n|\n|\r/)) {
    if (!line || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
    else if (field === 'id') id = value;
  }
  if (event !== 'job' || data.length === 0) return;
  if (id) entry.eventId = id;
  try {
    deliver(entry, JSON.parse(data.join('\n')));
  } catch (error) {
    console.warn('unreadable job event', error);
  }
}

async function poll(entry) {
  if (entry.done || entry.stopped) return;
  try {
    const job = await getJson(`/v1/jobs/${seg(entry.id)}`, { signal: entry.controller.signal });
    entry.pollDelay = POLL_MS;
    deliver(entry, job);
  } catch (error) {
    if (entry.done || entry.stopped) return;
    if (error && error.status === 404) {
      abandon(entry);
      return;
    }
    // The server is away: back off a little, keep trying.
    entry.pollDelay = Math.min(entry.pollDelay * 2, POLL_MAX_MS);
  }
  if (!entry.done && !entry.stopped) entry.pollTimer = setTimeout(() => poll(entry), entry.pollDelay);
}
