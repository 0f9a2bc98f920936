// Small DOM and formatting helpers shared by the views.
//
// Untrusted text (titles, file names, OCR text, guideline text, error messages) only ever
// becomes text nodes or textContent here: there is no way to pass markup through h().

/**
 * Creates an element. `attrs`: `class`, `dataset` (object), `on` (object of event
 * handlers), boolean attributes as true/false, anything else as an attribute. Children:
 * nodes, strings (as text nodes), numbers, arrays; null, undefined and false are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'style') throw new Error('inline styles are not allowed (CSP)');
    if (name === 'dataset') {
      for (const [key, data] of Object.entries(value)) element.dataset[key] = String(data);
    } else if (name === 'on') {
      for (const [event, handler] of Object.entries(value)) element.addEventListener(event, handler);
    } else if (name === 'class') {
      element.className = Array.isArray(value) ? value.filter(Boolean).join(' ') : value;
    } else if (value === true) {
      element.setAttribute(name, '');
    } else {
      element.setAttribute(name, String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(element, child);
    else if (child instanceof Node) element.append(child);
    else element.append(document.createTextNode(String(child)));
  }
}

/** Replaces every child of `element` with `children` (same rules as h()). */
export function replaceChildren(element, ...children) {
  element.replaceChildren();
  append(element, children);
}

/** Sets an attribute only when it changes (cheap in-place updates of many elements). */
export function setAttr(element, name, value) {
  if (value === null || value === undefined || value === false) {
    if (element.hasAttribute(name)) element.removeAttribute(name);
    return;
  }
  const text = value === true ? '' : String(value);
  if (element.getAttribute(name) !== text) element.setAttribute(name, text);
}

/** Sets textContent only when it changes. */
export function setText(element, text) {
  const value = text === null || text === undefined ? '' : String(text);
  if (element.textContent !== value) element.textContent = value;
}

/**
 * Keeps `container`'s children in step with `items`, keyed by `key(item)`: existing
 * elements are updated in place with `update(element, item)`, new ones made with
 * `create(item)` (then updated), missing ones removed, and the order follows `items`.
 * Focus and scroll positions survive refreshes.
 */
export function reconcile(container, items, key, create, update) {
  const existing = new Map();
  for (const child of container.children) {
    if (child.dataset.key !== undefined) existing.set(child.dataset.key, child);
  }
  let cursor = container.firstElementChild;
  for (const item of items) {
    const id = String(key(item));
    let element = existing.get(id);
    if (element) {
      existing.delete(id);
    } else {
      element = create(item);
      element.dataset.key = id;
    }
    update(element, item);
    if (element !== cursor) container.insertBefore(element, cursor);
    else cursor = cursor.nextElementSibling;
  }
  for (const element of existing.values()) element.remove();
  // Anything unkeyed (an empty-state line) goes.
  for (const child of [...container.children]) {
    if (child.dataset.key === undefined) child.remove();
  }
}

/**
 * The lifetime of a mounted view: its timers, subscriptions and requests end together
 * when the router leaves the view.
 */
export class Scope {
  constructor() {
    this.controller = new AbortController();
    this.cleanups = [];
    this.alive = true;
  }

  /** Aborts the view's requests when it goes. */
  get signal() {
    return this.controller.signal;
  }

  /** Runs `fn` when the view goes. */
  onCleanup(fn) {
    if (!this.alive) fn();
    else this.cleanups.push(fn);
  }

  /** setTimeout that is cleared when the view goes. */
  timeout(fn, ms) {
    const id = setTimeout(() => {
      if (this.alive) fn();
    }, ms);
    this.onCleanup(() => clearTimeout(id));
    return id;
  }

  /** setInterval that is cleared when the view goes. */
  interval(fn, ms) {
    const id = setInterval(() => {
      if (this.alive) fn();
    }, ms);
    this.onCleanup(() => clearInterval(id));
    return id;
  }

  /** addEventListener that is removed when the view goes. */
  listen(target, event, handler, options) {
    target.addEventListener(event, handler, options);
    this.onCleanup(() => target.removeEventListener(event, handler, options));
  }

  dispose() {
    if (!this.alive) return;
    this.alive = false;
    this.controller.abort();
    for (const fn of this.cleanups.splice(0).reverse()) {
      try {
        fn();
      } catch (error) {
        console.error(error);
      }
    }
  }
}

/**
 * Calls `fn` every `ms` while the tab is visible (and when it becomes visible again);
 * never two calls at once; stops with the scope. Returns the tick, to call it now.
 */
export function every(scope, ms, fn) {
  let running = false;
  const tick = async () => {
    if (running || document.hidden || !scope.alive) return;
    running = true;
    try {
      await fn();
    } catch (error) {
      if (error.name !== 'AbortError') console.warn(error);
    } finally {
      running = false;
    }
  };
  scope.interval(tick, ms);
  scope.listen(document, 'visibilitychange', tick);
  return tick;
}

const STATUS_ICONS = {
  pending: '○',
  running: '◔',
  done: '✓',
  completed: '✓',
  failed: '✕',
  cancelled: '⊘',
  none: '–',
  extracting: '◔',
  extracted: '✓',
  final: '★',
};

/** A status badge: an icon (hidden from screen readers) and the status as text. */
export function statusBadge(status, label = status) {
  return h(
    'span',
    { class: 'status', dataset: { status } },
    h('span', { class: 'status-icon', 'aria-hidden': 'true' }, STATUS_ICONS[status] || '•'),
    h('span', { class: 'status-label' }, label),
  );
}

/** Updates a badge made by statusBadge() in place. */
export function updateStatusBadge(badge, status, label = status) {
  setAttr(badge, 'data-status', status);
  setText(badge.querySelector('.status-icon'), STATUS_ICONS[status] || '•');
  setText(badge.querySelector('.status-label'), label);
}

/** "4 s", "2 min 05 s", "1 h 03 min". */
export function formatDuration(ms) {
  if (!Number.isFinite(ms) || ms < 0) return '–';
  const seconds = Math.round(ms / 1000);
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${String(seconds % 60).padStart(2, '0')} s`;
  const hours = Math.floor(minutes / 60);
  return `${hours} h ${String(minutes % 60).padStart(2, '0')} min`;
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, {
  month: 'short',
  day: 'numeric',
  hour: '2-digit',
  minute: '2-digit',
});

/** A timestamp for people: the time today, else date and time. */
export function formatTime(iso) {
  if (!iso) return '–';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return '–';
  const today = new Date();
  return date.toDateString() === today.toDateString() ? timeFormat.format(date) : dateTimeFormat.format(date);
}

/** "3 min ago". */
export function formatAgo(iso) {
  if (!iso) return '';
  const ms = Date.now() - new Date(iso).getTime();
  if (!Number.isFinite(ms)) return '';
  if (ms < 45_000) return 'just now';
  return `${formatDuration(ms).replace(/ \d+ s$/, '')} ago`;
}

/** Elapsed time of a job: from its start (or creation) to its end (or now). */
export function jobElapsedMs(job, now = Date.now()) {
  const start = job.started_at || job.created_at;
  if (!start) return NaN;
  const end = job.finished_at ? new Date(job.finished_at).getTime() : now;
  return end - new Date(start).getTime();
}

/** [1, 2, 3, 5, 7, 8] → "1–3, 5, 7–8". */
export function pageRanges(pages) {
  const sorted = [...pages].sort((a, b) => a - b);
  const parts = [];
  let start = null;
  let previous = null;
  for (const page of sorted) {
    if (start === null) {
      start = previous = page;
    } else if (page === previous + 1) {
      previous = page;
    } else {
      parts.push(start === previous ? `${start}` : `${start}–${previous}`);
      start = previous = page;
    }
  }
  if (start !== null) parts.push(start === previous ? `${start}` : `${start}–${previous}`);
  return parts.join(', ');
}

/** "1 page", "3 pages". */
export function plural(count, word, words = `${word}s`) {
  return `${count} ${count === 1 ? word : words}`;
}

const JOB_TYPE_LABELS = { ingest: 'Making pages', ocr: 'OCR', guidelines: 'Guidelines', finalize: 'Finalize' };

/** A job type for people. */
export function jobTypeLabel(type) {
  return JOB_TYPE_LABELS[type] || type;
}

/** Whether a job status is final. */
export function isTerminal(status) {
  return status === 'completed' || status === 'failed' || status === 'cancelled';
}

/** Whether a job status is active. */
export function isActive(status) {
  return status === 'pending' || status === 'running';
}

/** A short form of a UUID for display (the full id goes in a title attribute). */
export function shortId(id) {
  return String(id).slice(-8);
}

/** An error for people: the API's message, or the exception's. */
export function errorText(error) {
  if (!error) return '';
  return error.message || String(error);
}

/** Moves keyboard focus to `element` without scrolling jumps. */
export function focusQuietly(element) {
  if (element && typeof element.focus === 'function') element.focus({ preventScroll: true });
}

/**
 * Fills `element` with a job's chain: "then: guidelines → finalize" and links to the
 * previous and next jobs (`href(id)` gives a link's address); hides it when there is none.
 */
export function chainLine(element, job, href) {
  const parts = [];
  if (job.then?.length) parts.push(h('span', { class: 'chain-then' }, `then: ${job.then.join(' → ')}`));
  const link = (label, id) => h('span', { class: 'chain-link' }, `${label} `,
    h('a', { href: href(id), title: `Job ${id}` }, `#${shortId(id)}`));
  if (job.previous_job_id) parts.push(link('after', job.previous_job_id));
  if (job.next_job_id) parts.push(link('next', job.next_job_id));
  const key = JSON.stringify([job.then || [], job.previous_job_id || null, job.next_job_id || null]);
  if (element.dataset.chain !== key) {
    element.dataset.chain = key;
    element.replaceChildren(...parts.flatMap((part, index) => (index ? [' · ', part] : [part])));
  }
  element.hidden = parts.length === 0;
}
