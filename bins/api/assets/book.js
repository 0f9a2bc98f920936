// One book (`/books/{id}`): upload, the page grid, the actions with their preconditions,
// the live job cards, the job history and the guidelines.
//
// Live updates: each active job shown is followed through live.js (one stream per job
// whatever this view does). While an OCR or guidelines job progresses, the manifest is
// read again at most once a second and the tiles are updated in place; once more at the
// terminal status.

import { getJson, postJson, seg } from './api.js';
import { follow } from './live.js';
import { reload } from './router.js';
import {
  h, reconcile, setAttr, setText, statusBadge, updateStatusBadge, every, plural, jobTypeLabel,
  formatTime, formatDuration, jobElapsedMs, isActive, isTerminal, shortId, errorText, focusQuietly, chainLine,
} from './ui.js';
import { uploadPanel } from './upload.js';
import { pageGrid } from './pages.js';
import { jobCard } from './jobcard.js';
import { guidelinesSection } from './guidelines.js';

const JOB_TYPES = ['ocr', 'guidelines', 'finalize'];
// The jobs shown and followed: an upload's `ingest` (started by the upload, never by a
// button) and the buttons' steps.
const SHOWN_TYPES = ['ingest', ...JOB_TYPES];
const MANIFEST_MIN_INTERVAL_MS = 1000;
const HISTORY_REFRESH_MS = 5000;
const HISTORY_LIMIT = 50;

export function bookView(container, [bookId], scope) {
  document.title = `${bookId} · Folio`;
  const base = `/v1/books/${seg(bookId)}`;

  // ---- skeleton -------------------------------------------------------------------------
  const title = h('h1', { id: 'book-title', class: 'book-title-heading' }, bookId);
  const meta = h('p', { class: 'book-meta muted' });
  // A finished book's guidelines may sit below hundreds of tiles: one link there.
  const jumpToGuidelines = h('a', { href: '#guidelines', class: 'jump-link', hidden: true }, 'Read the final guidelines ↓');
  const loadError = h('p', { class: 'error', role: 'alert', hidden: true });

  // The next step to take is the one primary button; a step already done is secondary
  // and says that running it again is what it would do.
  const labels = {
    ocr: ['Run OCR', 'Run OCR'],
    guidelines: ['Extract guidelines', 'Extract again'],
    finalize: ['Finalize', 'Finalize again'],
  };
  const buttons = Object.fromEntries(JOB_TYPES.map((type) => [type, h('button', {
    type: 'button', id: `start-${type}`, class: 'primary', 'aria-describedby': `start-${type}-reason start-${type}-state`,
  }, labels[type][0])]));
  /** Why a button is disabled (`#start-*-reason`, read by the browser tests). */
  const reasons = Object.fromEntries(JOB_TYPES.map((type) => [type, h('p', { id: `start-${type}-reason`, class: 'reason' })]));
  /** That a step is done. */
  const states = Object.fromEntries(JOB_TYPES.map((type) => [type, h('p', { id: `start-${type}-state`, class: 'action-state', hidden: true })]));
  const steps = {};
  const hints = {
    ocr: 'Recognize the text of every page not done yet.',
    guidelines: 'Turn each page’s text into teaching guidelines.',
    finalize: 'Merge the pages’ guidelines into one document.',
  };
  /** Guidelines with finalize chained after it: one click to the final guidelines. */
  const chainButton = h('button', {
    type: 'button', id: 'start-guidelines-finalize', 'aria-describedby': 'start-guidelines-finalize-reason',
  }, 'Extract and finalize');
  const chainReason = h('p', { id: 'start-guidelines-finalize-reason', class: 'reason' });
  const actionError = h('p', { id: 'action-error', class: 'error', role: 'alert', hidden: true });
  const actions = h('section', { class: 'card actions-card', 'aria-labelledby': 'actions-title' },
    h('h2', { id: 'actions-title' }, 'Actions'),
    h('ol', { class: 'action-steps' }, JOB_TYPES.map((type) => {
      steps[type] = h('li', { class: 'action', dataset: { step: type } },
        buttons[type],
        h('div', { class: 'action-text' }, h('p', { class: 'hint' }, hints[type]), states[type], reasons[type]),
      );
      return steps[type];
    }),
    h('li', { class: 'action', dataset: { step: 'guidelines-finalize' } },
      chainButton,
      h('div', { class: 'action-text' }, h('p', { class: 'hint' }, 'Extract the guidelines, then finalize them as soon as that completes.'), chainReason),
    )),
    actionError,
  );

  const jobsList = h('div', { id: 'book-jobs', class: 'job-cards' });
  const jobsCard = h('section', { class: 'card jobs-card', 'aria-labelledby': 'book-jobs-title' },
    h('h2', { id: 'book-jobs-title' }, 'Jobs'), jobsList);

  const historyList = h('ol', { id: 'job-history', class: 'history' });
  const historyCard = h('section', { class: 'card history-card', 'aria-labelledby': 'history-title' },
    h('h2', { id: 'history-title' }, 'History'), historyList);

  const grid = pageGrid(bookId, scope, { retry: retryPage });
  const guidelines = guidelinesSection(bookId, scope);
  const upload = uploadPanel(bookId, scope, onUploaded);

  // The side column comes first in the document so the keyboard reaches the actions and
  // the live jobs before the (possibly 300) page tiles; CSS puts it on the right.
  const layout = h('div', { class: 'book-layout', hidden: true },
    h('div', { class: 'book-side' }, actions, jobsCard, historyCard),
    h('div', { class: 'book-main' }, upload, grid.element, guidelines.element),
  );
  container.append(
    h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '/' }, 'Books'), h('span', { 'aria-hidden': 'true' }, '/'), h('span', { class: 'crumb-id' }, bookId)),
    h('header', { class: 'book-header' }, title, meta, jumpToGuidelines),
    loadError,
    layout,
  );

  jumpToGuidelines.addEventListener('click', (event) => {
    event.preventDefault();
    const reduce = matchMedia('(prefers-reduced-motion: reduce)').matches;
    guidelines.element.scrollIntoView({ behavior: reduce ? 'auto' : 'smooth', block: 'start' });
    focusQuietly(guidelines.element);
  });

  // ---- state ----------------------------------------------------------------------------
  let book = null;
  /** Counts the upload answers: a manifest read begun before one of them is stale. */
  let pagesEpoch = 0;
  let history = [];
  /** The job shown per type: the active one, else the latest. */
  const shown = new Map();
  /** Every job seen, by id, newest state. */
  const known = new Map();
  /** jobId -> unsubscribe, for the jobs followed live. */
  const followed = new Map();
  /** jobId -> its card (a card per job shown). */
  const cards = new Map();
  /** Ids of completed chained jobs whose next job is being looked up. */
  const chasing = new Set();
  scope.onCleanup(() => {
    for (const unsubscribe of followed.values()) unsubscribe();
    followed.clear();
  });

  /** Records a job; a terminal state is never replaced (a list read earlier may arrive later). */
  function merge(job) {
    const old = known.get(job.id);
    if (old && isTerminal(old.status)) return old;
    known.set(job.id, job);
    return job;
  }

  function choose(type) {
    const jobs = [...known.values()].filter((job) => job.type === type);
    jobs.sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)) || String(b.id).localeCompare(String(a.id)));
    return jobs.find((job) => isActive(job.status)) || jobs[0] || null;
  }

  function activeJob(type) {
    const job = shown.get(type);
    return job && isActive(job.status) ? job : null;
  }

  // ---- loading --------------------------------------------------------------------------
  async function loadBook() {
    const epoch = pagesEpoch;
    const next = await getJson(base, { signal: scope.signal });
    if (!scope.alive) return;
    if (book && epoch !== pagesEpoch) {
      // Pages were added from an upload's answer while this read was under way: it may
      // not have them yet, so read again rather than take tiles away.
      refreshManifest();
      return;
    }
    book = next;
    renderBook();
  }

  async function loadHistory() {
    const answer = await getJson(`${base}/jobs?limit=${HISTORY_LIMIT}`, { signal: scope.signal });
    if (!scope.alive) return false;
    let changed = false;
    for (const job of answer.jobs || []) {
      const old = known.get(job.id);
      const kept = merge(job);
      if (!old || old.status !== kept.status) changed = true;
    }
    history = (answer.jobs || []).map((job) => known.get(job.id) || job);
    renderJobs();
    return changed;
  }

  let manifestTimer = null;
  let manifestInFlight = false;
  let manifestQueued = false;
  let lastManifestAt = 0;

  /** Reads the manifest again, at most once per MANIFEST_MIN_INTERVAL_MS. */
  function refreshManifest() {
    if (manifestInFlight || manifestTimer !== null) {
      manifestQueued = true;
      return;
    }
    const wait = Math.max(0, lastManifestAt + MANIFEST_MIN_INTERVAL_MS - Date.now());
    manifestTimer = scope.timeout(async () => {
      manifestTimer = null;
      manifestInFlight = true;
      manifestQueued = false;
      lastManifestAt = Date.now();
      try {
        await loadBook();
      } catch (error) {
        if (error.name !== 'AbortError') console.warn(error);
      } finally {
        manifestInFlight = false;
        if (manifestQueued && scope.alive) refreshManifest();
      }
    }, wait);
  }

  // ---- live following -------------------------------------------------------------------
  function syncFollowing() {
    const wanted = new Set();
    for (const type of SHOWN_TYPES) {
      const job = shown.get(type);
      if (job && isActive(job.status)) wanted.add(job.id);
    }
    for (const [id, unsubscribe] of followed) {
      if (!wanted.has(id)) {
        unsubscribe();
        followed.delete(id);
      }
    }
    for (const id of wanted) {
      if (!followed.has(id)) followed.set(id, follow(id, onJob, known.get(id)));
    }
  }

  function onJob(job) {
    if (!scope.alive) return;
    const before = known.get(job.id);
    const kept = merge(job);
    if (kept !== job) return;
    // Pages change in the manifest when items finish; the page being worked on comes
    // from the job itself.
    const counts = (value) => value && [value.status, value.progress?.total, value.progress?.completed, value.progress?.failed].join('/');
    const progressed = counts(before) !== counts(job);
    renderJobs();
    if ((job.type === 'ocr' || job.type === 'ingest') && book) renderGrid();
    // An ingest's pages appear in the grid as they are made.
    if (progressed && SHOWN_TYPES.includes(job.type)) refreshManifest();
    if (isTerminal(job.status)) {
      followed.delete(job.id);
      if (job.status === 'completed' && (job.then?.length || job.next_job_id)) followNext(job);
      refreshManifest();
      // A chained job, or one started elsewhere, shows up in the history.
      loadHistory().then(syncFollowing).catch(() => {});
    }
  }

  /**
   * A chained job completed: its completion created (or linked) the next job. Follow that
   * one; the event names it, else the job is read once more.
   */
  async function followNext(job) {
    if (chasing.has(job.id)) return;
    chasing.add(job.id);
    try {
      let nextId = job.next_job_id;
      if (!nextId) {
        const fresh = await getJson(`/v1/jobs/${seg(job.id)}`, { signal: scope.signal });
        if (!scope.alive) return;
        known.set(fresh.id, fresh);
        nextId = fresh.next_job_id;
      }
      if (!nextId) {
        renderJobs();
        return;
      }
      const next = known.get(nextId) || await getJson(`/v1/jobs/${seg(nextId)}`, { signal: scope.signal });
      if (!scope.alive) return;
      if (!history.some((entry) => entry.id === next.id)) history.unshift(next);
      adopt(next);
    } catch (error) {
      // The history refresh picks the next job up anyway.
      if (error.name !== 'AbortError') console.warn(error);
    }
  }

  function adopt(job) {
    merge(job);
    renderJobs();
    syncFollowing();
  }

  // ---- rendering ------------------------------------------------------------------------
  function renderBook() {
    upload.classList.toggle('compact', book.pages.length > 0);
    const final = book.guidelines?.status === 'final';
    layout.classList.toggle('guidelines-final', final);
    layout.classList.toggle('no-pages', book.pages.length === 0);
    jumpToGuidelines.hidden = !final;
    setText(title, book.title);
    setAttr(title, 'title', book.title);
    document.title = `${book.title} · Folio`;
    setText(meta, `${book.book_id} · ${plural(book.pages.length, 'page')} · created ${formatTime(book.created_at)}`);
    renderGrid();
    guidelines.update(book);
    renderActions();
  }

  /** The page grid, with the OCR job's page and whether an upload's pages are being made. */
  function renderGrid() {
    grid.update(book, activeJob('ocr'), Boolean(activeJob('ingest')));
  }

  function hasChain(job) {
    return Boolean(job && (job.then?.length || job.previous_job_id || job.next_job_id));
  }

  /** The job whose completion started `job` (through the job it resumes, if need be). */
  function previousOf(job, depth = 0) {
    if (!job || depth > 20) return null;
    if (job.previous_job_id) return known.get(job.previous_job_id) || null;
    const linking = [...known.values()].find((other) => other.next_job_id === job.id);
    if (linking) return linking;
    return job.resumed_from ? previousOf(known.get(job.resumed_from), depth + 1) : null;
  }

  /** The job a completed `job` started, or the resume of a stopped one. */
  function nextOf(job) {
    if (job.next_job_id) return known.get(job.next_job_id) || null;
    if (job.status === 'failed' || job.status === 'cancelled') {
      const resumes = [...known.values()].filter((other) => other.resumed_from === job.id);
      return resumes[0] || null;
    }
    return null;
  }

  /**
   * The chain of the newest chained job shown: its jobs in order and the job types still
   * to come, or null.
   */
  function currentChain() {
    const candidates = SHOWN_TYPES.map((type) => shown.get(type)).filter(hasChain);
    if (!candidates.length) return null;
    candidates.sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
    const jobs = [candidates[0]];
    const seen = new Set([candidates[0].id]);
    for (let job = previousOf(jobs[0]); job && !seen.has(job.id); job = previousOf(job)) {
      seen.add(job.id);
      jobs.unshift(job);
    }
    for (let job = nextOf(jobs.at(-1)); job && !seen.has(job.id); job = nextOf(job)) {
      seen.add(job.id);
      jobs.push(job);
    }
    // A resumed step replaces the job it resumes.
    const steps = jobs.filter((job, index) => !jobs.slice(index + 1).some((later) => later.resumed_from === job.id));
    const last = steps.at(-1);
    const stopped = last.status === 'failed' || last.status === 'cancelled';
    const types = new Set(steps.map((job) => job.type));
    const rest = (last.then || []).filter((type) => !types.has(type));
    return { jobs: steps, rest, stopped };
  }

  const pipelineSteps = h('ol', { class: 'pipeline-steps' });
  const pipelineSummary = h('p', { class: 'pipeline-summary' });
  const pipeline = h('section', { class: 'pipeline', 'aria-label': 'Pipeline' },
    h('div', { class: 'pipeline-head' }, h('span', { class: 'pipeline-title' }, 'Pipeline'), pipelineSummary),
    pipelineSteps);

  function cardFor(job) {
    let card = cards.get(job.id);
    if (!card) {
      card = jobCard({ cancel: cancelJob, resume: resumeJob });
      cards.set(job.id, card);
    }
    card.update(job);
    return card;
  }

  /** A step of the pipeline with no job yet: waiting for the one before, or stopped. */
  function placeholder() {
    const bar = h('div', { class: 'bar', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '0', 'aria-valuenow': '0' }, h('div', { class: 'bar-fill' }));
    const element = h('article', { class: 'pipeline-placeholder' },
      h('div', { class: 'job-head' }, h('span', { class: 'job-title' }), statusBadge('waiting')),
      bar,
      h('p', { class: 'job-note muted' }));
    element.update = (type, state, before) => {
      setText(element.querySelector('.job-title'), jobTypeLabel(type));
      updateStatusBadge(element.querySelector('.status'), state === 'stopped' ? 'cancelled' : 'pending', state);
      setAttr(bar, 'aria-label', `${jobTypeLabel(type)} progress`);
      setAttr(bar, 'aria-valuetext', state);
      setText(element.querySelector('.job-note'), state === 'stopped'
        ? `Stopped: ${jobTypeLabel(before)} did not complete. Resume it to carry on.`
        : `Starts when ${jobTypeLabel(before)} completes.`);
    };
    return element;
  }

  function renderPipeline(chain) {
    const steps = [
      ...chain.jobs.map((job) => ({ key: job.id, type: job.type, job, state: job.status })),
      ...chain.rest.map((type) => ({ key: `${type}-${chain.stopped ? 'stopped' : 'waiting'}`, type, job: null, state: chain.stopped ? 'stopped' : 'waiting' })),
    ];
    reconcile(pipelineSteps, steps, (step) => step.key, (step) => {
      const content = step.job ? cardFor(step.job) : placeholder();
      return h('li', { class: 'pipeline-step' }, h('span', { class: 'pipeline-label' }), content);
    }, (element, step) => {
      const index = steps.indexOf(step);
      setAttr(element, 'data-step', step.type);
      setAttr(element, 'data-state', step.state);
      setText(element.querySelector('.pipeline-label'), `Step ${index + 1} of ${steps.length}`);
      if (step.job) {
        // A card may have been shown outside the pipeline in between.
        const card = cardFor(step.job);
        const current = element.children[1];
        if (current !== card) {
          if (current) current.replaceWith(card);
          else element.append(card);
        }
      } else {
        // Waiting for the step before; stopped by the step that failed or was cancelled.
        element.lastElementChild.update(step.type, step.state, chain.stopped ? chain.jobs.at(-1).type : steps[index - 1]?.type);
      }
    });
    const done = chain.jobs.filter((job) => job.status === 'completed').length;
    const last = chain.jobs.at(-1);
    let summary;
    if (chain.stopped) summary = `stopped at ${jobTypeLabel(last.type)} (${last.status})`;
    else if (done === steps.length) summary = 'every step completed';
    else summary = `${done} of ${steps.length} steps completed`;
    setText(pipelineSummary, `${steps.map((step) => jobTypeLabel(step.type)).join(' → ')} · ${summary}`);
    setAttr(pipeline, 'data-state', chain.stopped ? 'stopped' : done === steps.length ? 'completed' : 'running');
  }

  function renderJobs() {
    for (const type of SHOWN_TYPES) shown.set(type, choose(type));
    const chain = currentChain();
    const inChain = new Set(chain ? chain.jobs.map((job) => job.id) : []);
    const chainTypes = new Set(chain ? [...chain.jobs.map((job) => job.type), ...chain.rest] : []);
    const chainStart = chain ? String(chain.jobs[0].created_at) : '';
    // Jobs outside the chain: an older job of a type the chain covers is not shown again.
    const loose = SHOWN_TYPES.map((type) => shown.get(type)).filter((job) => job && !inChain.has(job.id)
      && !(chainTypes.has(job.type) && !isActive(job.status) && String(job.created_at) < chainStart));
    const children = [];
    if (chain) {
      renderPipeline(chain);
      children.push(pipeline);
    }
    for (const job of loose) children.push(cardFor(job));
    const used = new Set([...inChain, ...loose.map((job) => job.id)]);
    for (const id of [...cards.keys()]) {
      if (!used.has(id)) cards.delete(id);
    }
    children.forEach((child, index) => {
      if (jobsList.children[index] !== child) jobsList.insertBefore(child, jobsList.children[index] || null);
    });
    while (jobsList.children.length > children.length) jobsList.lastElementChild.remove();
    if (!children.length) jobsList.append(h('p', { class: 'empty' }, 'No jobs yet. Start OCR to recognize the pages.'));
    reconcile(historyList, history.map((job) => known.get(job.id) || job), (job) => job.id, createHistoryRow, updateHistoryRow);
    if (!history.length) historyList.append(h('li', { class: 'empty' }, 'Nothing has run on this book yet.'));
    renderActions();
    syncFollowing();
  }

  function renderActions() {
    if (!book) return;
    const pages = book.pages || [];
    const notDone = pages.filter((page) => page.ocr?.status !== 'done').length;
    const guidelinesState = book.guidelines?.status || 'none';
    const why = {
      ocr: activeJob('ocr') ? 'OCR is running' : !pages.length ? 'Upload pages first' : notDone === 0 ? 'Every page is done' : '',
      guidelines: activeJob('guidelines') ? 'Guidelines are being extracted'
        : !pages.length ? 'Upload pages first'
          : notDone ? `OCR is not done for ${plural(notDone, 'page')}` : '',
      finalize: activeJob('finalize') ? 'Finalizing'
        : guidelinesState !== 'extracted' && guidelinesState !== 'final' ? 'Extract guidelines first' : '',
    };
    const done = {
      ocr: pages.length > 0 && notDone === 0,
      guidelines: guidelinesState === 'extracted' || guidelinesState === 'final',
      finalize: guidelinesState === 'final',
    };
    const doneText = {
      ocr: '',
      guidelines: guidelinesState === 'final' ? '✓ Extracted' : `✓ Extracted from ${plural(book.guidelines?.pages_done || 0, 'page')}`,
      finalize: '✓ Final guidelines are ready',
    };
    // The next step: the first one that can run and is not done.
    const next = JOB_TYPES.find((type) => !why[type] && !done[type]) || null;
    const chainWhy = why.guidelines || (activeJob('finalize') ? 'Finalizing' : '');
    if (!chainButton.dataset.busy) chainButton.disabled = Boolean(chainWhy);
    setText(chainReason, chainWhy);
    chainReason.hidden = !chainWhy;
    for (const type of JOB_TYPES) {
      const reason = why[type];
      const button = buttons[type];
      if (!button.dataset.busy) button.disabled = Boolean(reason);
      button.classList.toggle('primary', type === next);
      setText(button, labels[type][done[type] && !activeJob(type) ? 1 : 0]);
      setText(reasons[type], reason);
      reasons[type].hidden = !reason;
      // "Every page is done" is good news, not a warning.
      reasons[type].classList.toggle('is-done', type === 'ocr' && done.ocr && !activeJob('ocr'));
      const state = done[type] && !activeJob(type) ? doneText[type] : '';
      setText(states[type], state);
      states[type].hidden = !state;
      setAttr(steps[type], 'data-done', done[type] ? 'true' : null);
    }
  }

  function createHistoryRow() {
    return h('li', { class: 'history-row' },
      h('div', { class: 'history-head' },
        h('span', { class: 'history-type' }),
        statusBadge('pending'),
        h('span', { class: 'history-id muted' }),
      ),
      h('p', { class: 'history-times muted' }),
      h('p', { class: 'history-progress muted' }),
      h('p', { class: 'history-chain muted', hidden: true }),
      h('p', { class: 'history-error', hidden: true }),
    );
  }

  function updateHistoryRow(row, job) {
    setAttr(row, 'data-job-id', job.id);
    setAttr(row, 'data-status', job.status);
    setAttr(row, 'id', `history-${job.id}`);
    setText(row.querySelector('.history-type'), jobTypeLabel(job.type));
    chainLine(row.querySelector('.history-chain'), job, (id) => `#history-${id}`);
    updateStatusBadge(row.querySelector('.status'), job.status);
    const id = row.querySelector('.history-id');
    setText(id, `#${shortId(job.id)}`);
    setAttr(id, 'title', `Job ${job.id}`);
    const times = [`created ${formatTime(job.created_at)}`];
    if (job.finished_at) times.push(`took ${formatDuration(jobElapsedMs(job))}`);
    else if (job.started_at) times.push(`running for ${formatDuration(jobElapsedMs(job))}`);
    if (job.attempt > 1) times.push(`attempt ${job.attempt}/${job.max_attempts}`);
    if (job.resumed_from) times.push(`resumes #${shortId(job.resumed_from)}`);
    setText(row.querySelector('.history-times'), times.join(' · '));
    const progress = job.progress || {};
    const parts = [];
    if (progress.total) parts.push(`${progress.completed} of ${progress.total} done`);
    else if (progress.completed) parts.push(`${progress.completed} done`);
    if (progress.failed) parts.push(`${progress.failed} failed`);
    setText(row.querySelector('.history-progress'), parts.join(' · '));
    const error = row.querySelector('.history-error');
    if (job.error && (job.status === 'failed' || job.status === 'pending')) {
      error.replaceChildren(h('code', { class: 'error-code' }, job.error.code), ' ', job.error.message);
      setAttr(error, 'data-code', job.error.code);
      error.hidden = false;
    } else if (!error.hidden) {
      error.replaceChildren();
      error.hidden = true;
    }
  }

  // ---- actions --------------------------------------------------------------------------
  function showActionError(error) {
    if (!error) {
      actionError.hidden = true;
      actionError.textContent = '';
      return;
    }
    actionError.textContent = errorText(error);
    actionError.hidden = false;
  }

  /** A 409 job_active names the active job: show and follow it. */
  function adoptFromError(error) {
    const job = error && error.details && error.details.job;
    if (job && job.id) {
      adopt(job);
      if (!history.some((entry) => entry.id === job.id)) history.unshift(job);
      renderJobs();
    }
  }

  async function withBusy(button, action) {
    button.dataset.busy = 'true';
    button.disabled = true;
    try {
      await action();
    } finally {
      delete button.dataset.busy;
      renderActions();
    }
  }

  function startJob(type, then = null, button = buttons[type]) {
    return withBusy(button, async () => {
      showActionError(null);
      try {
        const job = await postJson(`${base}/jobs`, then ? { type, then } : { type }, { signal: scope.signal });
        history.unshift(job);
        adopt(job);
        refreshManifest();
      } catch (error) {
        if (error.name === 'AbortError') return;
        showActionError(error);
        adoptFromError(error);
        refreshManifest();
      }
    });
  }
  for (const type of JOB_TYPES) buttons[type].addEventListener('click', () => startJob(type));
  chainButton.addEventListener('click', () => startJob('guidelines', ['finalize'], chainButton));

  async function retryPage(number, button) {
    button.disabled = true;
    showActionError(null);
    try {
      const job = await postJson(`${base}/pages/${number}/ocr/retry`, undefined, { signal: scope.signal });
      history.unshift(job);
      adopt(job);
    } catch (error) {
      if (error.name === 'AbortError') return;
      showActionError(error);
      adoptFromError(error);
      if (button.isConnected) button.disabled = false;
    }
  }

  async function cancelJob(job) {
    showActionError(null);
    try {
      onJob(await postJson(`/v1/jobs/${seg(job.id)}/cancel`, undefined, { signal: scope.signal }));
    } catch (error) {
      if (error.name === 'AbortError') return;
      showActionError(error);
      if (error.details?.job) onJob(error.details.job);
    }
  }

  async function resumeJob(job) {
    showActionError(null);
    try {
      const next = await postJson(`/v1/jobs/${seg(job.id)}/resume`, undefined, { signal: scope.signal });
      history.unshift(next);
      adopt(next);
    } catch (error) {
      if (error.name === 'AbortError') return;
      showActionError(error);
      adoptFromError(error);
    }
  }

  function onUploaded(answer) {
    // The upload's ingest job makes the pages; following it refreshes the grid as they come.
    refreshManifest();
    if (answer && answer.job) {
      if (!history.some((entry) => entry.id === answer.job.id)) history.unshift(answer.job);
      adopt(answer.job);
    }
  }

  // ---- start ----------------------------------------------------------------------------
  scope.interval(() => {
    for (const [id, card] of cards) {
      const job = known.get(id);
      if (job && isActive(job.status) && card.isConnected) card.tick();
    }
  }, 1000);

  (async () => {
    try {
      await Promise.all([loadBook(), loadHistory()]);
    } catch (error) {
      if (error.name === 'AbortError') return;
      if (error.status === 404) {
        setText(title, 'Book not found');
        document.title = 'Book not found · Folio';
        loadError.replaceChildren(`There is no book with the id “${bookId}”. `, h('a', { href: '/' }, 'Back to the books'));
      } else {
        loadError.replaceChildren(`The book could not be loaded: ${errorText(error)} `, h('button', { type: 'button', on: { click: reload } }, 'Try again'));
      }
      loadError.hidden = false;
      return;
    }
    layout.hidden = false;
    renderJobs();
    renderGrid();
    // For measurements (browser tests, the 300-page check): the book is on screen.
    performance.mark('folio-book-ready');
    // Jobs started elsewhere (another tab, the API) show up within a few seconds.
    every(scope, HISTORY_REFRESH_MS, async () => {
      if (await loadHistory()) refreshManifest();
    });
  })();
}
