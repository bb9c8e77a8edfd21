// Helpers shared by the suites: the region js_test.go started (from the
// environment), a business server's token minting (docs/protocol.md §8.2),
// the push and admin APIs, and polling.
import { createHmac, randomUUID } from "node:crypto";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set: run these suites through go test ./appliance/client/js`);
  return v;
};

export const region = {
  get wsURLs() { return env("PUSHD_WS_URLS").split(" "); },
  get dispatch() { return env("PUSHD_DISPATCH").split(" "); },
  get nodeIds() { return env("PUSHD_NODE_IDS").split(" "); },
  get pushURL() { return env("PUSHD_PUSH_URL"); },
  get adminURL() { return env("PUSHD_ADMIN_URL"); },
  get adminToken() { return env("PUSHD_ADMIN_TOKEN"); },
  get app() { return env("PUSHD_APP"); },
  get keyId() { return env("PUSHD_KEY_ID"); },
  get secret() { return env("PUSHD_SECRET_BASE64"); },
  get apiKey() { return env("PUSHD_API_KEY"); },
};

export const dev = {
  get wsURL() { return env("PUSHD_DEV_WS_URL"); },
  get pushURL() { return env("PUSHD_DEV_PUSH_URL"); },
  get apiKey() { return env("PUSHD_DEV_API_KEY"); },
};

/** A fresh device id, so tests do not share inboxes. */
export const newDevice = (prefix = "d") => `${prefix}-${randomUUID().slice(0, 8)}`;

/**
 * Mints a device token as a business server does (§8.2): HMAC-SHA256 keyed
 * with the decoded secret over "v1." + base64url(claims).
 */
export function mintToken(device, { secret = region.secret, app = region.app, kid = region.keyId, ttl = 3600 } = {}) {
  const key = Buffer.from(secret, "base64");
  const claims = Buffer.from(JSON.stringify({ app, dev: device, exp: Math.floor(Date.now() / 1000) + ttl, kid })).toString("base64url");
  const signed = "v1." + claims;
  return signed + "." + createHmac("sha256", key).update(signed).digest("base64url");
}

async function call(method, url, token, body) {
  const resp = await fetch(url, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  if (!resp.ok) throw new Error(`${method} ${url}: HTTP ${resp.status} ${text}`);
  return JSON.parse(text);
}

/** Pushes through the push API, as pushctl push does. */
export function push(body, { url = region.pushURL, apiKey = region.apiKey, app = region.app } = {}) {
  return call("POST", `${url}/v1/push`, apiKey, { app, ...body });
}

/** A group endpoint of the push API: POST /v1/groups/{group}/{what}, as pushctl group does. */
export function groups(group, what, body, { url = region.pushURL, apiKey = region.apiKey, app = region.app } = {}) {
  return call("POST", `${url}/v1/groups/${group}/${what}`, apiKey, { app, ...body });
}

/** The device's state as the push API tells it (route, inbox, ack cursor). */
export function deviceState(device) {
  return call("GET", `${region.pushURL}/v1/devices/${device}?app=${region.app}`, region.apiKey);
}

/** Marks a node draining (or not) through the admin API, as pushctl nodes drain does. */
export function drain(node, draining) {
  return call("POST", `${region.adminURL}/v1/admin/nodes/${node}/drain`, region.adminToken, { draining });
}

/** Resolves once cond() returns a truthy value (which it resolves with), polling. */
export async function waitFor(cond, { timeout = 10000, what = "condition" } = {}) {
  const end = Date.now() + timeout;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await sleep(20);
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const text = (b) => new TextDecoder().decode(b);
