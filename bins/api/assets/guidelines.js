// The guidelines of a book: once final, the finalized document (topics, kinds, page
// references) with Markdown and JSON downloads; before that, each page's guidelines as
// they are extracted.
//
// Downloads need the bearer header, so both files are fetched through api.js and offered
// as object URLs on links with a `download` attribute: no token in any URL.

import { request, seg } from './api.js';
import { h, setText, plural, pageRanges, errorText } from './ui.js';
import { renderPageTopics } from './pages.js';

const PAGE_CONCURRENCY = 4;

export function guidelinesSection(bookId, scope) {
  const status = h('p', { class: 'guidelines-status muted' });
  const body = h('div', { class: 'guidelines-body' });
  const element = h('section', { id: 'guidelines', class: 'card guidelines-card', 'aria-labelledby': 'guidelines-title', tabindex: '-1' },
    h('div', { class: 'section-head' }, h('h2', { id: 'guidelines-title' }, 'Guidelines'), status),
    body,
  );

  let mode = null; // 'none' | 'pages' | 'final'
  let finalLoaded = false;
  const urls = [];
  scope.onCleanup(revoke);

  function revoke() {
    for (const url of urls.splice(0)) URL.revokeObjectURL(url);
  }

  // Per-page guidelines: page number -> document (or a pending promise marker).
  const pageDocs = new Map();
  let pageList = null;

  function update(book) {
    const state = book.guidelines?.status || 'none';
    const total = book.pages?.length || 0;
    const pagesDone = Math.min(book.guidelines?.pages_done || 0, total);
    if (state === 'final') {
      setText(status, 'Final');
      if (mode !== 'final') {
        mode = 'final';
        finalLoaded = false;
        loadFinal();
      }
      return;
    }
    if (state === 'none' || pagesDone === 0) {
      if (mode !== 'none') {
        mode = 'none';
        revoke();
        body.replaceChildren(h('p', { class: 'empty' },
          total ? 'No guidelines yet. When every page has its text, start “Extract guidelines”.' : 'No guidelines yet. Upload pages and run OCR first.'));
      }
      setText(status, state === 'extracting' ? `Extracting: 0 of ${plural(total, 'page')}` : '');
      return;
    }
    setText(status, state === 'extracted'
      ? `Extracted from ${plural(pagesDone, 'page')}; finalize to merge them`
      : `Extracting: ${pagesDone} of ${plural(total, 'page')}`);
    if (mode !== 'pages') {
      mode = 'pages';
      revoke();
      pageList = h('ol', { class: 'page-guidelines-list' });
      body.replaceChildren(pageList);
    }
    const wanted = book.pages.slice(0, pagesDone).map((page) => page.page);
    loadPages(wanted);
  }

  function loadPages(wanted) {
    const missing = wanted.filter((number) => !pageDocs.has(number));
    for (const number of missing) pageDocs.set(number, null);
    let next = 0;
    const worker = async () => {
      while (next < missing.length && scope.alive && mode === 'pages') {
        const number = missing[next++];
        try {
          const response = await request(`/v1/books/${seg(bookId)}/pages/${number}/guidelines`, { signal: scope.signal, accept: [404] });
          if (response.status === 404) {
            pageDocs.delete(number);
            continue;
          }
          pageDocs.set(number, await response.json());
          renderPage(number);
        } catch (error) {
          if (error.name === 'AbortError') return;
          pageDocs.delete(number);
        }
      }
    };
    for (let i = 0; i < PAGE_CONCURRENCY; i += 1) worker();
  }

  function renderPage(number) {
    if (!pageList || mode !== 'pages') return;
    const doc = pageDocs.get(number);
    if (!doc) return;
    const topics = doc.topics || [];
    const count = topics.reduce((sum, topic) => sum + (topic.guidelines?.length || 0), 0);
    const item = h('li', { class: 'page-guidelines-item', dataset: { page: number } },
      h('details', {},
        h('summary', {},
          h('span', { class: 'page-guidelines-page' }, `Page ${number}`),
          h('span', { class: 'page-guidelines-topics' }, topics.length ? topics.map((topic) => topic.title).join(' · ') : 'no topics'),
          h('span', { class: 'muted page-guidelines-count' }, plural(count, 'guideline')),
        ),
        renderPageTopics(doc),
      ),
    );
    // Keep page order whatever order the answers come in.
    const after = [...pageList.children].find((child) => Number(child.dataset.page) > number);
    const existing = pageList.querySelector(`[data-page="${number}"]`);
    if (existing) existing.replaceWith(item);
    else pageList.insertBefore(item, after || null);
  }

  async function loadFinal() {
    revoke();
    body.replaceChildren(h('p', { class: 'muted' }, 'Loading the final guidelines…'));
    let markdownReady = null;
    try {
      const response = await request(`/v1/books/${seg(bookId)}/guidelines`, { headers: { Accept: 'application/json' }, signal: scope.signal });
      const text = await response.text();
      const finalGuidelines = JSON.parse(text);
      if (mode !== 'final' || !scope.alive) return;
      const jsonUrl = URL.createObjectURL(new Blob([text], { type: 'application/json' }));
      urls.push(jsonUrl);
      const jsonLink = h('a', { id: 'download-json', class: 'button', href: jsonUrl, download: `${bookId}-guidelines.json` }, 'Download JSON');
      const markdownLink = h('a', { id: 'download-md', class: 'button', download: `${bookId}-guidelines.md`, 'aria-disabled': 'true' }, 'Download Markdown');
      markdownReady = request(`/v1/books/${seg(bookId)}/guidelines`, { headers: { Accept: 'text/markdown' }, signal: scope.signal })
        .then((answer) => answer.blob())
        .then((blob) => {
          const url = URL.createObjectURL(blob);
          urls.push(url);
          markdownLink.href = url;
          markdownLink.removeAttribute('aria-disabled');
          return url;
        });
      markdownReady.catch(() => {});
      markdownLink.addEventListener('click', (event) => {
        if (markdownLink.hasAttribute('href')) return;
        event.preventDefault();
        markdownReady.then(() => markdownLink.click(), (error) => {
          if (error.name !== 'AbortError') setText(status, `The Markdown could not be loaded: ${errorText(error)}`);
        });
      });
      finalLoaded = true;
      body.replaceChildren(renderFinal(finalGuidelines, markdownLink, jsonLink));
    } catch (error) {
      if (error.name === 'AbortError') return;
      mode = null;
      body.replaceChildren(h('p', { class: 'error' }, `The final guidelines could not be loaded: ${errorText(error)}`));
    }
  }

  return { element, update, get finalLoaded() { return finalLoaded; } };
}

function renderFinal(finalGuidelines, markdownLink, jsonLink) {
  const topics = finalGuidelines.topics || [];
  const count = topics.reduce((sum, topic) => sum + (topic.guidelines?.length || 0), 0);
  const toolbar = h('div', { class: 'guidelines-toolbar' },
    h('p', {}, `${plural(topics.length, 'topic')} · ${plural(count, 'guideline')}`),
    h('div', { class: 'downloads' }, markdownLink, jsonLink),
  );
  if (!topics.length) return h('div', {}, toolbar, h('p', { class: 'empty' }, 'The book has no guidelines: no topic was found on its pages.'));
  return h('div', {},
    toolbar,
    h('div', { class: 'topics' }, topics.map((topic) => h('article', { class: 'topic' },
      h('h3', {}, topic.title),
      h('p', { class: 'topic-pages muted' }, `${(topic.pages || []).length === 1 ? 'Page' : 'Pages'} ${pageRanges(topic.pages || [])}`),
      h('ul', { class: 'guideline-list' }, (topic.guidelines || []).map((guideline) => h('li', { class: 'guideline', dataset: { kind: guideline.kind } },
        h('span', { class: 'kind-badge', dataset: { kind: guideline.kind } }, guideline.kind),
        h('span', { class: 'guideline-text' }, guideline.text),
        h('span', { class: 'guideline-pages muted', title: 'Pages' }, `p. ${pageRanges(guideline.pages || [])}`),
      ))),
    ))),
  );
}
