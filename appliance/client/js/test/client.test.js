// The client in Node.js: first against a scripted fake server (exact
// frames, acks and reconnect decisions), then against the real region
// js_test.go runs, over the ws package.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { WebSocket } from "ws";
import {
  Client, ClosedError, Code, ControlKind, DisconnectError, KickedError, NotConnectedError, RefusedError,
  decodeMessage, dispatchFrom, encode, memoryCursorStore, FLAG_GAP, FLAG_LZ4, CAP_LZ4, CAP_GROUP_CURSORS,
} from "../pushd.js";
import { region, newDevice, mintToken, push, groups, deviceState, waitFor, sleep, text } from "./lib.js";

// ---------------------------------------------------------------------------
// A scripted server: each WebSocket the client opens is a FakeSocket the
// test answers by hand.

class FakeServer {
  constructor() {
    this.sockets = [];
    this.log = []; // ordered: ["set", seq] from the store, ["send", TYPE, seq] from the client
    const server = this;
    this.WebSocket = class FakeSocket {
      constructor(url) {
        this.url = url;
        this.readyState = 0;
        this.frames = [];
        this.binaryType = "blob";
        server.sockets.push(this);
        setTimeout(() => {
          if (this.readyState !== 0) return;
          if (server.refuseConnect) return this.drop(1006);
          this.readyState = 1;
          this.onopen?.({});
        }, 0);
      }
      send(b) {
        const f = decodeMessage(b);
        this.frames.push(f);
        server.log.push(["send", f.type, f.seq]);
      }
      close(code = 1000) {
        if (this.readyState >= 2) return;
        this.readyState = 2;
        setTimeout(() => this.drop(code), 0);
      }
      /** The server sends f. */
      deliver(f) {
        assert.equal(this.binaryType, "arraybuffer");
        this.answered = true;
        this.onmessage?.({ data: encode(f).buffer });
      }
      /** The connection ends with code. */
      drop(code) {
        this.readyState = 3;
        this.onclose?.({ code, reason: "" });
      }
      sent(type) {
        return this.frames.filter((f) => f.type === type);
      }
    };
  }
  get last() {
    return this.sockets[this.sockets.length - 1];
  }
  store() {
    const m = memoryCursorStore();
    return { get: m.get, set: (k, c) => { this.log.push(["set", c.seq]); m.set(k, c); } };
  }
  client(opts = {}) {
    const got = { messages: [], drops: [], gaps: [], welcomes: [], controls: [], disconnects: [] };
    const c = new Client({
      url: "ws://fake/v1/ws", app: "a", device: "d", token: "t", WebSocket: this.WebSocket,
      store: this.store(), random: () => 0, backoffMin: 5, backoffMax: 40,
      onMessage: (m) => got.messages.push(`${m.id}@${m.seq}`),
      onDrop: (m, why) => got.drops.push(`${m.id}:${why}`),
      onGap: (from, to) => got.gaps.push([from, to]),
      onWelcome: (w) => got.welcomes.push(w),
      onControl: (f) => got.controls.push(f.kind),
      onDisconnect: (e) => got.disconnects.push(e),
      ...opts,
    });
    return { c, got };
  }
  /** Waits for the next connection's HELLO and answers WELCOME. */
  async welcome(fields = {}, extra = []) {
    await waitFor(() => this.last && this.last.readyState === 1 && this.last.sent("HELLO").length > 0 && !this.last.answered, { what: "HELLO" });
    const s = this.last;
    const w = { type: "WELCOME", session: "n1-1", node: "n1", heartbeat: 30000, recovered: true, epoch: "e1", acked: 0, max_frame: 16384, caps: 0, ...fields };
    s.deliver(extra.length ? { type: "BATCH", frames: [w, ...extra] } : w);
    return s;
  }
}

const pushFrame = (seq, id, flags = 0) => ({ type: "PUSH", flags, seq, id, business: "", priority: 2, created: 1700000000000, group: "", payload: new TextEncoder().encode(id) });
const settle = () => sleep(15);

describe("against a scripted server", () => {
  test("HELLO carries the stored cursor; the cursor is stored before each ack", async () => {
    const srv = new FakeServer();
    const store = srv.store();
    store.set("pushd:a:d:cursor", { epoch: "e1", seq: 4 });
    const { c, got } = srv.client({ store, lz4: true, businesses: ["chat"] });
    c.run();
    const s = await srv.welcome({ acked: 4 });
    srv.log.length = 0;
    const hello = s.sent("HELLO")[0];
    assert.deepEqual([hello.epoch, hello.seq, hello.caps, hello.businesses, hello.app, hello.device, hello.token], ["e1", 4, CAP_LZ4 | CAP_GROUP_CURSORS, ["chat"], "a", "d", "t"]);
    assert.equal(hello.group_cursors, undefined);
    s.deliver(pushFrame(5, "m5"));
    s.deliver(pushFrame(6, "m6"));
    await settle();
    assert.deepEqual(got.messages, ["m5@5", "m6@6"]);
    assert.deepEqual(srv.log, [["set", 5], ["send", "ACK", 5], ["set", 6], ["send", "ACK", 6]]);
    assert.deepEqual(c.cursor, { epoch: "e1", seq: 6 });
    c.close();
  });

  test("WELCOME in a BATCH with the replay; repeats, jumps and flagged gaps", async () => {
    const srv = new FakeServer();
    const { c, got } = srv.client();
    c.run();
    // WELCOME + 1, 2 and 4 (1 → 2 in order; 4 skips 3 without FlagGap):
    // one ACK of the cursor reached, sent twice to ask for a resend.
    const s = await srv.welcome({}, [pushFrame(1, "m1"), pushFrame(2, "m2"), pushFrame(4, "m4")]);
    await settle();
    assert.deepEqual(got.messages, ["m1@1", "m2@2"]);
    assert.deepEqual(got.drops, ["m4:out_of_order"]);
    assert.deepEqual(s.sent("ACK").map((f) => f.seq), [2, 2]);
    // A repeat by seq is dropped and the cursor acked again; a repeat by
    // id with a new seq is dropped but moves the cursor.
    s.deliver(pushFrame(2, "m2"));
    s.deliver(pushFrame(3, "m1"));
    // A flagged gap is accepted and reported.
    s.deliver(pushFrame(6, "m6", FLAG_GAP));
    // Group messages (seq 0) are handed over once by id and never acked.
    s.deliver({ ...pushFrame(0, "g1"), group: "news" });
    s.deliver({ ...pushFrame(0, "g1"), group: "news" });
    await settle();
    assert.deepEqual(got.messages, ["m1@1", "m2@2", "m6@6", "g1@0"]);
    assert.deepEqual(got.drops, ["m4:out_of_order", "m2:repeat", "m1:repeat", "g1:repeat"]);
    assert.deepEqual(got.gaps, [[4, 5]]);
    assert.deepEqual(s.sent("ACK").map((f) => f.seq), [2, 2, 2, 3, 6]);
    c.close();
  });

  test("WELCOME's cursor is adopted (§9 item 5) and recovered:false reaches the app", async () => {
    const srv = new FakeServer();
    const store = srv.store();
    store.set("pushd:a:d:cursor", { epoch: "old", seq: 9 });
    const { c, got } = srv.client({ store });
    c.run();
    await srv.welcome({ epoch: "new", acked: 2, recovered: false });
    await settle();
    assert.equal(got.welcomes[0].recovered, false);
    assert.deepEqual(c.cursor, { epoch: "new", seq: 2 });
    assert.deepEqual(await store.get("pushd:a:d:cursor"), { epoch: "new", seq: 2 });
    c.close();
  });

  test("uint64 seqs above 2^53 stay exact", async () => {
    const srv = new FakeServer();
    const big = 2n ** 60n;
    const { c, got } = srv.client({ cursor: { epoch: "e1", seq: big } });
    c.run();
    const s = await srv.welcome({ acked: big });
    s.deliver(pushFrame(big + 1n, "m"));
    await settle();
    assert.deepEqual(got.messages, [`m@${big + 1n}`]);
    assert.deepEqual(s.sent("ACK").map((f) => f.seq), [big + 1n]);
    c.close();
  });

  test("a refusal a retry cannot fix ends run() without reconnecting", async () => {
    const srv = new FakeServer();
    const { c } = srv.client();
    const run = c.run();
    await waitFor(() => srv.last?.sent("HELLO").length);
    srv.last.deliver({ type: "ERROR", code: Code.token_bad_signature, request: 0, message: "bad signature" });
    await assert.rejects(run, (e) => e instanceof RefusedError && e.codeName === "token_bad_signature");
    await sleep(100);
    assert.equal(srv.sockets.length, 1);
  });

  test("token_expired is retried with a new token when tokenFunc can mint one", async () => {
    const srv = new FakeServer();
    let minted = 0;
    const { c } = srv.client({ token: undefined, tokenFunc: async () => `tok-${++minted}` });
    c.run();
    await waitFor(() => srv.last?.sent("HELLO").length);
    srv.last.deliver({ type: "ERROR", code: Code.token_expired, request: 0, message: "expired" });
    const s = await srv.welcome();
    assert.equal(s.sent("HELLO")[0].token, "tok-2");
    c.close();
  });

  test("unavailable and lost connections reconnect with capped, jittered backoff", async () => {
    const srv = new FakeServer();
    const delays = [];
    let r = 0.999;
    const { c } = srv.client({ random: () => r });
    const t0 = Date.now();
    c.run();
    for (let i = 0; i < 5; i++) {
      await waitFor(() => srv.sockets.length === i + 1 && srv.last.sent("HELLO").length);
      delays.push(Date.now());
      srv.last.deliver({ type: "ERROR", code: Code.unavailable, request: 0, message: "busy" });
    }
    await waitFor(() => srv.sockets.length === 6);
    c.close();
    // Bounds 5, 10, 20, 40, 40 ms (×0.999, floored): the waits grow, and stop growing at the cap.
    const gaps = delays.slice(1).map((d, i) => d - delays[i]);
    assert.ok(gaps[0] >= 4 && gaps[3] >= 35, `gaps ${gaps} since ${t0}`);
  });

  test("kick ends run() with KickedError and no reconnect", async () => {
    const srv = new FakeServer();
    const { c, got } = srv.client();
    const run = c.run();
    const s = await srv.welcome();
    s.deliver({ type: "CONTROL", kind: ControlKind.kick, priority: 0, reason: "took over", addr: "", businesses: [] });
    await assert.rejects(run, KickedError);
    assert.deepEqual(got.controls, [ControlKind.kick]);
    await sleep(50);
    assert.equal(srv.sockets.length, 1);
  });

  test("drain reconnects to its addr; degraded and restored only reach onControl", async () => {
    const srv = new FakeServer();
    const { c, got } = srv.client();
    c.run();
    const s = await srv.welcome();
    s.deliver({ type: "CONTROL", kind: ControlKind.degraded, priority: 1, reason: "", addr: "", businesses: ["ads"] });
    s.deliver({ type: "CONTROL", kind: ControlKind.restored, priority: 0, reason: "", addr: "", businesses: [] });
    await settle();
    assert.equal(srv.sockets.length, 1);
    s.deliver({ type: "CONTROL", kind: ControlKind.drain, priority: 0, reason: "node draining", addr: "ws://other/v1/ws", businesses: [] });
    await srv.welcome();
    assert.equal(srv.last.url, "ws://other/v1/ws");
    assert.deepEqual(got.controls, [ControlKind.degraded, ControlKind.restored, ControlKind.drain]);
    assert.ok(got.disconnects[0] instanceof DisconnectError && got.disconnects[0].redirect?.addr === "ws://other/v1/ws");
    c.close();
  });

  test("dispatch is asked again, avoiding the URL just lost", async () => {
    const srv = new FakeServer();
    const asked = [];
    const { c } = srv.client({ url: undefined, dispatch: async (avoid) => (asked.push(avoid), avoid ? "ws://n2/v1/ws" : "ws://n1/v1/ws") });
    c.run();
    const s = await srv.welcome();
    assert.equal(s.url, "ws://n1/v1/ws");
    s.drop(1006);
    await srv.welcome();
    assert.equal(srv.last.url, "ws://n2/v1/ws");
    assert.deepEqual(asked, ["", "ws://n1/v1/ws"]);
    c.close();
  });

  test("requests are matched to their replies; pending ones fail when the connection ends", async () => {
    const srv = new FakeServer();
    const { c } = srv.client();
    await assert.rejects(c.join("news"), NotConnectedError);
    c.run();
    const s = await srv.welcome();
    const join = c.join("news");
    const up = c.up("chat", "hi");
    const leave = c.leave("news");
    const [j, u, l] = s.sent("JOIN").concat(s.sent("UP"), s.sent("LEAVE"));
    assert.deepEqual([j.request, u.request, l.request, text(u.payload)], [1, 2, 3, "hi"]);
    s.deliver({ type: "BATCH", frames: [
      { type: "UP_REPLY", request: 2, code: 0, payload: new TextEncoder().encode("ok!") },
      { type: "UP_REPLY", request: 1, code: Code.too_many_groups, payload: new Uint8Array() },
    ] });
    assert.equal(text(await up), "ok!");
    await assert.rejects(join, (e) => e instanceof RefusedError && e.code === Code.too_many_groups);
    s.drop(1006);
    await assert.rejects(leave, NotConnectedError);
    c.close();
  });

  test("a WELCOME that comes at once, inside the HELLO's send, does not leave the handshake timer armed", async () => {
    const srv = new FakeServer();
    class Eager extends srv.WebSocket {
      send(b) {
        super.send(b);
        if (b[1] === 1) this.deliver({ type: "WELCOME", session: "s", node: "n", heartbeat: 30000, recovered: true, epoch: "e", acked: 0, max_frame: 16384, caps: 0 });
      }
    }
    const { c, got } = srv.client({ WebSocket: Eager, handshakeTimeout: 40 });
    c.run();
    await waitFor(() => c.connected, { what: "session" });
    await sleep(150);
    assert.equal(c.connected, true, got.disconnects.map(String).join("; "));
    assert.equal(srv.sockets.length, 1);
    c.close();
  });

  test("group cursors move over runs without holes, CATCHUP sets them, and the next HELLO carries them", async () => {
    const srv = new FakeServer();
    const store = memoryCursorStore();
    const cursors = [];
    const catchUps = [];
    const messages = [];
    const { c } = srv.client({
      store, onGroupCursor: (g) => cursors.push(`${g.group}:${g.seq}`), onCatchUp: (cu) => catchUps.push(cu),
      onMessage: (m) => messages.push(`${m.id}@${m.seq} ${m.group}/${m.groupEpoch}/${m.groupSeq}`),
    });
    c.run();
    let s = await srv.welcome();
    const gpush = (id, seq) => ({ ...pushFrame(0, id), group: "room", group_epoch: "g1", group_seq: seq });
    // 1, then 3 ahead of 2: the cursor waits for 2, then takes 2 and 3.
    s.deliver(gpush("a", 1));
    s.deliver(gpush("c", 3));
    await settle();
    assert.deepEqual(c.groupCursor("room"), { group: "room", epoch: "g1", seq: 1 });
    s.deliver(gpush("b", 2));
    await settle();
    assert.deepEqual(c.groupCursor("room"), { group: "room", epoch: "g1", seq: 3 });
    assert.deepEqual(cursors, ["room:1", "room:3"]);
    assert.deepEqual(messages, ["a@0 room/g1/1", "c@0 room/g1/3", "b@0 room/g1/2"]);
    assert.equal(s.sent("ACK").length, 0, "group messages are not acked");
    // A catch-up settles a hole for good: 5 came, 4 never will.
    s.deliver(gpush("e", 5));
    s.deliver({ type: "CATCHUP", group: "room", recovered: false, epoch: "g1", seq: 6 });
    await settle();
    assert.deepEqual(catchUps, [{ group: "room", recovered: false, epoch: "g1", seq: 6 }]);
    assert.deepEqual(c.groupCursor("room"), { group: "room", epoch: "g1", seq: 6 });
    // The next connection resumes the group from there.
    s.drop(1006);
    s = await srv.welcome();
    assert.deepEqual(s.sent("HELLO")[0].group_cursors, [{ group: "room", epoch: "g1", seq: 6 }]);
    c.close();
    // Closing writes the group cursors to the store.
    assert.deepEqual(await store.getGroups("pushd:a:d:cursor:groups"), [{ group: "room", epoch: "g1", seq: 6 }]);
    // A new client resumes them from the store.
    const again = srv.client({ store });
    again.c.run();
    s = await srv.welcome();
    assert.deepEqual(s.sent("HELLO")[0].group_cursors, [{ group: "room", epoch: "g1", seq: 6 }]);
    again.c.close();
  });

  test("close() ends run() and a backoff wait", async () => {
    const srv = new FakeServer();
    srv.refuseConnect = true;
    const { c, got } = srv.client({ backoffMin: 60000, backoffMax: 60000, random: () => 0.5 });
    const run = c.run();
    await waitFor(() => got.disconnects.length === 1);
    c.close();
    await run;
    assert.equal(srv.sockets.length, 1);
  });
});

// ---------------------------------------------------------------------------
// Against the region js_test.go runs.

/** A client of the test app on the region, recording what it gets. */
function device(opts = {}) {
  const id = opts.device ?? newDevice("node");
  const got = { messages: [], welcomes: [], frames: [], connects: 0, raw: [] };
  const c = new Client({
    url: region.wsURLs[0], app: region.app, device: id, WebSocket,
    tokenFunc: async () => mintToken(id),
    store: null,
    onMessage: (m) => got.messages.push({ id: m.id, seq: m.seq, data: text(m.payload), group: m.group }),
    onWelcome: (w) => got.welcomes.push(w),
    onFrame: (f) => got.frames.push(f.type),
    onConnecting: () => got.connects++,
    ...opts,
  });
  return { c, got, id };
}

describe("against a real region", () => {
  test("receives in order, acks, and resumes with the stored cursor: each message once", async () => {
    const store = memoryCursorStore();
    const { c, got, id } = device({ store });
    c.run();
    await waitFor(() => c.connected, { what: "session" });
    for (const d of ["a", "b", "c"]) await push({ devices: [id], data: d });
    await waitFor(() => got.messages.length === 3, { what: "3 messages" });
    assert.deepEqual(got.messages.map((m) => m.data), ["a", "b", "c"]);
    assert.deepEqual(got.messages.map((m) => m.seq), [1, 2, 3]);
    await waitFor(async () => (await deviceState(id)).acked === 3, { what: "server's ack cursor at 3" });
    c.close();

    // Offline: two more are stored; a new client with the same store
    // resumes after 3 and gets only those.
    for (const d of ["d", "e"]) await push({ devices: [id], data: d });
    const again = device({ device: id, store });
    again.c.run();
    await waitFor(() => again.got.messages.length === 2, { what: "the replay" });
    await sleep(200);
    assert.deepEqual(again.got.messages.map((m) => `${m.data}@${m.seq}`), ["d@4", "e@5"]);
    assert.equal(again.got.welcomes[0].recovered, true);
    assert.deepEqual(await store.get(`pushd:${region.app}:${id}:cursor`), { epoch: again.got.welcomes[0].epoch, seq: 5 });
    again.c.close();
  });

  test("connects through dispatch, joins a group, calls a webhook, and pings", async () => {
    const { c, got, id } = device({ url: undefined, dispatch: dispatchFrom(region.dispatch, region.app, "ignored-for-the-answer") });
    c.run();
    await waitFor(() => c.connected, { what: "session" });
    assert.ok(region.nodeIds.includes(got.welcomes[0].node));
    await c.join("news");
    await push({ group: "news", data: "to the group" });
    await waitFor(() => got.messages.length === 1, { what: "group message" });
    assert.deepEqual(got.messages[0], { id: got.messages[0].id, seq: 0, data: "to the group", group: "news" });
    assert.equal(text(await c.up("echo", "hello")), "echo:hello");
    await assert.rejects(c.up("nowhere", "x"), (e) => e instanceof RefusedError && e.codeName === "unknown_business");
    await c.leave("news");
    // The region's heartbeat is 2 s: a PING goes out and its PONG comes back.
    await waitFor(() => got.frames.includes("PONG"), { timeout: 5000, what: "PONG" });
    assert.equal(got.connects, 1);
    assert.ok(id);
    c.close();
  });

  test("lz4: offered only when asked, and compressed batches are decoded", async () => {
    const id = newDevice("lz4");
    const big = "x".repeat(100);
    for (let i = 0; i < 20; i++) await push({ devices: [id], data: `${i}:${big}` });
    let compressed = 0;
    class CountingWS extends WebSocket {
      constructor(url) {
        super(url);
        this.addEventListener("message", (ev) => {
          const b = new Uint8Array(ev.data);
          if (b[1] === 13 && b[2] & FLAG_LZ4) compressed++;
        });
      }
    }
    const { c, got } = device({ device: id, lz4: true, WebSocket: CountingWS });
    c.run();
    await waitFor(() => got.messages.length === 20, { what: "20 messages" });
    assert.deepEqual(got.messages.map((m) => m.data), Array.from({ length: 20 }, (_, i) => `${i}:${big}`));
    assert.ok(compressed > 0, "no lz4 BATCH arrived");
    c.close();

    // Without the option, HELLO offers nothing and nothing is compressed.
    for (let i = 20; i < 40; i++) await push({ devices: [id], data: `${i}:${big}` });
    compressed = 0;
    const plain = device({ device: id, WebSocket: CountingWS, cursor: c.cursor });
    plain.c.run();
    await waitFor(() => plain.got.messages.length === 20, { what: "20 more" });
    assert.equal(compressed, 0);
    plain.c.close();
  });

  test("a group's catch-up stream: a member away for a few messages gets them on reconnect, then CATCHUP", async () => {
    const group = newDevice("live");
    const store = memoryCursorStore();
    const catchUps = [];
    const { c, got, id } = device({ store, onCatchUp: (cu) => catchUps.push(cu) });
    await groups(group, "stream", { max_len: 10, max_age: "1h" });
    c.run();
    await waitFor(() => c.connected, { what: "session" });
    await groups(group, "members", { op: "add", devices: [id] });
    await waitFor(() => catchUps.length === 1, { what: "the CATCHUP of joining" });
    assert.equal(catchUps[0].recovered, true);
    await push({ group, data: "g1" });
    await waitFor(() => got.messages.length === 1, { what: "g1" });
    c.close();
    for (const d of ["g2", "g3"]) await push({ group, data: d });
    const again = device({ device: id, store, onCatchUp: (cu) => catchUps.push(cu) });
    again.c.run();
    await waitFor(() => catchUps.length === 2, { what: "the CATCHUP after the reconnect" });
    assert.deepEqual(again.got.messages.map((m) => m.data), ["g2", "g3"]);
    assert.equal(catchUps[1].recovered, true);
    assert.equal(again.c.groupCursor(group).seq, 3);
    again.c.close();
  });

  test("a bad token: RefusedError token_bad_signature reaches the app, and no reconnect follows", async () => {
    const id = newDevice("bad");
    const { c, got } = device({
      device: id, tokenFunc: undefined,
      token: mintToken(id, { secret: Buffer.alloc(32, 7).toString("base64") }),
    });
    await assert.rejects(c.run(), (e) => e instanceof RefusedError && e.code === Code.token_bad_signature);
    await sleep(1500);
    assert.equal(got.connects, 1);
  });

  test("close() during a session resolves run()", async () => {
    const { c } = device();
    const run = c.run();
    await waitFor(() => c.connected, { what: "session" });
    c.close();
    await run;
    assert.equal(c.connected, false);
    assert.ok(new ClosedError() instanceof Error);
  });
});
