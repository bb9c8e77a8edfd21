// The browser side of the suites: a headless Chromium (puppeteer-core, the
// Debian package's binary) and a small origin that plays the business
// server: it serves a test page that loads pushd.js, and mints device
// tokens for it (docs/protocol.md §12: the page fetches its token from its
// own back end).
import { createServer } from "node:http";
import { readFileSync } from "node:fs";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import puppeteer from "puppeteer-core";
import { mintToken, waitFor } from "./lib.js";

const sdk = readFileSync(new URL("../pushd.js", import.meta.url));

// The test page: window.start(options) runs a Client and records what it
// reports in window.events.
const page = `<!doctype html><meta charset="utf-8"><title>pushd.js test page</title>
<script type="module">
import * as pushd from "/pushd.js";
window.pushd = pushd;
window.events = [];
window.start = (o) => {
  const ev = (e) => window.events.push({ t: performance.now(), ...e });
  const c = new pushd.Client({
    app: o.app, device: o.device, url: o.url, lz4: !!o.lz4,
    dispatch: o.dispatch ? pushd.dispatchFrom(o.dispatch, o.app, o.device) : undefined,
    tokenFunc: async () => (await fetch("/" + (o.tokenPath || "token") + "?device=" + o.device)).text(),
    onConnecting: (url) => ev({ kind: "connecting", url }),
    onWelcome: (w) => ev({ kind: "welcome", ...w }),
    onMessage: o.quiet ? () => { window.received = (window.received || 0) + 1; window.lastAt = performance.now(); } :
      (m) => ev({ kind: "message", id: m.id, seq: Number(m.seq), data: new TextDecoder().decode(m.payload) }),
    onControl: (f) => ev({ kind: "control", name: pushd.controlKindName(f.kind), addr: f.addr }),
    onGap: (a, b) => ev({ kind: "gap", from: Number(a), to: Number(b) }),
    onDisconnect: (e) => ev({ kind: "disconnect", message: e.message }),
  });
  window.client = c;
  c.run().then(() => ev({ kind: "end" }),
    (e) => ev({ kind: "end", error: e.name, code: e.code, codeName: e.codeName, message: e.message }));
};
window.ready = true;
</script>`;

/** Starts the business server's origin; resolves with its URL and a stop function. */
export async function startOrigin(tokenOptions = {}) {
  const srv = createServer((req, res) => {
    const u = new URL(req.url, "http://x");
    const device = u.searchParams.get("device") ?? "";
    if (u.pathname === "/") {
      res.writeHead(200, { "content-type": "text/html" }).end(page);
    } else if (u.pathname === "/pushd.js") {
      res.writeHead(200, { "content-type": "text/javascript" }).end(sdk);
    } else if (u.pathname === "/token") {
      res.writeHead(200, { "content-type": "text/plain" }).end(mintToken(device, tokenOptions));
    } else if (u.pathname === "/favicon.ico") {
      res.writeHead(204).end();
    } else if (u.pathname === "/badtoken") {
      // Signed with a secret that is not the app's.
      res.writeHead(200, { "content-type": "text/plain" }).end(mintToken(device, { ...tokenOptions, secret: Buffer.alloc(32, 9).toString("base64") }));
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise((r) => srv.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${srv.address().port}`, stop: () => new Promise((r) => srv.close(r)) };
}

/** Launches headless Chromium with a fresh profile. */
export async function launch() {
  const exe = process.env.PUSHD_CHROMIUM;
  if (!exe) throw new Error("PUSHD_CHROMIUM is not set: run these suites through go test ./appliance/client/js");
  const profile = mkdtempSync(join(tmpdir(), "pushd-chromium-"));
  const browser = await puppeteer.launch({
    executablePath: exe,
    headless: true,
    userDataDir: profile,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--disable-background-timer-throttling", "--disable-renderer-backgrounding"],
  });
  return {
    browser,
    close: async () => {
      await browser.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Opens the test page of origin in a new tab; page errors fail loudly. */
export async function openTab(browser, origin) {
  const tab = await browser.newPage();
  tab.errors = [];
  tab.on("pageerror", (e) => tab.errors.push(String(e)));
  tab.on("console", (m) => { if (m.type() === "error") tab.errors.push(m.text()); });
  await tab.goto(origin + "/");
  await tab.waitForFunction("window.ready === true");
  return tab;
}

/** The events the tab's client reported so far. */
export const events = (tab) => tab.evaluate(() => window.events);

/** Waits until pred(events) is truthy, and returns the events. */
export async function waitEvents(tab, pred, what, timeout = 15000) {
  let last = [];
  try {
    return await waitFor(async () => {
      last = await events(tab);
      return pred(last) ? last : null;
    }, { timeout, what });
  } catch (e) {
    e.message += `\nevents: ${JSON.stringify(last)}\npage errors: ${tab.errors.join("; ")}`;
    throw e;
  }
}

export const ofKind = (evs, kind) => evs.filter((e) => e.kind === kind);
