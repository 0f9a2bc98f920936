// Client-side routing with the history API. The server answers /, /books/{id} and /jobs
// with the same page, so deep links and reloads land on the right view.
//
// A view is `mount(container, params, scope)`; the scope ends (timers, live
// subscriptions, requests) when the router leaves the view.

import { Scope, h, focusQuietly } from './ui.js';

let routes = [];
let container = null;
let current = null;

/** Starts routing into `mountPoint` with `table`: [{pattern: RegExp, view, nav}]. */
export function start(mountPoint, table) {
  routes = table;
  container = mountPoint;
  window.addEventListener('popstate', () => render(false));
  document.addEventListener('click', onClick);
  render(false);
}

/** Goes to `path` (pathname and optional query) as if a link had been followed. */
export function navigate(path, { replace = false } = {}) {
  if (replace) history.replaceState(null, '', path);
  else history.pushState(null, '', path);
  render(!replace);
}

/** Re-renders the current view (e.g. "try again" after an error). */
export function reload() {
  render(false);
}

function onClick(event) {
  if (event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const link = event.target.closest('a[href]');
  if (!link || link.target || link.hasAttribute('download')) return;
  const url = new URL(link.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith('/v1/') || url.pathname.startsWith('/assets/')) return;
  const samePage = url.pathname + url.search === location.pathname + location.search;
  if (samePage && url.hash) return;
  event.preventDefault();
  if (samePage) return;
  navigate(url.pathname + url.search);
}

function render(moveFocus) {
  if (current) current.dispose();
  const scope = new Scope();
  current = scope;
  const path = location.pathname.replace(/\/+$/, '') || '/';
  let matched = null;
  let params = [];
  for (const route of routes) {
    const match = route.pattern.exec(path);
    if (match) {
      matched = route;
      params = match.slice(1).map(decodeURIComponent);
      break;
    }
  }
  for (const link of document.querySelectorAll('nav a[data-nav]')) {
    if (matched && link.dataset.nav === matched.nav) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  container.replaceChildren();
  window.scrollTo(0, 0);
  if (!matched) {
    document.title = 'Not found · Folio';
    container.append(
      h('h1', {}, 'Not found'),
      h('p', {}, 'There is no page at this address. ', h('a', { href: '/' }, 'Go to the books')),
    );
  } else {
    try {
      matched.view(container, params, scope);
    } catch (error) {
      console.error(error);
      container.append(h('p', { class: 'error', role: 'alert' }, String(error.message || error)));
    }
  }
  if (moveFocus) focusQuietly(container);
}
