// Every job across books (`/jobs`): status tabs with counts, a type filter, failed jobs
// grouped by error code (what operators open first), the list with cancel and resume,
// and "more" by keyset pages. Counts and the list refresh every few seconds while the
// view is open and the tab visible; the timers end with the view.

import { getJson, postJson, seg } from './api.js';
import {
  h, reconcile, setAttr, setText, statusBadge, updateStatusBadge, every, plural, jobTypeLabel,
  formatTime, formatAgo, formatDuration, jobElapsedMs, isActive, shortId, errorText, chainLine,
} from './ui.js';

const STATUSES = ['all', 'pending', 'running', 'completed', 'failed', 'cancelled'];
const TYPES = ['all', 'ingest', 'ocr', 'guidelines', 'finalize'];
const PAGE_SIZE = 50;
const MAX_LIST = 500;
const COUNT_LIMIT = 100;
const FAILED_LIMIT = 200;
const REFRESH_MS = 4000;

export function jobsView(container, _params, scope) {
  document.title = 'Jobs · Folio';
  const query = new URLSearchParams(location.search);
  let status = STATUSES.includes(query.get('status')) ? query.get('status') : 'all';
  let type = TYPES.includes(query.get('type')) ? query.get('type') : 'all';
  let code = query.get('code') || null;

  // ---- skeleton -------------------------------------------------------------------------
  const tabs = new Map();
  const tabList = h('div', { id: 'status-tabs', class: 'tabs', role: 'tablist', 'aria-label': 'Job status' },
    STATUSES.map((value) => {
      const tab = h('button', {
        type: 'button', role: 'tab', class: 'tab', dataset: { status: value }, 'aria-controls': 'all-jobs',
        on: { click: () => selectStatus(value) },
      },
      value !== 'all' ? h('span', { class: 'status-dot', 'aria-hidden': 'true', dataset: { dot: value } }) : null,
      h('span', { class: 'tab-label' }, value === 'all' ? 'All' : value[0].toUpperCase() + value.slice(1)),
      h('span', { class: 'count' }, '–'));
      tabs.set(value, tab);
      return tab;
    }));
  tabList.addEventListener('keydown', (event) => {
    if (event.key !== 'ArrowRight' && event.key !== 'ArrowLeft') return;
    const index = STATUSES.indexOf(status);
    const next = STATUSES[(index + (event.key === 'ArrowRight' ? 1 : STATUSES.length - 1)) % STATUSES.length];
    selectStatus(next);
    tabs.get(next).focus();
  });
  const typeFilter = h('select', { id: 'type-filter', on: { change: () => { type = typeFilter.value; changed(); } } },
    TYPES.map((value) => h('option', { value }, value === 'all' ? 'All types' : jobTypeLabel(value))));
  typeFilter.value = type;

  const groups = h('ul', { id: 'failed-groups', class: 'failed-groups' });
  const codeChip = h('p', { class: 'code-filter', hidden: true });
  const list = h('ul', { id: 'all-jobs', class: 'job-rows', role: 'tabpanel', 'aria-busy': 'true' },
    h('li', { class: 'empty' }, 'Loading jobs…'));
  const more = h('button', { type: 'button', id: 'more-jobs', hidden: true, on: { click: loadMore } }, 'Show more');
  const error = h('p', { id: 'jobs-error', class: 'error', role: 'alert', hidden: true });
  const notice = h('p', { class: 'notice', hidden: true });
  const updated = h('span', { class: 'muted count-note', 'aria-live': 'off' });

  container.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Jobs'), updated),
    notice,
    h('section', { class: 'card failed-card', 'aria-labelledby': 'failed-title' },
      h('h2', { id: 'failed-title' }, 'Failed jobs by error'),
      groups),
    h('section', { class: 'card jobs-list-card', 'aria-label': 'Job list' },
      h('div', { class: 'jobs-toolbar' }, tabList,
        h('label', { class: 'type-filter' }, h('span', {}, 'Type'), typeFilter)),
      codeChip,
      error,
      list,
      more),
  );

  // ---- state ----------------------------------------------------------------------------
  let jobs = [];
  let nextBefore = null;
  let generation = 0;

  function url(params) {
    const search = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) {
      if (value !== null && value !== undefined && value !== 'all') search.set(key, value);
    }
    const text = search.toString();
    return `/v1/jobs${text ? `?${text}` : ''}`;
  }

  function selectStatus(value) {
    status = value;
    if (value !== 'failed') code = null;
    changed();
  }

  function changed() {
    const search = new URLSearchParams();
    if (status !== 'all') search.set('status', status);
    if (type !== 'all') search.set('type', type);
    if (code) search.set('code', code);
    const text = search.toString();
    history.replaceState(null, '', `/jobs${text ? `?${text}` : ''}`);
    jobs = [];
    nextBefore = null;
    list.setAttribute('aria-busy', 'true');
    renderTabs();
    refresh();
  }

  function renderTabs() {
    for (const [value, tab] of tabs) {
      const selected = value === status;
      setAttr(tab, 'aria-selected', selected ? 'true' : 'false');
      setAttr(tab, 'tabindex', selected ? '0' : '-1');
    }
    if (code) {
      codeChip.replaceChildren('Only errors with code ', h('code', {}, code), ' ',
        h('button', { type: 'button', class: 'link-button', on: { click: () => { code = null; changed(); } } }, 'Show every failed job'));
      codeChip.hidden = false;
    } else {
      codeChip.hidden = true;
    }
  }

  // ---- loading --------------------------------------------------------------------------
  async function loadCounts() {
    const counted = await Promise.all(STATUSES.slice(1).map(async (value) => {
      const limit = value === 'failed' ? FAILED_LIMIT : COUNT_LIMIT;
      const answer = await getJson(url({ status: value, type, limit }), { signal: scope.signal });
      return { value, jobs: answer.jobs || [], more: Boolean(answer.next_before) };
    }));
    let total = 0;
    let capped = false;
    for (const { value, jobs: found, more: hasMore } of counted) {
      total += found.length;
      capped = capped || hasMore;
      setText(tabs.get(value).querySelector('.count'), `${found.length}${hasMore ? '+' : ''}`);
      if (value === 'failed') renderGroups(found, hasMore);
    }
    setText(tabs.get('all').querySelector('.count'), `${total}${capped ? '+' : ''}`);
  }

  async function loadList() {
    const mine = generation;
    const limit = Math.min(MAX_LIST, Math.max(PAGE_SIZE, jobs.length));
    const answer = await getJson(url({ status, type, limit }), { signal: scope.signal });
    if (mine !== generation) return;
    jobs = answer.jobs || [];
    nextBefore = answer.next_before || null;
    renderList();
  }

  async function loadMore() {
    if (!nextBefore) return;
    more.disabled = true;
    const mine = generation;
    try {
      const answer = await getJson(url({ status, type, limit: PAGE_SIZE, before: nextBefore }), { signal: scope.signal });
      if (mine !== generation) return;
      const seen = new Set(jobs.map((job) => job.id));
      jobs = jobs.concat((answer.jobs || []).filter((job) => !seen.has(job.id)));
      nextBefore = answer.next_before || null;
      renderList();
    } catch (failure) {
      if (failure.name !== 'AbortError') showError(failure);
    } finally {
      more.disabled = false;
    }
  }

  async function refresh() {
    generation += 1;
    try {
      await Promise.all([loadList(), loadCounts()]);
      error.hidden = true;
      setText(updated, `Updated ${formatTime(new Date().toISOString())}`);
    } catch (failure) {
      if (failure.name === 'AbortError') return;
      if (failure.status === 404 && failure.code === 'not_found') {
        notice.textContent = 'This server does not list jobs yet (GET /v1/jobs is missing). Each book’s page shows its own jobs.';
        notice.hidden = false;
        list.removeAttribute('aria-busy');
        list.replaceChildren();
        return;
      }
      showError(failure);
    }
  }

  function showError(failure) {
    error.textContent = errorText(failure);
    error.hidden = false;
    list.removeAttribute('aria-busy');
  }

  // ---- rendering ------------------------------------------------------------------------
  function renderGroups(failed, capped) {
    const byCode = new Map();
    for (const job of failed) {
      const key = job.error?.code || 'unknown';
      const group = byCode.get(key) || { code: key, count: 0, latest: job };
      group.count += 1;
      if (String(job.finished_at || job.created_at) > String(group.latest.finished_at || group.latest.created_at)) group.latest = job;
      byCode.set(key, group);
    }
    const sorted = [...byCode.values()].sort((a, b) => b.count - a.count || a.code.localeCompare(b.code));
    reconcile(groups, sorted, (group) => group.code, createGroup, updateGroup);
    if (!sorted.length) groups.append(h('li', { class: 'empty' }, 'No failed jobs.'));
    else if (capped) groups.append(h('li', { class: 'muted more-note' }, `Grouped from the newest ${failed.length} failed jobs.`));
  }

  function createGroup() {
    return h('li', {},
      h('button', { type: 'button', class: 'failed-group' },
        h('span', { class: 'group-head' }, h('code', { class: 'group-code' }), h('span', { class: 'group-count' })),
        h('span', { class: 'group-message' }),
        h('span', { class: 'group-when muted' }),
      ));
  }

  function updateGroup(item, group) {
    const button = item.firstElementChild;
    setAttr(button, 'data-code', group.code);
    setAttr(button, 'aria-pressed', code === group.code ? 'true' : 'false');
    button.onclick = () => {
      status = 'failed';
      code = code === group.code ? null : group.code;
      changed();
    };
    setText(button.querySelector('.group-code'), group.code);
    setText(button.querySelector('.group-count'), plural(group.count, 'job'));
    const message = group.latest.error?.message || '';
    setText(button.querySelector('.group-message'), message);
    setAttr(button.querySelector('.group-message'), 'title', message || null);
    setText(button.querySelector('.group-when'), `latest ${formatAgo(group.latest.finished_at || group.latest.created_at)} · ${jobTypeLabel(group.latest.type)} on ${group.latest.book_id}`);
  }

  function renderList() {
    list.removeAttribute('aria-busy');
    const visible = code ? jobs.filter((job) => (job.error?.code || 'unknown') === code) : jobs;
    reconcile(list, visible, (job) => job.id, createRow, updateRow);
    if (!visible.length) {
      const what = status === 'all' ? 'jobs' : `${status} jobs`;
      list.append(h('li', { class: 'empty' }, type === 'all' ? `No ${what}.` : `No ${what} of type ${jobTypeLabel(type)}.`));
    }
    more.hidden = !nextBefore;
  }

  function createRow() {
    const fill = h('div', { class: 'bar-fill' });
    return h('li', { class: 'job-row' },
      h('div', { class: 'job-row-main' },
        h('span', { class: 'job-row-type' }),
        statusBadge('pending'),
        h('a', { class: 'job-row-book' }),
        h('span', { class: 'job-row-id muted' }),
      ),
      h('div', { class: 'job-row-progress' },
        h('div', { class: 'bar mini', role: 'progressbar', 'aria-valuemin': '0' }, fill),
        h('span', { class: 'job-row-counts' }),
      ),
      h('div', { class: 'job-row-times muted' }),
      h('div', { class: 'job-row-actions' }),
      h('p', { class: 'job-row-chain muted', hidden: true }),
      h('p', { class: 'job-row-error', hidden: true }),
    );
  }

  function updateRow(row, job) {
    setAttr(row, 'data-job-id', job.id);
    setAttr(row, 'data-status', job.status);
    setText(row.querySelector('.job-row-type'), jobTypeLabel(job.type));
    updateStatusBadge(row.querySelector('.status'), job.status, job.cancel_requested && isActive(job.status) ? 'cancelling' : job.status);
    const book = row.querySelector('.job-row-book');
    setAttr(book, 'href', `/books/${seg(job.book_id)}`);
    setText(book, job.book_id);
    setAttr(book, 'title', `Book ${job.book_id}`);
    const id = row.querySelector('.job-row-id');
    setText(id, `#${shortId(job.id)}`);
    setAttr(id, 'title', `Job ${job.id}`);

    // A bar only when the job knows its size; otherwise what it did, or a dash.
    const progress = job.progress || {};
    const total = progress.total ?? 0;
    const finished = (progress.completed || 0) + (progress.failed || 0);
    const bar = row.querySelector('.bar');
    bar.hidden = !total;
    setAttr(bar, 'aria-valuemax', total);
    setAttr(bar, 'aria-valuenow', finished);
    setAttr(bar, 'aria-label', `${jobTypeLabel(job.type)} progress`);
    const fraction = total ? Math.min(1, finished / total) : 0;
    bar.firstElementChild.style.width = `${(fraction * 100).toFixed(1)}%`;
    let counts = total ? `${progress.completed || 0}/${total}` : progress.completed ? `${progress.completed} done` : '';
    if (progress.failed) counts += `${counts ? ' · ' : ''}${progress.failed} failed`;
    const countsLine = row.querySelector('.job-row-counts');
    setText(countsLine, counts || '–');
    setAttr(countsLine, 'title', counts ? null : 'No progress recorded');
    row.classList.toggle('no-progress', !counts);

    const times = [`created ${formatTime(job.created_at)}`];
    if (job.finished_at) times.push(`took ${formatDuration(jobElapsedMs(job))}`);
    else if (job.started_at) times.push(`running ${formatDuration(jobElapsedMs(job))}`);
    if (job.attempt > 1) times.push(`attempt ${job.attempt}/${job.max_attempts}`);
    setText(row.querySelector('.job-row-times'), times.join(' · '));
    // A linked job may be on another page of this list: its book shows the whole chain.
    chainLine(row.querySelector('.job-row-chain'), job, (id) => `/books/${seg(job.book_id)}#history-${id}`);

    const errorLine = row.querySelector('.job-row-error');
    if (job.error) {
      errorLine.replaceChildren(h('code', { class: 'error-code' }, job.error.code), ' ', job.error.message);
      errorLine.hidden = false;
    } else if (!errorLine.hidden) {
      errorLine.replaceChildren();
      errorLine.hidden = true;
    }

    const actions = row.querySelector('.job-row-actions');
    const want = isActive(job.status) ? 'cancel' : job.status === 'failed' || job.status === 'cancelled' ? 'resume' : null;
    const existing = actions.firstElementChild;
    if (!existing || existing.dataset.kind !== want) {
      actions.replaceChildren();
      if (want === 'cancel') {
        actions.append(h('button', { type: 'button', class: 'cancel-job', dataset: { kind: 'cancel' } }, 'Cancel'));
      } else if (want === 'resume') {
        actions.append(h('button', { type: 'button', class: 'resume-job', dataset: { kind: 'resume' } }, 'Resume'));
      }
    }
    const button = actions.firstElementChild;
    if (button) {
      button.disabled = want === 'cancel' && Boolean(job.cancel_requested);
      button.setAttribute('aria-label', `${want === 'cancel' ? 'Cancel' : 'Resume'} ${jobTypeLabel(job.type)} job of ${job.book_id}`);
      button.onclick = () => act(button, want, job);
    }
  }

  async function act(button, kind, job) {
    button.disabled = true;
    error.hidden = true;
    try {
      await postJson(`/v1/jobs/${seg(job.id)}/${kind}`, undefined, { signal: scope.signal });
    } catch (failure) {
      if (failure.name === 'AbortError') return;
      showError(failure);
    }
    await refresh();
  }

  renderTabs();
  every(scope, REFRESH_MS, refresh);
  refresh();
}
