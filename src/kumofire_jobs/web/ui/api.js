// The HTTP API from the browser: the same origin, JSON, and the bearer token the user typed in,
// kept in sessionStorage (this tab only). A token is asked for only when the API answers 401.

const TOKEN_KEY = "kumofire-jobs-token";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let askToken = async () => false; // set by the app: shows the token dialog

export function onTokenNeeded(ask) {
  askToken = ask;
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

// One question at a time: calls answered 401 together wait for the same dialog.
let asking = null;

async function tokenAfter401(hadToken) {
  if (!asking) {
    asking = askToken(hadToken).finally(() => {
      asking = null;
    });
  }
  return asking;
}

export async function api(method, path, body) {
  for (;;) {
    const headers = { Accept: "application/json" };
    const current = token();
    if (current) headers.Authorization = `Bearer ${current}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
    if (response.status === 401 && (await tokenAfter401(Boolean(current)))) continue;
    if (response.status === 204) return null;
    let data = null;
    const text = await response.text();
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!response.ok) {
      const error = (data && data.error) || {};
      throw new ApiError(
        response.status,
        error.code || "http_" + response.status,
        error.message || `${method} ${path}: HTTP ${response.status}`,
      );
    }
    return data;
  }
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return text ? "?" + text : "";
}

export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body);
export const del = (path) => api("DELETE", path);
