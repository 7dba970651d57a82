// The management API, as the dashboard calls it: the key travels in the Authorization header
// only, never in a URL. Every answer is JSON; an error carries the API's message and param.

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || null;
    this.param = error.param || null;
  }
}

export class Api {
  #key;

  constructor(key) {
    this.#key = key;
  }

  async call(method, path, body) {
    const headers = { Authorization: `Bearer ${this.#key}` };
    const init = { method, headers, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    const json = await response.json().catch(() => null);
    if (!response.ok) throw new ApiError(response.status, json);
    return json;
  }

  get(path, params) {
    const query = new URLSearchParams();
    for (const [name, value] of Object.entries(params || {})) {
      if (value !== undefined && value !== null && value !== "") query.set(name, value);
    }
    const text = query.toString();
    return this.call("GET", text ? `${path}?${text}` : path);
  }
}
