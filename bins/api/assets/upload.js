// Bulk upload of pages: drag-and-drop of many files (or the file picker) onto the book.
// The files are put in natural order of their names (p2 before p10) in a list that can be
// reordered (drag a row, or its up and down buttons) until "Upload" sends them in bounded
// batches, one multipart request each and one after the other, with a progress per file
// and one for the whole drop. A file the server refuses for its content is shown with its
// reason, and the rest of its batch is sent again without it: the others go on.
//
// Each drop is one line once it is stored ("Stored 24 files: 24 pages · making pages"),
// its files behind a disclosure, so the page grid stays near the top; a drop with refused
// files stays open with each one's reason.

import { getJson, upload, seg } from './api.js';
import { h, setText, plural, pageRanges, errorText } from './ui.js';

/** What the server takes (its rejection lists png, jpeg, webp, tiff, bmp, gif): no PDF yet. */
const ACCEPT = 'image/png,image/jpeg,image/webp,image/tiff,image/bmp,image/gif,application/pdf,.png,.jpg,.jpeg,.webp,.tif,.tiff,.bmp,.gif,.pdf';
/** A drop of at most this many files shows its files while it is sent. */
const OPEN_WHILE_SENDING = 4;
/** Drops kept in the log. */
const BATCHES_KEPT = 5;
/** Files in one request: well under the server's cap of files per upload (300). */
export const BATCH_FILES = 50;
/** Bytes in one request (a bigger file goes alone): well under --max-upload-bytes. */
export const BATCH_BYTES = 64 * 1024 * 1024;

const names = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });

/** A fresh idempotency key (a random UUID where the browser has one). */
function newKey() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map((byte) => byte.toString(16).padStart(2, '0')).join('');
}

/** `files` in natural order of their names: p2 before p10, then as given. */
export function naturalOrder(files) {
  return files
    .map((file, index) => ({ file, index }))
    .sort((a, b) => names.compare(a.file.name, b.file.name) || a.index - b.index)
    .map(({ file }) => file);
}

/** `items` (each with a `file`) cut into runs of at most BATCH_FILES files and BATCH_BYTES. */
export function batches(items) {
  const out = [];
  let current = [];
  let bytes = 0;
  for (const item of items) {
    if (current.length && (current.length >= BATCH_FILES || bytes + item.file.size > BATCH_BYTES)) {
      out.push(current);
      current = [];
      bytes = 0;
    }
    current.push(item);
    bytes += item.file.size;
  }
  if (current.length) out.push(current);
  return out;
}

function size(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

/**
 * The upload panel of book `bookId`. `onUploaded(answer)` gets the server's answer
 * (`{pages, job, job_created}`) of each batch that was stored.
 */
export function uploadPanel(bookId, scope, onUploaded) {
  const input = h('input', { type: 'file', id: 'file-input', multiple: true, accept: ACCEPT });
  const dropzone = h('div', { id: 'dropzone', class: 'dropzone' },
    h('p', { class: 'dropzone-text' }, h('strong', {}, 'Drop page images or PDFs here'), h('span', { class: 'muted' }, ' or choose files:')),
    input,
    h('p', { class: 'hint' }, 'PNG, JPEG, WebP, TIFF, BMP or GIF images, one per page, or PDFs, one page per PDF page (a page with a text layer keeps its text). Pages are numbered in the order of the list that opens, by name (p2 before p10); change it before you upload.'),
  );
  const ocrAfter = h('input', { type: 'checkbox', id: 'ocr-after-upload', checked: true });
  // The whole pipeline from one upload: OCR, then guidelines, then finalize as a chain.
  // Off by default: a person usually checks the OCR before extracting from it.
  const processAll = h('input', { type: 'checkbox', id: 'process-everything' });
  // Everything implies OCR; no OCR means no chain.
  processAll.addEventListener('change', () => {
    if (processAll.checked) ocrAfter.checked = true;
  });
  ocrAfter.addEventListener('change', () => {
    if (!ocrAfter.checked) processAll.checked = false;
  });
  const uploads = h('ol', { id: 'uploads', class: 'uploads', 'aria-label': 'Uploads' });
  const panel = h('section', { class: 'card upload-card', 'aria-labelledby': 'upload-title' },
    h('h2', { id: 'upload-title' }, 'Add pages'),
    dropzone,
    h('div', { class: 'upload-options' },
      h('label', { class: 'check', for: 'ocr-after-upload' }, ocrAfter, ' Start OCR after upload'),
      h('label', { class: 'check', for: 'process-everything', title: 'OCR, then extract the guidelines, then finalize them, one after the other' },
        processAll, ' Process everything (OCR → guidelines → finalize)')),
    uploads,
  );

  // Files chosen or dropped wait here, in the order they will be numbered, until sent.
  let staged = [];
  const stagedList = h('ol', { id: 'staged-files', class: 'staged-files', 'aria-label': 'Files to upload, in page order' });
  const stagedSummary = h('p', { class: 'staged-summary' });
  const sendButton = h('button', { type: 'button', id: 'upload-send', class: 'primary' }, 'Upload');
  const clearButton = h('button', { type: 'button', id: 'upload-clear' }, 'Clear');
  const stagedPanel = h('div', { class: 'staged', hidden: true },
    stagedSummary, stagedList, h('div', { class: 'staged-actions' }, sendButton, clearButton));
  uploads.before(stagedPanel);

  function stage(files) {
    if (!files.length) return;
    staged = staged.concat(naturalOrder(files));
    renderStaged();
    sendButton.focus();
  }

  function move(from, to) {
    if (from === to || to < 0 || to >= staged.length) return;
    const [file] = staged.splice(from, 1);
    staged.splice(to, 0, file);
    renderStaged();
  }

  function renderStaged() {
    stagedPanel.hidden = staged.length === 0;
    const bytes = staged.reduce((sum, file) => sum + file.size, 0);
    setText(stagedSummary, `${plural(staged.length, 'file')} (${size(bytes)}), numbered in this order: drag a file to move it.`);
    setText(sendButton, `Upload ${plural(staged.length, 'file')}`);
    stagedList.replaceChildren(...staged.map((file, index) => h('li', {
      class: 'staged-file', draggable: 'true', dataset: { index: String(index), fileName: file.name },
    },
    h('span', { class: 'grip', 'aria-hidden': 'true' }, '⠿'),
    h('span', { class: 'upload-name', title: file.name }, file.name),
    h('span', { class: 'upload-size muted' }, size(file.size)),
    h('button', { type: 'button', class: 'move', dataset: { move: '-1' }, disabled: index === 0, 'aria-label': `Move ${file.name} up` }, '↑'),
    h('button', { type: 'button', class: 'move', dataset: { move: '1' }, disabled: index === staged.length - 1, 'aria-label': `Move ${file.name} down` }, '↓'))));
  }

  const rowOf = (event) => event.target.closest?.('li.staged-file');
  let dragged = null;
  stagedList.addEventListener('click', (event) => {
    const button = event.target.closest('button.move');
    const row = button && rowOf(event);
    if (!row) return;
    const from = Number(row.dataset.index);
    move(from, from + Number(button.dataset.move));
    stagedList.querySelector(`li[data-index="${from + Number(button.dataset.move)}"] button.move[data-move="${button.dataset.move}"]`)?.focus();
  });
  stagedList.addEventListener('dragstart', (event) => {
    const row = rowOf(event);
    if (!row) return;
    dragged = Number(row.dataset.index);
    row.classList.add('dragged');
    if (event.dataTransfer) {
      event.dataTransfer.effectAllowed = 'move';
      event.dataTransfer.setData('text/plain', row.dataset.fileName);
    }
  });
  stagedList.addEventListener('dragover', (event) => {
    if (dragged === null || !rowOf(event)) return;
    event.preventDefault();
    if (event.dataTransfer) event.dataTransfer.dropEffect = 'move';
  });
  stagedList.addEventListener('drop', (event) => {
    const row = rowOf(event);
    if (dragged === null || !row) return;
    event.preventDefault();
    // Onto the upper half of a row: before it; the lower half: after it.
    const box = row.getBoundingClientRect();
    const target = Number(row.dataset.index) + (event.clientY > box.top + box.height / 2 ? 1 : 0);
    const from = dragged;
    dragged = null;
    move(from, target > from ? target - 1 : target);
  });
  stagedList.addEventListener('dragend', () => {
    dragged = null;
    stagedList.querySelector('.dragged')?.classList.remove('dragged');
  });
  sendButton.addEventListener('click', () => {
    const files = staged;
    staged = [];
    renderStaged();
    send(files);
  });
  clearButton.addEventListener('click', () => {
    staged = [];
    renderStaged();
  });

  input.addEventListener('change', () => {
    const files = [...input.files];
    input.value = '';
    stage(files);
  });

  let depth = 0;
  const dragging = (on) => dropzone.classList.toggle('dragging', on);
  dropzone.addEventListener('dragenter', (event) => {
    event.preventDefault();
    depth += 1;
    dragging(true);
  });
  dropzone.addEventListener('dragover', (event) => {
    event.preventDefault();
    if (event.dataTransfer) event.dataTransfer.dropEffect = 'copy';
    dragging(true);
  });
  dropzone.addEventListener('dragleave', () => {
    depth = Math.max(0, depth - 1);
    if (depth === 0) dragging(false);
  });
  dropzone.addEventListener('drop', (event) => {
    event.preventDefault();
    depth = 0;
    dragging(false);
    const files = event.dataTransfer ? [...event.dataTransfer.files] : [];
    stage(files);
  });
  // A file dropped next to the zone must not make the browser leave the dashboard.
  const swallow = (event) => {
    if (event.dataTransfer && [...event.dataTransfer.types].includes('Files')) event.preventDefault();
  };
  scope.listen(window, 'dragover', swallow);
  scope.listen(window, 'drop', swallow);

  /** Sends `files` as pages in this order. */
  async function send(files) {
    if (!files.length) return;
    const ocr = ocrAfter.checked;
    const chain = ocr && processAll.checked;
    const totalBytes = files.reduce((sum, file) => sum + file.size, 0) || 1;
    const rows = files.map((file) => {
      const bar = h('progress', { max: '100', value: '0', 'aria-label': `Upload of ${file.name}` });
      const status = h('span', { class: 'upload-status' }, 'Waiting');
      const row = h('li', { class: 'upload', dataset: { fileName: file.name } },
        h('span', { class: 'upload-name', title: file.name }, file.name),
        h('span', { class: 'upload-size muted' }, size(file.size)),
        bar,
        status,
      );
      return { file, row, bar, status };
    });
    const summary = h('p', { class: 'upload-summary', role: 'status' },
      `Sending ${plural(files.length, 'file')} (${size(totalBytes)})…`);
    const overall = h('progress', { class: 'upload-total', max: '100', value: '0', 'aria-label': `Upload of ${plural(files.length, 'file')}` });
    const toggle = h('summary', { class: 'upload-toggle' }, h('span', { class: 'upload-toggle-text' }, `${plural(files.length, 'file')}`));
    const details = h('details', { class: 'upload-details', open: files.length <= OPEN_WHILE_SENDING },
      toggle,
      h('ul', { class: 'upload-files' }, rows.map((r) => r.row)));
    const batch = h('li', { class: 'upload-batch sending' }, summary, overall, details);
    uploads.prepend(batch);
    while (uploads.children.length > BATCHES_KEPT) uploads.lastElementChild.remove();

    const refused = [];
    const numbers = [];
    let storedFiles = 0;
    let doneBytes = 0;
    let then = [];
    let failure = null;
    let optionsSent = false;
    const runs = batches(rows);
    for (const [at, run] of runs.entries()) {
      // Only the last batch starts OCR (and the chain): the job then reads every page of
      // the drop, where a job per batch would start before the next batches' pages exist.
      const last = at === runs.length - 1;
      let pending = run;
      while (pending.length && !failure) {
        const label = runs.length > 1 ? ` (batch ${at + 1} of ${runs.length})` : '';
        setText(summary, `Sending ${plural(files.length, 'file')} (${size(totalBytes)})${label}…`);
        try {
          const answer = await sendBatch(pending, last && ocr, last && chain, summary, (sent) => {
            overall.value = Math.round(Math.min(1, (doneBytes + sent) / totalBytes) * 100);
          });
          const stored = answer?.upload?.files || [];
          pending.forEach(({ bar, status, row }, index) => {
            bar.value = 100;
            row.classList.add('added');
            const file = stored[index];
            const pages = file ? Array.from({ length: file.pages }, (_, n) => file.first_page + n) : [];
            numbers.push(...pages);
            setText(status, pages.length ? `Pages ${pageRanges(pages)}` : 'Stored');
          });
          storedFiles += pending.length;
          optionsSent ||= last;
          then = (answer?.job?.then || []).map((type) => (type === 'ocr' ? 'OCR' : type));
          if (scope.alive) onUploaded(answer);
          pending = [];
        } catch (error) {
          const reasons = rejections(error, pending);
          if (!reasons.size) {
            failure = error;
            break;
          }
          // The refused files are out; the rest of the batch goes again.
          for (const [item, reason] of reasons) {
            item.row.classList.add('rejected');
            item.bar.value = 0;
            setText(item.status, 'Refused');
            item.row.append(h('span', { class: 'rejection-reason' }, reason.message || reason.reason || reason.code || 'refused'));
            refused.push(item);
          }
          pending = pending.filter((item) => !reasons.has(item));
        }
      }
      if (failure) break;
      doneBytes += run.reduce((sum, { file }) => sum + file.size, 0);
    }
    if (failure) {
      for (const { row, bar, status } of rows) {
        if (row.classList.contains('added') || row.classList.contains('rejected')) continue;
        row.classList.add('not-added');
        bar.value = 0;
        setText(status, 'Not added');
      }
    }

    overall.remove();
    const parts = [];
    if (storedFiles) {
      let text = `Stored ${plural(storedFiles, 'file')}: ${plural(numbers.length, 'page')}`;
      if (numbers.length) text += ` (${numbers.length === 1 ? 'p.' : 'pp.'} ${pageRanges(numbers)})`;
      text += ' · making pages';
      if (then.length) text += `, then ${then.join(' → ')}`;
      else if (ocr && !optionsSent) text += '; OCR not started (the last batch was not stored): use Run OCR';
      parts.push(text);
    }
    if (refused.length) {
      parts.push(`${plural(refused.length, 'file')} refused, not added (${refused.slice(0, 3).map(({ file }) => file.name).join(', ')}${refused.length > 3 ? ', …' : ''})`);
    }
    if (failure) {
      const left = files.length - storedFiles - refused.length;
      parts.push(`${plural(left, 'file')} not added: ${errorText(failure)}`);
    }
    if (!storedFiles && !failure) parts.push('nothing was added');
    setText(summary, `${parts.join('. ')}.`);
    const clean = !failure && !refused.length;
    summary.classList.add(clean ? 'ok' : storedFiles ? 'partly' : 'error');
    if (!clean) summary.setAttribute('role', 'alert');
    // The refused files first, so their reasons show without scrolling through the rest.
    const list = details.querySelector('.upload-files');
    for (const { row } of refused.slice().reverse()) list.prepend(row);
    // A stored drop is one line; its files stay one click away. One with refused or
    // unsent files stays open, showing why.
    details.open = !clean;
    batch.classList.replace('sending', clean ? 'done' : storedFiles ? 'partly' : 'failed');
  }

  /** One batch as a multipart request; `onSent(bytes)` as its bytes go out. */
  function sendBatch(items, ocr, chain, summary, onSent) {
    const form = new FormData();
    for (const { file } of items) form.append('files', file, file.name);
    const bytes = items.reduce((sum, { file }) => sum + file.size, 0);
    const onProgress = (loaded, total) => {
      const sent = total ? (loaded / total) * bytes : 0;
      let before = 0;
      for (const { file, bar, status } of items) {
        const share = file.size ? Math.min(1, Math.max(0, (sent - before) / file.size)) : sent >= before ? 1 : 0;
        before += file.size;
        bar.value = Math.round(share * 100);
        setText(status, share >= 1 ? 'Sent' : share > 0 ? `Sending ${Math.round(share * 100)}%` : 'Waiting');
      }
      onSent(sent);
      if (total && loaded >= total) setText(summary, `Checking ${plural(items.length, 'file')}…`);
    };
    const path = `/v1/books/${seg(bookId)}/pages?ocr=${ocr}${chain ? '&then=guidelines,finalize' : ''}`;
    // One key per batch: however often it is sent again, its pages are stored once.
    return sendWhenIngestEnds(path, form, onProgress, summary, newKey());
  }

  /** The items of a batch the server refused, with its reason each (by index, else name). */
  function rejections(error, items) {
    const rejected = (error.details && Array.isArray(error.details.rejected) && error.details.rejected) || [];
    const reasons = new Map();
    items.forEach((item, index) => {
      const reason = rejected.find((entry) => entry.index === index)
        || rejected.find((entry) => !Number.isInteger(entry.index) && (entry.name ?? entry.file) === item.file.name);
      if (reason) reasons.set(item, reason);
    });
    return reasons;
  }

  /**
   * Sends the upload with its idempotency `key`; while another upload's pages of this
   * book are being made (409 `job_active` naming an `ingest` job) it waits for that job to
   * end and sends again. A connection lost on the way, or the same batch still running
   * on the server (409 `idempotency_in_flight`), is sent again with the same key, a few
   * times: the server answers a repeat with the first answer, so no page is stored twice.
   */
  async function sendWhenIngestEnds(path, form, onProgress, summary, key) {
    let retries = 0;
    for (;;) {
      try {
        return await upload(path, form, onProgress, { 'Idempotency-Key': key });
      } catch (error) {
        if (!scope.alive) throw error;
        if ((error.code === 'network' || error.code === 'idempotency_in_flight') && retries < 5) {
          retries += 1;
          setText(summary, error.code === 'network' ? 'Connection lost: sending again…' : 'The server is still storing this batch: asking again…');
          await new Promise((resolve) => setTimeout(resolve, 1000 * retries));
          continue;
        }
        const job = error.code === 'job_active' ? error.details?.job : null;
        if (!job || job.type !== 'ingest') throw error;
        setText(summary, 'Waiting for the pages of the previous upload to be made…');
        for (;;) {
          await new Promise((resolve) => setTimeout(resolve, 1000));
          if (!scope.alive) throw error;
          const current = await getJson(`/v1/jobs/${seg(job.id)}`, { signal: scope.signal });
          if (!['pending', 'running'].includes(current.status)) break;
        }
        setText(summary, 'Sending again…');
      }
    }
  }

  return panel;
}
