// How many messages per second one browser tab takes and acks:
//
//   replay  — a real node replays a full inbox (1,000 messages, the
//             default inbox cap) to a tab that just connected: the SDK
//             decodes, dedupes, stores the cursor in localStorage and acks
//             each, and the node sends the next as acks free its window
//             (16 in flight). Timed from WELCOME to the last message.
//   sdk     — the SDK alone in the tab: a WebSocket stand-in in the page
//             answers each ACK with the next BATCH of 16 PUSHes at once, so
//             only the tab's own work counts; with the cursor stored in
//             localStorage (the default), and without a store.
//
// Run by TestJS_Throughput (PUSHD_JS_BENCH=1 go test ./appliance/client/js
// -run TestJS_Throughput -v), which starts the region.
import { region, newDevice, push, deviceState, sleep } from "./lib.js";
import { startOrigin, launch, openTab } from "./browser.js";

const rounds = Number(process.env.ROUNDS ?? 3);
const inbox = 1000;

const origin = await startOrigin();
const chromium = await launch();
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
try {
  const replay = [];
  for (let r = 0; r < rounds; r++) {
    const device = newDevice("bench");
    // Fill the inbox while the device is away, 8 requests at a time.
    let next = 0;
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (next < inbox) {
        next++;
        await push({ devices: [device], data: "x".repeat(64) });
      }
    }));
    const tab = await openTab(chromium.browser, origin.url);
    await tab.evaluate((o) => window.start(o), { app: region.app, device, url: region.wsURLs[0], quiet: true });
    await tab.waitForFunction(`window.received === ${inbox}`, { timeout: 60000, polling: 5 });
    const ms = await tab.evaluate(() => {
      const w = window.events.find((e) => e.kind === "welcome");
      return window.lastAt - w.t;
    });
    for (;;) {
      if ((await deviceState(device)).acked === inbox) break;
      await sleep(20);
    }
    replay.push((inbox / ms) * 1000);
    await tab.close();
  }

  const sdk = [];
  const sdkNoStore = [];
  for (let r = 0; r < 2 * rounds; r++) {
    const tab = await openTab(chromium.browser, origin.url);
    (r % 2 ? sdkNoStore : sdk).push(await tab.evaluate(async (n, keep) => {
      const { Client, encode } = window.pushd;
      const push = (seq) => encode({ type: "PUSH", seq, id: "m" + seq, business: "", priority: 2, created: Date.now(), group: "", payload: new Uint8Array(64) });
      let done;
      const finished = new Promise((r) => (done = r));
      class Loopback {
        constructor() {
          this.readyState = 0;
          this.next = 1;
          setTimeout(() => { this.readyState = 1; this.onopen({}); });
        }
        send(b) {
          if (b[1] === 1) { // HELLO: WELCOME, then the first window
            this.deliver(encode({ type: "WELCOME", session: "s", node: "n", heartbeat: 30000, recovered: true, epoch: "e", acked: 0, max_frame: 16384, caps: 0 }));
            this.window();
          } else if (b[1] === 4) {
            if (this.next > n) done(performance.now());
            else this.window();
          }
        }
        window() {
          const frames = [];
          for (let i = 0; i < 16 && this.next <= n; i++) frames.push(push(this.next++));
          let len = 0;
          for (const f of frames) len += f.length;
          const b = new Uint8Array(7 + len);
          b.set([1, 13, 0, len >>> 24, (len >>> 16) & 255, (len >>> 8) & 255, len & 255]);
          let at = 7;
          for (const f of frames) { b.set(f, at); at += f.length; }
          queueMicrotask(() => this.deliver(b));
        }
        deliver(b) { this.onmessage?.({ data: b.buffer }); }
        close() {}
      }
      let got = 0;
      let start = 0;
      const c = new Client({ url: "ws://loopback/v1/ws", app: "a", device: "bench-sdk-" + Math.random().toString(36).slice(2), token: "t", WebSocket: Loopback,
        ...(keep ? {} : { store: null }),
        onWelcome: () => (start = performance.now()), onMessage: () => void got++ });
      c.run();
      const end = await finished;
      c.close();
      if (got !== n) throw new Error(`got ${got} of ${n}`);
      return (n / (end - start)) * 1000;
    }, 100000, r % 2 === 0));
    await tab.close();
  }
  const fmt = (xs) => `median ${Math.round(median(xs))} msgs/s (runs: ${xs.map(Math.round).join(", ")})`;
  console.log(`replay from a real node, ${inbox} messages of 64 bytes, stored cursor in localStorage: ${fmt(replay)}`);
  console.log(`the SDK alone in the tab, 100,000 messages in BATCHes of 16, cursor in localStorage: ${fmt(sdk)}`);
  console.log(`the same without storing the cursor (store: null): ${fmt(sdkNoStore)}`);
} finally {
  await chromium.close();
  await origin.stop();
}
