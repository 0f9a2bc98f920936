// One job's card: a progress bar (role="progressbar"), completed and failed counts, the
// current item, elapsed time and an estimate of the time left, its error, and cancel or
// resume. The card only renders what it is given: live.js feeds it.

import { h, setAttr, setText, statusBadge, updateStatusBadge, formatDuration, jobElapsedMs, jobTypeLabel, isActive, shortId } from './ui.js';

const ITEM_WORDS = { ocr: ['page', 'pages'], guidelines: ['page', 'pages'] };

function items(type, count) {
  const [one, many] = ITEM_WORDS[type] || ['item', 'items'];
  return `${count} ${count === 1 ? one : many}`;
}

/**
 * A card for jobs of one type. `actions.cancel(job)` and `actions.resume(job)` are called
 * by its buttons. Returns the element; `card.update(job)` renders a job, `card.tick()`
 * refreshes the clock-based parts (elapsed, estimate).
 */
export function jobCard(actions) {
  const title = h('span', { class: 'job-title' });
  const badge = statusBadge('pending');
  const id = h('span', { class: 'job-id muted' });
  const fill = h('div', { class: 'bar-fill' });
  const bar = h('div', { class: 'bar', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '0', 'aria-valuenow': '0' }, fill);
  const counts = h('p', { class: 'job-counts' });
  const current = h('p', { class: 'job-current' });
  const elapsed = h('span', { class: 'job-elapsed' });
  const eta = h('span', { class: 'job-eta' });
  const times = h('p', { class: 'job-times muted' }, elapsed, eta);
  const note = h('p', { class: 'job-note muted' });
  const error = h('p', { class: 'job-error' });
  const buttons = h('div', { class: 'job-actions' });
  const card = h('article', { class: 'job' },
    h('div', { class: 'job-head' }, title, badge, id),
    bar, counts, current, times, note, error, buttons);

  let job = null;
  // The first observation of progress while running, for the rate of the estimate.
  let sample = null;

  function done(value) {
    return (value.progress?.completed || 0) + (value.progress?.failed || 0);
  }

  card.update = (next) => {
    if (!job || job.id !== next.id) sample = null;
    job = next;
    const progress = job.progress || {};
    const total = progress.total ?? 0;
    const finished = done(job);
    setAttr(card, 'data-job-id', job.id);
    setAttr(card, 'data-job-type', job.type);
    setAttr(card, 'data-status', job.status);
    setAttr(card, 'aria-label', `${jobTypeLabel(job.type)} job, ${job.status}`);
    setText(title, jobTypeLabel(job.type));
    const label = job.cancel_requested && isActive(job.status) ? 'cancelling' : job.status;
    updateStatusBadge(badge, job.status, label);
    setText(id, `#${shortId(job.id)}`);
    setAttr(id, 'title', `Job ${job.id}`);

    setAttr(bar, 'aria-valuemax', total);
    setAttr(bar, 'aria-valuenow', finished);
    setAttr(bar, 'aria-label', `${jobTypeLabel(job.type)} progress`);
    setAttr(bar, 'aria-valuetext', total ? `${finished} of ${items(job.type, total)}` : `${items(job.type, finished)} so far`);
    const fraction = total ? Math.min(1, finished / total) : job.status === 'completed' ? 1 : 0;
    fill.style.width = `${(fraction * 100).toFixed(1)}%`;
    setAttr(bar, 'data-indeterminate', !total && isActive(job.status) ? 'true' : null);
    // A job that ended before it knew its size has no bar to show, only its outcome.
    const noMeasure = !total && !isActive(job.status) && job.status !== 'completed';
    bar.hidden = noMeasure;

    const completed = progress.completed || 0;
    const failed = progress.failed || 0;
    let countText = total ? `${completed} of ${items(job.type, total)} done` : `${items(job.type, completed)} done`;
    if (failed) countText += ` · ${failed} failed`;
    if (job.status === 'pending' && !finished) countText = job.attempt ? 'Waiting to run again' : 'Waiting for a worker';
    if (noMeasure && !finished) countText = '';
    setText(counts, countText);
    counts.hidden = !countText;
    counts.classList.toggle('has-failed', failed > 0);

    const item = progress.current_item;
    const showItem = isActive(job.status) && item;
    setText(current, showItem ? (ITEM_WORDS[job.type] ? `Working on page ${item}` : `Working on ${item}`) : '');
    current.hidden = !showItem;

    if (job.status === 'running' && sample === null && total) sample = { at: Date.now(), done: finished };

    const notes = [];
    // The counts already say how many failed ("2 page(s) failed" would say it twice).
    const restatesFailed = failed > 0 && /^\s*\d+\s+\S+\s+failed\.?\s*$/i.test(progress.message || '');
    if (progress.message && isActive(job.status) && !restatesFailed) notes.push(progress.message);
    if (job.attempt > 1) notes.push(`attempt ${job.attempt} of ${job.max_attempts}`);
    if (job.resumed_from) notes.push(`resumes #${shortId(job.resumed_from)}`);
    setText(note, notes.join(' · '));
    note.hidden = notes.length === 0;

    if (job.error) {
      error.replaceChildren(h('code', { class: 'error-code' }, job.error.code), ' ', job.error.message);
      error.hidden = false;
      setAttr(error, 'data-code', job.error.code);
    } else {
      error.replaceChildren();
      error.hidden = true;
    }

    renderButtons();
    card.tick();
  };

  function renderButtons() {
    const want = isActive(job.status) ? 'cancel' : job.status === 'failed' || job.status === 'cancelled' ? 'resume' : null;
    const existing = buttons.firstElementChild;
    if (existing && existing.dataset.kind === want) {
      existing.disabled = want === 'cancel' && job.cancel_requested;
      return;
    }
    buttons.replaceChildren();
    if (want === 'cancel') {
      const button = h('button', {
        type: 'button', class: 'cancel-job', dataset: { kind: 'cancel' },
        on: { click: () => run(button, actions.cancel) },
      }, 'Cancel');
      button.disabled = Boolean(job.cancel_requested);
      buttons.append(button);
    } else if (want === 'resume') {
      const button = h('button', {
        type: 'button', class: 'resume-job', dataset: { kind: 'resume' },
        on: { click: () => run(button, actions.resume) },
      }, 'Resume');
      buttons.append(button);
    }
  }

  async function run(button, action) {
    button.disabled = true;
    try {
      await action(job);
    } finally {
      if (button.isConnected && !(button.dataset.kind === 'cancel' && job.cancel_requested)) button.disabled = false;
    }
  }

  card.tick = () => {
    if (!job) return;
    const now = Date.now();
    const ms = jobElapsedMs(job, now);
    const started = Boolean(job.started_at);
    setText(elapsed, started || job.finished_at ? `${job.finished_at ? 'Took' : 'Elapsed'} ${formatDuration(ms)}` : `Queued ${formatDuration(ms)} ago`);
    setText(eta, estimate(now));
  };

  function estimate(now) {
    if (job.status !== 'running') return '';
    const total = job.progress?.total;
    const finished = done(job);
    if (!total || finished >= total) return '';
    let rate = 0;
    if (sample && finished > sample.done && now > sample.at) {
      rate = (finished - sample.done) / (now - sample.at);
    } else if (!job.resumed_from && finished > 0 && job.started_at) {
      rate = finished / Math.max(1, now - new Date(job.started_at).getTime());
    }
    if (!rate) return ' · estimating time left…';
    return ` · about ${formatDuration((total - finished) / rate)} left`;
  }

  return card;
}
