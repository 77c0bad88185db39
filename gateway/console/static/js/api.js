// The gateway's JSON API. The signed-in key lives in this tab's session storage and travels
// only in the Authorization header: never in a URL, never in the page.

const KEY = "flux-console.key";
const ROLE = "flux-console.role";

export const session = {
  get key() {
    return sessionStorage.getItem(KEY);
  },
  get role() {
    return sessionStorage.getItem(ROLE);
  },
  start(key, role) {
    sessionStorage.setItem(KEY, key);
    sessionStorage.setItem(ROLE, role);
  },
  end() {
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(ROLE);
  },
};

export class GatewayError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `The gateway answered ${status}.`);
    this.status = status;
    this.code = error.code || null;
    this.param = error.param || null;
  }
}

let onUnauthorized = () => {};

/** Called when the signed-in key stops working (removed from the config, say). */
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

export async function api(path, { method = "GET", body, key, headers: extra = {} } = {}) {
  const bearer = key || session.key;
  const headers = { ...extra, authorization: `Bearer ${bearer}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
    credentials: "omit",
  });
  const payload = await response.json().catch(() => null);
  if (!response.ok) {
    const error = new GatewayError(response.status, payload);
    if (response.status === 401 && !key) onUnauthorized(error);
    throw error;
  }
  return payload;
}

/** `path?name=value…` for the values that are set. */
export function withQuery(path, params) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") query.set(name, String(value));
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}
