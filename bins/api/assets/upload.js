// Bulk upload of pages: drag-and-drop of many files (or the file picker) onto the book,
// one multipart request per batch with a progress per file, and the server's reasons
// per rejected file (a batch is all or nothing).
//
// Each batch is one line once it is stored ("Added 24 pages · OCR started"), its files
// behind a disclosure, so the page grid stays near the top; a rejected batch stays open
// with each file's reason.

import { getJson, upload, seg } from './api.js';
import { h, setText, plural, pageRanges, errorText } from './ui.js';

/** What the server takes (its rejection lists png, jpeg, webp, tiff, bmp, gif): no PDF yet. */
const ACCEPT = 'image/png,image/jpeg,image/webp,image/tiff,image/bmp,image/gif,application/pdf,.png,.jpg,.jpeg,.webp,.tif,.tiff,.bmp,.gif,.pdf';
/** A batch of at most this many files shows its files while it is sent. */
const OPEN_WHILE_SENDING = 4;
/** Batches kept in the log. */
const BATCHES_KEPT = 5;

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
    h('p', { class: 'hint' }, 'PNG, JPEG, WebP, TIFF, BMP or GIF images, one per page, or PDFs, one page per PDF page (a page with a text layer keeps its text). Pages are numbered in the order the files are given.'),
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

  input.addEventListener('change', () => {
    const files = [...input.files];
    input.value = '';
    send(files);
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
    send(files);
  });
  // A file dropped next to the zone must not make the browser leave the dashboard.
  const swallow = (event) => {
    if (event.dataTransfer && [...event.dataTransfer.types].includes('Files')) event.preventDefault();
  };
  scope.listen(window, 'dragover', swallow);
  scope.listen(window, 'drop', swallow);

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

    const form = new FormData();
    for (const file of files) form.append('files', file, file.name);
    const onProgress = (loaded, total) => {
      const sent = total ? (loaded / total) * totalBytes : 0;
      let before = 0;
      for (const { file, bar, status } of rows) {
        const share = file.size ? Math.min(1, Math.max(0, (sent - before) / file.size)) : sent >= before ? 1 : 0;
        before += file.size;
        bar.value = Math.round(share * 100);
        setText(status, share >= 1 ? 'Sent' : share > 0 ? `Sending ${Math.round(share * 100)}%` : 'Waiting');
      }
      overall.value = Math.round(Math.min(1, sent / totalBytes) * 100);
      if (total && loaded >= total) setText(summary, `Checking ${plural(files.length, 'file')}…`);
    };
    try {
      const answer = await sendWhenIngestEnds(`/v1/books/${seg(bookId)}/pages?ocr=${ocr}${chain ? '&then=guidelines,finalize' : ''}`, form, onProgress, summary);
      const stored = answer?.upload?.files || [];
      const pages = stored.reduce((total, file) => total + (file.pages || 0), 0);
      rows.forEach(({ bar, status, row }, index) => {
        bar.value = 100;
        row.classList.add('added');
        const file = stored[index];
        setText(status, file ? `Pages ${pageRanges(Array.from({ length: file.pages }, (_, n) => file.first_page + n))}` : 'Stored');
      });
      const numbers = stored.flatMap((file) => Array.from({ length: file.pages }, (_, n) => file.first_page + n));
      let text = `Stored ${plural(stored.length, 'file')}: ${plural(pages, 'page')}`;
      if (numbers.length) text += ` (${numbers.length === 1 ? 'p.' : 'pp.'} ${pageRanges(numbers)})`;
      text += ' · making pages';
      const then = (answer?.job?.then || []).map((type) => (type === 'ocr' ? 'OCR' : type));
      if (then.length) text += `, then ${then.join(' → ')}`;
      setText(summary, `${text}.`);
      summary.classList.add('ok');
      // A stored batch is one line; its files stay one click away.
      overall.remove();
      details.open = false;
      batch.classList.replace('sending', 'done');
      if (scope.alive) onUploaded(answer);
    } catch (error) {
      const rejected = (error.details && Array.isArray(error.details.rejected) && error.details.rejected) || [];
      const byIndex = new Map();
      for (const file of rejected) {
        if (Number.isInteger(file.index)) byIndex.set(file.index, file);
      }
      rows.forEach(({ bar, status, row, file }, index) => {
        const reason = byIndex.get(index) || rejected.find((entry) => !Number.isInteger(entry.index) && (entry.name ?? entry.file) === file.name);
        if (reason) {
          row.classList.add('rejected');
          setText(status, 'Rejected');
          row.append(h('span', { class: 'rejection-reason' }, reason.message || reason.reason || reason.code || 'rejected'));
        } else {
          row.classList.add('not-added');
          setText(status, 'Not added');
        }
        bar.value = 0;
      });
      overall.remove();
      details.open = true;
      batch.classList.replace('sending', 'failed');
      summary.classList.add('error');
      summary.setAttribute('role', 'alert');
      if (rejected.length) {
        setText(summary, `${rejected.length} of ${plural(files.length, 'file')} rejected; nothing was added. Fix or remove ${rejected.length === 1 ? 'it' : 'them'} and upload the batch again.`);
      } else {
        setText(summary, `Nothing was added: ${errorText(error)}`);
      }
    }
  }

  /**
   * Sends the upload; while another upload's pages of this book are being made (409
   * `job_active` naming an `ingest` job) it waits for that job to end and sends again.
   */
  async function sendWhenIngestEnds(path, form, onProgress, summary) {
    for (;;) {
      try {
        return await upload(path, form, onProgress);
      } catch (error) {
        const job = error.code === 'job_active' ? error.details?.job : null;
        if (!job || job.type !== 'ingest' || !scope.alive) throw error;
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
