// The one owner of HTTP and auth. Every API call of the dashboard goes through here (the
// live stream and the upload too), so the bearer token is added in one place:
//
// - the token lives in sessionStorage (`folio-token`) for this browser session, is sent
//   as `Authorization: Bearer ...` and never put in a URL;
// - a 401 opens the token prompt (once, however many calls fail together) and retries
//   the call after the token was entered; a later 401 brings the prompt back;
// - error bodies `{error: {code, message, details}}` become ApiError objects.

const TOKEN_KEY = 'folio-token';

/** An error answer of the API. */
export class ApiError extends Error {
  constructor(status, code, message, details = {}) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.details = details || {};
  }
}

function storedToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

function storeToken(token) {
  try {
    sessionStorage.setItem(TOKEN_KEY, token);
  } catch {
    // Storage disabled: the token lives as long as this page.
  }
  memoryToken = token;
}

let memoryToken = null;

function currentToken() {
  return storedToken() ?? memoryToken;
}

/** Adds the bearer header to `headers` (a Headers object) when a token is known. */
function authorize(headers) {
  const token = currentToken();
  if (token) headers.set('Authorization', `Bearer ${token}`);
  return token;
}

// The open prompt, shared by every call that got a 401 while it is open.
let prompt = null;

/**
 * Shows the token dialog and resolves true once a token was entered, false when the
 * person dismissed it.
 */
function askForToken(rejected) {
  if (prompt) return prompt;
  const dialog = document.getElementById('token-dialog');
  const input = document.getElementById('token-input');
  const form = document.getElementById('token-form');
  const message = document.getElementById('token-error');
  if (!dialog || !input || !form) return Promise.resolve(false);
  prompt = new Promise((resolve) => {
    const finish = (entered) => {
      form.removeEventListener('submit', onSubmit);
      dialog.removeEventListener('cancel', onCancel);
      if (dialog.open) dialog.close();
      prompt = null;
      resolve(entered);
    };
    const onSubmit = (event) => {
      event.preventDefault();
      const token = input.value.trim();
      if (!token) {
        input.focus();
        return;
      }
      storeToken(token);
      input.value = '';
      finish(true);
    };
    const onCancel = (event) => {
      event.preventDefault();
      finish(false);
    };
    form.addEventListener('submit', onSubmit);
    dialog.addEventListener('cancel', onCancel);
    if (message) {
      message.textContent = rejected ? 'That token was not accepted. Try again.' : '';
      message.hidden = !rejected;
    }
    input.value = '';
    if (!dialog.open) dialog.showModal();
    input.focus();
  });
  return prompt;
}

async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON (a proxy's page, an empty body).
  }
  const error = body && body.error;
  if (error && typeof error.code === 'string') {
    return new ApiError(response.status, error.code, error.message || error.code, error.details);
  }
  return new ApiError(response.status, 'http_error', `${response.status} ${response.statusText || 'error'}`);
}

function unauthorized() {
  return new ApiError(401, 'unauthorized', 'This Folio server needs an API token.');
}

/**
 * fetch() with the token. Options: `method`, `json` (a body to send as JSON), `body`,
 * `headers`, `signal`, `accept` (a status to return instead of throwing, e.g. 404).
 * Resolves to the Response when it is ok (or accepted); throws ApiError otherwise.
 */
export async function request(path, options = {}) {
  const { method = 'GET', json, signal, accept = [] } = options;
  for (;;) {
    const headers = new Headers(options.headers || {});
    let body = options.body;
    if (json !== undefined) {
      body = JSON.stringify(json);
      headers.set('Content-Type', 'application/json');
    }
    const sentWith = authorize(headers);
    const response = await fetch(path, { method, headers, body, signal, credentials: 'same-origin' });
    if (response.status === 401) {
      // A token entered while this call was under way: just try again with it.
      if (currentToken() !== sentWith) continue;
      if (!(await askForToken(Boolean(sentWith)))) throw unauthorized();
      continue;
    }
    if (response.ok || [].concat(accept).includes(response.status)) return response;
    throw await errorFrom(response);
  }
}

/** GET (or another method) and parse JSON. */
export async function getJson(path, options = {}) {
  const response = await request(path, options);
  return response.json();
}

/** POST a JSON body (or none) and parse the JSON answer. */
export async function postJson(path, json, options = {}) {
  const response = await request(path, { ...options, method: 'POST', json });
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

/** GET as a Blob (images, downloads). */
export async function getBlob(path, options = {}) {
  const response = await request(path, options);
  return response.blob();
}

/**
 * A multipart upload with XMLHttpRequest, for its upload progress events.
 * `onProgress(loaded, total)` follows the request body. Resolves to the parsed JSON of a
 * 2xx answer; rejects with ApiError (with `details`, e.g. `rejected`) otherwise. A 401
 * asks for the token and sends the whole batch again.
 */
export async function upload(path, formData, onProgress, headers = {}) {
  for (;;) {
    const sentWith = currentToken();
    const result = await new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open('POST', path);
      xhr.responseType = 'text';
      if (sentWith) xhr.setRequestHeader('Authorization', `Bearer ${sentWith}`);
      for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
      xhr.upload.addEventListener('progress', (event) => {
        if (onProgress) onProgress(event.loaded, event.lengthComputable ? event.total : 0);
      });
      xhr.addEventListener('load', () => resolve({ status: xhr.status, text: xhr.responseText }));
      xhr.addEventListener('error', () => reject(new ApiError(0, 'network', 'The upload failed: the server could not be reached.')));
      xhr.addEventListener('abort', () => reject(new ApiError(0, 'aborted', 'The upload was cancelled.')));
      xhr.send(formData);
    });
    if (result.status === 401) {
      if (currentToken() !== sentWith) continue;
      if (!(await askForToken(Boolean(sentWith)))) throw unauthorized();
      continue;
    }
    let body = null;
    try {
      body = result.text ? JSON.parse(result.text) : null;
    } catch {
      body = null;
    }
    if (result.status >= 200 && result.status < 300) return body;
    const error = body && body.error;
    if (error && typeof error.code === 'string') {
      throw new ApiError(result.status, error.code, error.message || error.code, error.details);
    }
    throw new ApiError(result.status, 'http_error', `The server answered ${result.status}.`);
  }
}

/** Percent-encodes one path segment (ids are validated by the server as well). */
export function seg(value) {
  return encodeURIComponent(String(value));
}
