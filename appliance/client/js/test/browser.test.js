// The SDK in headless Chromium against the region js_test.go runs, and
// pushd --dev's page.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { region, dev, newDevice, push, deviceState, drain, sleep } from "./lib.js";
import { startOrigin, launch, openTab, events, waitEvents, ofKind } from "./browser.js";

let origin, chromium;
before(async () => {
  origin = await startOrigin();
  chromium = await launch();
});
after(async () => {
  await chromium?.close();
  await origin?.stop();
});

const messages = (evs) => ofKind(evs, "message").map((m) => `${m.data}@${m.seq}`);
const storedCursor = (tab, device) => tab.evaluate((k) => JSON.parse(localStorage.getItem(k)), `pushd:${region.app}:${device}:cursor`);

test("receives and acks; offline, then a page reload resumes from the stored cursor: each message once", async () => {
  const device = newDevice("tab");
  const opts = { app: region.app, device, url: region.wsURLs[0] };
  const tab = await openTab(chromium.browser, origin.url);
  await tab.evaluate((o) => window.start(o), opts);
  await waitEvents(tab, (e) => ofKind(e, "welcome").length === 1, "WELCOME");
  await push({ devices: [device], data: "one" });
  await waitEvents(tab, (e) => messages(e).length === 1, "the first message");
  assert.equal((await waitStateAcked(device, 1)).acked, 1);
  const epoch = ofKind(await events(tab), "welcome")[0].epoch;
  assert.deepEqual(await storedCursor(tab, device), { epoch, seq: "1" });

  // Offline: the page is gone while two more are pushed.
  await tab.goto("about:blank");
  await push({ devices: [device], data: "two" });
  await push({ devices: [device], data: "three" });
  await tab.goto(origin.url + "/");
  await tab.waitForFunction("window.ready === true");
  await tab.evaluate((o) => window.start(o), opts);
  const evs = await waitEvents(tab, (e) => messages(e).length === 2, "the replay after the reload");
  await sleep(300);
  assert.deepEqual(messages(await events(tab)), ["two@2", "three@3"]);
  assert.equal(ofKind(evs, "welcome")[0].recovered, true);
  assert.deepEqual(await storedCursor(tab, device), { epoch, seq: "3" });
  await waitStateAcked(device, 3);
  assert.deepEqual(tab.errors, []);
  await tab.close();
});

test("takeover: a second tab with the same device id kicks the first, which does not reconnect", async () => {
  const device = newDevice("tab");
  const opts = { app: region.app, device, url: region.wsURLs[0] };
  const first = await openTab(chromium.browser, origin.url);
  await first.evaluate((o) => window.start(o), opts);
  await waitEvents(first, (e) => ofKind(e, "welcome").length === 1, "first tab's WELCOME");
  const second = await openTab(chromium.browser, origin.url);
  await second.evaluate((o) => window.start(o), { ...opts, url: region.wsURLs[1] });
  await waitEvents(second, (e) => ofKind(e, "welcome").length === 1, "second tab's WELCOME");
  const evs = await waitEvents(first, (e) => ofKind(e, "end").length === 1, "the first tab's client to end");
  assert.equal(ofKind(evs, "end")[0].error, "KickedError");
  assert.deepEqual(ofKind(evs, "control").map((c) => c.name), ["kick"]);
  await push({ devices: [device], data: "for the second tab" });
  await waitEvents(second, (e) => messages(e).length === 1, "the message on the second tab");
  await sleep(1000);
  assert.equal(ofKind(await events(first), "connecting").length, 1);
  assert.deepEqual(messages(await events(first)), []);
  await first.close();
  await second.close();
});

test("a gap: a message that expired while the page was away makes WELCOME say recovered: false", async () => {
  const device = newDevice("tab");
  const opts = { app: region.app, device, url: region.wsURLs[0] };
  const tab = await openTab(chromium.browser, origin.url);
  await tab.evaluate((o) => window.start(o), opts);
  await waitEvents(tab, (e) => ofKind(e, "welcome").length === 1, "WELCOME");
  await push({ devices: [device], data: "kept" });
  await waitEvents(tab, (e) => messages(e).length === 1, "the first message");
  await waitStateAcked(device, 1);
  await tab.goto("about:blank");
  await push({ devices: [device], data: "expires", ttl: 1 });
  await sleep(2100);
  await push({ devices: [device], data: "after" });
  await tab.goto(origin.url + "/");
  await tab.waitForFunction("window.ready === true");
  await tab.evaluate((o) => window.start(o), opts);
  const evs = await waitEvents(tab, (e) => messages(e).length === 1, "the message after the gap");
  assert.equal(ofKind(evs, "welcome")[0].recovered, false);
  assert.deepEqual(messages(evs), ["after@3"]);
  await tab.close();
});

test("a bad token: the refusal reaches the page and no reconnect storm follows", async () => {
  const device = newDevice("tab");
  const tab = await openTab(chromium.browser, origin.url);
  await tab.evaluate((o) => window.start(o), { app: region.app, device, url: region.wsURLs[0], tokenPath: "badtoken" });
  const evs = await waitEvents(tab, (e) => ofKind(e, "end").length === 1, "the client to end");
  const end = ofKind(evs, "end")[0];
  assert.deepEqual([end.error, end.code, end.codeName], ["RefusedError", 104, "token_bad_signature"]);
  await sleep(1500);
  assert.equal(ofKind(await events(tab), "connecting").length, 1);
  await tab.close();
});

test("pushd --dev's page shows a push made through the push API", async () => {
  const device = newDevice("devpage");
  const base = dev.wsURL.replace(/^ws/, "http").replace(/\/v1\/ws$/, "");
  const tab = await chromium.browser.newPage();
  const errors = [];
  tab.on("pageerror", (e) => errors.push(String(e)));
  await tab.goto(`${base}/?device=${device}`); // redirects to /dev/
  assert.equal(new URL(tab.url()).pathname, "/dev/");
  await tab.waitForSelector("#status.up", { timeout: 15000 });
  const answer = await push({ devices: [device], data: "hello from pushctl" }, { url: dev.pushURL, apiKey: dev.apiKey, app: "dev" });
  await tab.waitForSelector(`#messages tr[data-id="${answer.id}"]`, { timeout: 10000 });
  const row = await tab.$eval(`#messages tr[data-id="${answer.id}"]`, (tr) => tr.textContent);
  assert.match(row, /hello from pushctl/);
  assert.match(await tab.$eval("#howto", (e) => e.textContent), new RegExp(`pushctl push --device ${device}`));
  assert.deepEqual(errors, []);
  await tab.close();
});

test("a node drained mid-session: the page moves to another node and misses nothing", async () => {
  const device = newDevice("tab");
  const tab = await openTab(chromium.browser, origin.url);
  await tab.evaluate((o) => window.start(o), { app: region.app, device, dispatch: region.dispatch });
  const first = ofKind(await waitEvents(tab, (e) => ofKind(e, "welcome").length === 1, "WELCOME"), "welcome")[0];
  const n = 12;
  try {
    for (let i = 1; i <= n; i++) {
      if (i === 5) await drain(first.node, true);
      await push({ devices: [device], data: `m${i}` });
      await sleep(50);
    }
    const evs = await waitEvents(tab, (e) => messages(e).length >= n, `${n} messages`, 20000);
    await sleep(300);
    assert.deepEqual(messages(await events(tab)), Array.from({ length: n }, (_, i) => `m${i + 1}@${i + 1}`));
    const welcomes = ofKind(evs, "welcome");
    assert.ok(welcomes.length >= 2, JSON.stringify(welcomes));
    assert.notEqual(welcomes[welcomes.length - 1].node, first.node);
    assert.ok(ofKind(evs, "control").some((c) => c.name === "drain"));
  } finally {
    await drain(first.node, false);
  }
  await tab.close();
});

async function waitStateAcked(device, seq) {
  const end = Date.now() + 10000;
  for (;;) {
    const st = await deviceState(device);
    if (st.acked === seq) return st;
    if (Date.now() > end) throw new Error(`device ${device}: server's ack cursor ${st.acked}, want ${seq}`);
    await sleep(20);
  }
}
