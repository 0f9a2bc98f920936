// The books list (`/`): create a book, and every book with its pages, OCR and guidelines
// state and its latest job. Refreshes every few seconds while open, in place.

import { getJson, postJson, seg } from './api.js';
import { navigate, reload } from './router.js';
import {
  h, reconcile, setAttr, setText, statusBadge, updateStatusBadge, every, plural,
  jobTypeLabel, formatAgo, isActive, errorText,
} from './ui.js';

const REFRESH_MS = 5000;
const RECENT_JOBS = 100;
const LATEST_CONCURRENCY = 4;

export function booksView(container, _params, scope) {
  document.title = 'Books · Folio';

  const titleInput = h('input', {
    id: 'new-book-title', name: 'title', required: true, maxlength: 500, autocomplete: 'off',
    placeholder: 'e.g. Fractions for grade 5',
  });
  const idInput = h('input', {
    id: 'new-book-id', name: 'id', maxlength: 64, autocomplete: 'off', spellcheck: 'false',
    pattern: '[a-z0-9][a-z0-9_\\-]{0,63}', placeholder: 'made from the title',
    'aria-describedby': 'new-book-id-hint',
  });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Create book');
  const formError = h('p', { id: 'create-book-error', class: 'error', role: 'alert', hidden: true });
  const form = h('form', { id: 'create-book', class: 'card create-book', on: { submit: onCreate } },
    h('h2', {}, 'New book'),
    h('div', { class: 'fields' },
      h('div', { class: 'field field-title' }, h('label', { for: 'new-book-title' }, 'Title'), titleInput),
      h('div', { class: 'field field-id' },
        h('label', { for: 'new-book-id' }, 'Id ', h('span', { class: 'muted' }, '(optional)')),
        idInput,
        h('span', { id: 'new-book-id-hint', class: 'hint' }, 'Lowercase letters, digits, - and _'),
      ),
      h('div', { class: 'field field-submit' }, submit),
    ),
    formError,
  );

  const list = h('ul', { id: 'books', class: 'book-list', 'aria-busy': 'true', 'aria-label': 'Books' },
    h('li', { class: 'empty' }, 'Loading books…'));
  const status = h('p', { class: 'error', role: 'alert', hidden: true });
  const count = h('span', { class: 'muted count-note' });

  container.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Books'), count),
    form,
    status,
    list,
  );

  async function onCreate(event) {
    event.preventDefault();
    formError.hidden = true;
    const title = titleInput.value.trim();
    if (!title) {
      titleInput.focus();
      return;
    }
    const body = { title };
    const id = idInput.value.trim();
    if (id) body.id = id;
    submit.disabled = true;
    try {
      const book = await postJson('/v1/books', body, { signal: scope.signal });
      navigate(`/books/${seg(book.book_id)}`);
    } catch (error) {
      if (error.name === 'AbortError') return;
      formError.textContent = errorText(error);
      formError.hidden = false;
      (error.code === 'book_exists' || /id/i.test(error.message) ? idInput : titleInput).focus();
    } finally {
      submit.disabled = false;
    }
  }

  // Latest job per book: the newest of every book's jobs (one request) when the server
  // lists them, else one `jobs/latest` per book; answers of the latter are kept, since a
  // newer job of that book would be among the newest jobs.
  const latestByBook = new Map();
  let jobsListMissing = false;

  async function latestJobs(books) {
    const covered = new Set();
    if (!jobsListMissing) {
      try {
        const answer = await getJson(`/v1/jobs?limit=${RECENT_JOBS}`, { signal: scope.signal });
        for (const job of answer.jobs || []) {
          if (covered.has(job.book_id)) continue;
          covered.add(job.book_id);
          latestByBook.set(job.book_id, job);
        }
      } catch (error) {
        if (error.name === 'AbortError') throw error;
        if (error.status === 404 || error.status === 405) jobsListMissing = true;
      }
    }
    const missing = books
      .map((book) => book.book_id)
      .filter((id) => !covered.has(id) && (jobsListMissing || !latestByBook.has(id) || isActive(latestByBook.get(id)?.status)));
    let next = 0;
    const worker = async () => {
      while (next < missing.length && scope.alive) {
        const id = missing[next++];
        try {
          latestByBook.set(id, await getJson(`/v1/books/${seg(id)}/jobs/latest`, { signal: scope.signal }));
        } catch (error) {
          if (error.name === 'AbortError') return;
        }
      }
    };
    await Promise.all(Array.from({ length: LATEST_CONCURRENCY }, worker));
  }

  let books = [];

  async function refresh() {
    try {
      const answer = await getJson('/v1/books', { signal: scope.signal });
      books = (answer.books || []).slice().sort((a, b) => String(b.updated_at).localeCompare(String(a.updated_at)));
      status.hidden = true;
    } catch (error) {
      if (error.name === 'AbortError') return;
      status.replaceChildren(errorText(error), ' ', h('button', { type: 'button', on: { click: reload } }, 'Try again'));
      status.hidden = false;
      list.removeAttribute('aria-busy');
      return;
    }
    render();
    try {
      await latestJobs(books);
    } catch (error) {
      if (error.name === 'AbortError') return;
    }
    render();
  }

  function render() {
    list.removeAttribute('aria-busy');
    setText(count, books.length ? plural(books.length, 'book') : '');
    reconcile(list, books, (book) => book.book_id, createRow, updateRow);
    if (!books.length) {
      list.append(h('li', { class: 'empty' },
        h('strong', {}, 'No books yet.'), ' Create one above, then drop its page images on it.'));
    }
  }

  function updateRow(item, book) {
    const row = item.firstElementChild;
    setAttr(row, 'href', `/books/${seg(book.book_id)}`);
    setAttr(row, 'data-book-id', book.book_id);
    const title = row.querySelector('.book-title');
    setText(title, book.title);
    setAttr(title, 'title', book.title);
    setText(row.querySelector('.book-id'), book.book_id);
    // No count for an empty book: its OCR cell says "No pages yet".
    setText(row.querySelector('.book-pages'), book.pages ? plural(book.pages, 'page') : '');

    const failed = book.pages_ocr_failed || 0;
    const ocr = row.querySelector('.book-ocr');
    const latest = latestByBook.get(book.book_id);
    const ocrActive = latest && latest.type === 'ocr' && isActive(latest.status);
    let ocrStatus = 'pending';
    if (book.pages && book.pages_ocr_done === book.pages) ocrStatus = 'done';
    else if (ocrActive) ocrStatus = 'running';
    else if (failed) ocrStatus = 'failed';
    const ocrText = book.pages ? `${book.pages_ocr_done}/${book.pages} OCR done` : 'No pages yet';
    updateStatusBadge(ocr.querySelector('.status'), book.pages ? ocrStatus : 'none', ocrText);
    const failedNote = ocr.querySelector('.book-ocr-failed');
    setText(failedNote, failed ? `${failed} failed` : '');
    failedNote.hidden = !failed;

    const guidelines = book.guidelines_status || 'none';
    const guidelinesText = {
      none: 'No guidelines',
      extracting: `Guidelines: ${book.guidelines_pages_done || 0}/${book.pages} pages`,
      extracted: 'Guidelines extracted',
      final: 'Guidelines final',
    }[guidelines] || guidelines;
    updateStatusBadge(row.querySelector('.book-guidelines .status'), guidelines, guidelinesText);

    const jobCell = row.querySelector('.book-job');
    if (latest) {
      jobCell.hidden = false;
      updateStatusBadge(jobCell.querySelector('.status'), latest.status, `${jobTypeLabel(latest.type)} ${latest.status}`);
      setText(jobCell.querySelector('.book-job-when'), formatAgo(latest.finished_at || latest.started_at || latest.created_at));
    } else {
      updateStatusBadge(jobCell.querySelector('.status'), 'none', latestByBook.has(book.book_id) ? 'No jobs yet' : '…');
      setText(jobCell.querySelector('.book-job-when'), '');
    }
  }

  function createRow() {
    return h('li', {},
      h('a', { class: 'book-row' },
        h('span', { class: 'book-cell-main' },
          h('span', { class: 'book-title' }),
          h('span', { class: 'book-id' }),
        ),
        h('span', { class: 'book-pages' }),
        h('span', { class: 'book-ocr' }, statusBadge('pending'), h('span', { class: 'book-ocr-failed', hidden: true })),
        h('span', { class: 'book-guidelines' }, statusBadge('none')),
        h('span', { class: 'book-job' }, statusBadge('none', '…'), h('span', { class: 'book-job-when muted' })),
      ),
    );
  }

  every(scope, REFRESH_MS, refresh)();
}
