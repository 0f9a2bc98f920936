// The dashboard's entry point: routes of the single-page app.
//
// Modules: api.js (fetch, auth, errors), live.js (one live stream per followed job),
// router.js (history API routing), ui.js (DOM helpers, formatting), books.js (the books
// list), book.js (one book: upload.js, pages.js, jobcard.js, guidelines.js), jobs.js
// (every job).

import { start } from './router.js';
import { booksView } from './books.js';
import { bookView } from './book.js';
import { jobsView } from './jobs.js';

start(document.getElementById('app'), [
  { pattern: /^\/$/, view: booksView, nav: 'books' },
  { pattern: /^\/books\/([^/]+)$/, view: bookView, nav: 'books' },
  { pattern: /^\/jobs$/, view: jobsView, nav: 'jobs' },
]);
