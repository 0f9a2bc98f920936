// The page grid of a book and the page viewer.
//
// Tiles are made once per page and then updated in place (attributes and text of the
// tiles that changed), so a 300-page book refreshing once a second stays cheap. A tile
// shows the page's preview (a JPEG of a few KB; the full image only for pages stored
// before previews existed), and the viewer alone loads full images. Images need the
// bearer header: they are fetched as blobs through api.js when a tile comes near the
// viewport (IntersectionObserver), shown through object URLs, and the URLs are revoked
// when the view goes.

import { getBlob, request, seg } from './api.js';
import { h, setAttr, setText, statusBadge, updateStatusBadge, plural, errorText } from './ui.js';

// A browser's connections to one host over HTTP/1.1.
const IMAGE_CONCURRENCY = 6;
const NO_PAGES = 'No pages yet. Drop page images on the upload area to add them.';
const FILTERS = ['all', 'pending', 'running', 'done', 'failed', 'review'];

/** A filter's label with its count. */
function filterLabel(value, count) {
  if (value === 'all') return `All pages (${count})`;
  if (value === 'review') return `Needs review (${count})`;
  return `${value[0].toUpperCase()}${value.slice(1)} (${count})`;
}

/**
 * Whether a done page should be looked at (its OCR confidence is under the worker's
 * threshold, or no word was found), and the confidence to show, rounded.
 */
export function reviewOf(page, status) {
  if (status !== 'done' || !page.ocr?.needs_review) return null;
  const confidence = page.ocr.confidence;
  return { confidence: typeof confidence === 'number' ? Math.round(confidence) : null };
}

/** The OCR status of a page as the grid shows it: `running` for the page an active OCR job works on. */
export function tileStatus(page, runningPages) {
  const status = page.ocr?.status || 'pending';
  if (status !== 'done' && runningPages.has(page.page)) return 'running';
  return status;
}

/**
 * A page's OCR error as recorded in the manifest (`code: message`), split for display:
 * `{code, message}`, `code` null when the text has no code.
 */
export function pageError(text) {
  const value = String(text || '').trim();
  const match = /^([a-z][a-z0-9_]*):\s*([\s\S]*)$/.exec(value);
  if (match) return { code: match[1], message: match[2] };
  return { code: null, message: value };
}

/**
 * The grid. `actions.retry(pageNumber, button)` retries a failed page. Returns
 * `{element, update(book, ocrJob)}`.
 */
export function pageGrid(bookId, scope, actions) {
  const grid = h('div', { id: 'pages', class: 'page-grid' });
  const summary = h('p', { class: 'pages-summary muted', 'aria-live': 'polite' });
  const filter = h('select', { id: 'page-filter', 'aria-label': 'Show pages' },
    FILTERS.map((value) => h('option', { value }, value === 'all' ? 'All pages' : value === 'review' ? 'Needs review only' : `${value[0].toUpperCase()}${value.slice(1)} only`)));
  const empty = h('p', { class: 'empty', hidden: true }, NO_PAGES);
  const filteredEmpty = h('p', { class: 'empty', hidden: true }, 'No page has this status.');
  const element = h('section', { class: 'card pages-card', 'aria-labelledby': 'pages-title' },
    h('div', { class: 'section-head' }, h('h2', { id: 'pages-title' }, 'Pages'), summary, filter),
    empty,
    filteredEmpty,
    grid,
  );

  const tiles = new Map();
  const urls = new Map();
  // The tiles whose object URL is the full image (no preview), which the viewer can reuse.
  const fullImages = new Set();
  let book = null;
  const viewer = pageViewer(bookId, scope, (number) => (fullImages.has(number) ? urls.get(number) : undefined), () => book);
  element.append(viewer.dialog);

  // Lazy images: a queue of tiles that came into view, loaded a few at a time.
  const queue = [];
  let loading = 0;
  const observer = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      if (!entry.isIntersecting) continue;
      observer.unobserve(entry.target);
      queue.push(entry.target);
    }
    pump();
  }, { rootMargin: '300px 0px' });
  scope.onCleanup(() => {
    observer.disconnect();
    for (const url of urls.values()) URL.revokeObjectURL(url);
    urls.clear();
  });

  function pump() {
    while (loading < IMAGE_CONCURRENCY && queue.length && scope.alive) {
      const tile = queue.shift();
      const number = Number(tile.dataset.page);
      if (urls.has(number)) continue;
      loading += 1;
      const full = tile.dataset.preview !== 'true';
      getBlob(`/v1/books/${seg(bookId)}/pages/${number}/${full ? 'image' : 'thumbnail'}`, { signal: scope.signal })
        .then((blob) => {
          if (!scope.alive) return;
          const url = URL.createObjectURL(blob);
          const previous = urls.get(number);
          if (previous) URL.revokeObjectURL(previous);
          urls.set(number, url);
          if (full) fullImages.add(number);
          const img = tile.querySelector('img');
          img.src = url;
          tile.classList.add('has-image');
        })
        .catch((error) => {
          if (error.name !== 'AbortError') tile.classList.add('image-failed');
        })
        .finally(() => {
          loading -= 1;
          pump();
        });
    }
  }

  grid.addEventListener('click', (event) => {
    const retry = event.target.closest('button.retry-page');
    const tile = event.target.closest('.page-tile');
    if (!tile) return;
    if (retry) {
      event.stopPropagation();
      actions.retry(Number(tile.dataset.page), retry);
      return;
    }
    viewer.open(Number(tile.dataset.page));
  });
  grid.addEventListener('keydown', (event) => {
    const tile = event.target;
    if (!tile.classList || !tile.classList.contains('page-tile')) return;
    if (event.key === 'Enter' || event.key === ' ') {
      event.preventDefault();
      viewer.open(Number(tile.dataset.page));
    }
  });
  filter.addEventListener('change', applyFilter);

  function createTile(page) {
    const img = h('img', { alt: '', decoding: 'async', width: page.width || 300, height: page.height || 400 });
    const tile = h('div', {
      class: 'page-tile', role: 'button', tabindex: '0',
      dataset: { page: page.page, ocrStatus: 'pending', preview: page.thumbnail_url ? 'true' : 'false' },
    },
      h('div', { class: 'thumb' }, img),
      h('div', { class: 'tile-foot' },
        h('span', { class: 'page-number' }, `p. ${page.page}`),
        statusBadge('pending'),
      ),
    );
    observer.observe(tile);
    return tile;
  }

  function updateTile(tile, page, status) {
    // The whole error (code and message) is in the tile's title and label and in the
    // viewer; the tile itself says it in two words, which fit any tile width.
    const error = status === 'failed' ? page.ocr?.error || 'no reason recorded' : null;
    const review = reviewOf(page, status);
    const reviewText = review && (review.confidence === null
      ? 'needs review: no words found'
      : `needs review: OCR confidence ${review.confidence} %`);
    setAttr(tile, 'data-ocr-status', status);
    setAttr(tile, 'data-needs-review', review ? 'true' : null);
    setAttr(tile, 'aria-label', `Page ${page.page}: OCR ${status}${error ? `: ${error}` : ''}${reviewText ? `, ${reviewText}` : ''}`);
    const titleLines = [page.source_name, error && `OCR failed: ${error}`, reviewText].filter(Boolean);
    setAttr(tile, 'title', titleLines.length ? titleLines.join('\n') : null);
    const badge = tile.querySelector('.status');
    if (badge.dataset.status !== status) updateStatusBadge(badge, status);
    // A page to look at carries a small badge beside its status; its text is the title.
    let reviewBadge = tile.querySelector('.review-badge');
    if (review && !reviewBadge) {
      reviewBadge = h('span', { class: 'review-badge', 'aria-hidden': 'true' }, 'Review');
      tile.querySelector('.page-number').after(reviewBadge);
    } else if (!review && reviewBadge) {
      reviewBadge.remove();
    }
    if (reviewBadge) setAttr(reviewBadge, 'title', reviewText);
    // A failed page's note and retry sit over the bottom of its thumbnail, so every
    // tile keeps the same size.
    const failure = tile.querySelector('.tile-failure');
    if (status === 'failed') {
      if (!failure) {
        const errorLine = h('p', { class: 'page-error' }, 'OCR failed');
        const retry = h('button', { type: 'button', class: 'retry-page', 'aria-label': `Retry OCR of page ${page.page}` }, 'Retry');
        tile.querySelector('.thumb').append(h('div', { class: 'tile-failure' }, errorLine, retry));
      }
    } else if (failure) {
      failure.remove();
    }
  }

  function applyFilter() {
    const wanted = filter.value;
    let shown = 0;
    for (const tile of tiles.values()) {
      const visible = wanted === 'all'
        || (wanted === 'review' ? tile.dataset.needsReview === 'true' : tile.dataset.ocrStatus === wanted);
      if (tile.hidden === visible) tile.hidden = !visible;
      if (visible) shown += 1;
    }
    filteredEmpty.hidden = shown > 0 || tiles.size === 0;
  }

  /**
   * Renders `nextBook`'s pages; `ocrJob` is the book's active OCR job, if any, and
   * `making` whether an upload's ingest is making pages.
   */
  function update(nextBook, ocrJob, making = false) {
    book = nextBook;
    const pages = book.pages || [];
    const running = new Set();
    if (ocrJob && ocrJob.status === 'running') {
      const item = Number.parseInt(ocrJob.progress?.current_item, 10);
      if (Number.isFinite(item)) running.add(item);
    }
    const counts = { pending: 0, running: 0, done: 0, failed: 0, review: 0 };
    const seen = new Set();
    const fragment = document.createDocumentFragment();
    for (const page of pages) {
      const status = tileStatus(page, running);
      counts[status] = (counts[status] || 0) + 1;
      if (reviewOf(page, status)) counts.review += 1;
      seen.add(page.page);
      let tile = tiles.get(page.page);
      if (!tile) {
        tile = createTile(page);
        tiles.set(page.page, tile);
        fragment.append(tile);
      }
      updateTile(tile, page, status);
    }
    if (fragment.childNodes.length) grid.append(fragment);
    for (const [number, tile] of tiles) {
      if (!seen.has(number)) {
        tile.remove();
        tiles.delete(number);
      }
    }
    empty.hidden = pages.length > 0;
    setText(empty, making
      ? 'Making the uploaded pages… they appear here one by one.'
      : NO_PAGES);
    filter.hidden = pages.length === 0;
    const parts = [plural(pages.length, 'page')];
    if (pages.length) {
      parts.push(`${counts.done} OCR done`);
      if (counts.running) parts.push(`${counts.running} running`);
      if (counts.pending) parts.push(`${counts.pending} pending`);
      if (counts.failed) parts.push(`${counts.failed} failed`);
      if (counts.review) parts.push(`${counts.review} to review`);
    }
    setText(summary, parts.join(' · '));
    for (const option of filter.options) {
      const value = option.value;
      const label = filterLabel(value, value === 'all' ? pages.length : counts[value] || 0);
      if (option.textContent !== label) option.textContent = label;
    }
    applyFilter();
    viewer.refresh();
  }

  return { element, update, open: (number) => viewer.open(number) };
}

/** What OCR found of a page scanned turned (`ocr.rotation`, degrees counter-clockwise). */
function turnedText(rotation) {
  const turned = { 90: 'a quarter turn to the left', 180: 'upside down', 270: 'a quarter turn to the right' }[rotation];
  return turned ? `scanned ${turned}, read upright` : '';
}

/** The page viewer: the image beside its OCR text, and the page's guidelines. */
function pageViewer(bookId, scope, cachedImage, currentBook) {
  const title = h('h2', { id: 'page-viewer-title' });
  const badge = statusBadge('pending');
  const source = h('span', { class: 'viewer-source muted' });
  const prev = h('button', { type: 'button', id: 'page-prev', 'aria-label': 'Previous page' }, '← Prev');
  const next = h('button', { type: 'button', id: 'page-next', 'aria-label': 'Next page' }, 'Next →');
  const close = h('button', { type: 'button', id: 'page-viewer-close', class: 'icon-button', 'aria-label': 'Close' }, '✕');
  const img = h('img', { id: 'page-image', alt: '' });
  const imageNote = h('p', { class: 'muted viewer-image-note' });
  const text = h('pre', { id: 'page-text', class: 'page-text', tabindex: '0' });
  const error = h('p', { class: 'viewer-error error', hidden: true });
  const guidelines = h('div', { id: 'page-guidelines', class: 'page-guidelines' });
  const dialog = h('dialog', { id: 'page-viewer', class: 'viewer', 'aria-labelledby': 'page-viewer-title' },
    h('div', { class: 'viewer-head' },
      h('div', { class: 'viewer-title' }, title, badge, source),
      h('div', { class: 'viewer-nav' }, prev, next, close),
    ),
    h('div', { class: 'viewer-body' },
      h('figure', { class: 'viewer-image' }, img, imageNote),
      h('div', { class: 'viewer-side' },
        h('h3', {}, 'Recognized text'), error, text,
        h('h3', {}, 'Guidelines of this page'), guidelines,
      ),
    ),
  );

  let number = null;
  let generation = 0;
  let ownUrl = null;

  function releaseOwnUrl() {
    if (ownUrl) URL.revokeObjectURL(ownUrl);
    ownUrl = null;
  }

  close.addEventListener('click', () => dialog.close());
  dialog.addEventListener('close', () => {
    generation += 1;
    number = null;
    img.removeAttribute('src');
    releaseOwnUrl();
  });
  dialog.addEventListener('click', (event) => {
    if (event.target === dialog) dialog.close();
  });
  prev.addEventListener('click', () => step(-1));
  next.addEventListener('click', () => step(1));
  dialog.addEventListener('keydown', (event) => {
    if (event.target instanceof HTMLInputElement || event.target instanceof HTMLSelectElement) return;
    if (event.key === 'ArrowLeft') step(-1);
    else if (event.key === 'ArrowRight') step(1);
  });
  scope.onCleanup(() => {
    if (dialog.open) dialog.close();
    releaseOwnUrl();
  });

  function neighbours() {
    const pages = currentBook()?.pages || [];
    const index = pages.findIndex((page) => page.page === number);
    return { pages, index };
  }

  function step(delta) {
    const { pages, index } = neighbours();
    const target = pages[index + delta];
    if (target) open(target.page);
  }

  function pageOf(pageNumber) {
    return (currentBook()?.pages || []).find((page) => page.page === pageNumber);
  }

  function header(page) {
    setText(title, `Page ${page.page}`);
    const status = page.ocr?.status || 'pending';
    updateStatusBadge(badge, status, `OCR ${status}`);
    setText(source, [page.source_name, turnedText(page.ocr?.rotation)].filter(Boolean).join(' · '));
    // An upside-down scan is shown upright, like its text (a quarter turn would not fit).
    img.classList.toggle('upright-180', page.ocr?.rotation === 180);
    setAttr(source, 'title', page.source_name || null);
    const { pages, index } = neighbours();
    prev.disabled = index <= 0;
    next.disabled = index < 0 || index >= pages.length - 1;
    if (status === 'failed') {
      const text = page.ocr?.error || '';
      if (error.dataset.text !== text) {
        const { code, message } = pageError(text);
        error.replaceChildren(
          h('strong', {}, 'OCR failed'), code || message ? ': ' : '',
          code ? h('code', { class: 'error-code' }, code) : null, code && message ? ' ' : '', message);
        error.dataset.text = text;
      }
      error.hidden = false;
    } else {
      error.hidden = true;
    }
  }

  async function open(pageNumber) {
    const page = pageOf(pageNumber);
    if (!page) return;
    number = pageNumber;
    const mine = ++generation;
    header(page);
    img.setAttribute('alt', `Page ${page.page}`);
    text.textContent = '';
    guidelines.replaceChildren();
    if (!dialog.open) dialog.showModal();

    releaseOwnUrl();
    const cached = cachedImage(pageNumber);
    if (cached) {
      img.src = cached;
      setText(imageNote, '');
    } else {
      img.removeAttribute('src');
      setText(imageNote, 'Loading image…');
      getBlob(`/v1/books/${seg(bookId)}/pages/${pageNumber}/image`, { signal: scope.signal })
        .then((blob) => {
          if (mine !== generation) return;
          ownUrl = URL.createObjectURL(blob);
          img.src = ownUrl;
          setText(imageNote, '');
        })
        .catch((failure) => {
          if (mine === generation && failure.name !== 'AbortError') setText(imageNote, `The image could not be loaded: ${errorText(failure)}`);
        });
    }
    loadText(page, mine);
    loadGuidelines(page, mine);
  }

  async function loadText(page, mine) {
    text.classList.add('placeholder');
    if (page.ocr?.status !== 'done') {
      text.textContent = 'This page is not recognized yet.';
      return;
    }
    text.textContent = 'Loading…';
    try {
      const response = await request(`/v1/books/${seg(bookId)}/pages/${page.page}/text`, { signal: scope.signal, accept: [404] });
      if (mine !== generation) return;
      if (response.status === 404) {
        text.textContent = 'This page is not recognized yet.';
        return;
      }
      const body = await response.text();
      if (mine !== generation) return;
      text.textContent = body.trim() ? body : '(no text on this page)';
      text.classList.toggle('placeholder', !body.trim());
    } catch (failure) {
      if (mine === generation && failure.name !== 'AbortError') text.textContent = `The text could not be loaded: ${errorText(failure)}`;
    }
  }

  async function loadGuidelines(page, mine) {
    const book = currentBook();
    const status = book?.guidelines?.status || 'none';
    const index = (book?.pages || []).findIndex((candidate) => candidate.page === page.page);
    const extracted = status === 'final' || status === 'extracted' || index < (book?.guidelines?.pages_done || 0);
    if (!extracted) {
      guidelines.replaceChildren(h('p', { class: 'muted' }, 'Not extracted yet.'));
      return;
    }
    guidelines.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
    try {
      const response = await request(`/v1/books/${seg(bookId)}/pages/${page.page}/guidelines`, { signal: scope.signal, accept: [404] });
      if (mine !== generation) return;
      if (response.status === 404) {
        guidelines.replaceChildren(h('p', { class: 'muted' }, 'Not extracted yet.'));
        return;
      }
      const pageGuidelines = await response.json();
      if (mine !== generation) return;
      guidelines.replaceChildren(...renderPageTopics(pageGuidelines));
    } catch (failure) {
      if (mine === generation && failure.name !== 'AbortError') guidelines.replaceChildren(h('p', { class: 'error' }, errorText(failure)));
    }
  }

  /** Keeps the open page's header in step with the manifest. */
  function refresh() {
    if (number === null || !dialog.open) return;
    const page = pageOf(number);
    if (page) header(page);
  }

  return { dialog, open, refresh };
}

/** The topics of one page's guidelines as elements (text only through text nodes). */
export function renderPageTopics(pageGuidelines) {
  const topics = pageGuidelines?.topics || [];
  if (!topics.length) return [h('p', { class: 'muted' }, 'No guidelines on this page.')];
  return topics.map((topic) => h('div', { class: 'page-topic' },
    h('h4', {}, topic.title),
    h('ul', { class: 'guideline-list' }, (topic.guidelines || []).map((guideline) => h('li', { class: 'guideline', dataset: { kind: guideline.kind } },
      h('span', { class: 'kind-badge', dataset: { kind: guideline.kind } }, guideline.kind),
      h('span', { class: 'guideline-text' }, guideline.text),
    ))),
  ));
}
