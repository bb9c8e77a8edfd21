// @ts-check
/**
 * pushd.js is the pushd device SDK for browsers and Node.js 20+: one ES
 * module with no dependencies. It keeps one WebSocket to a pushd node open
 * on behalf of a device, hands each message to the app once and in order,
 * acknowledges it, and comes back after every failure. It speaks the
 * protocol of docs/protocol.md and behaves as the Go SDK, appliance/client,
 * does (§11 of that document).
 *
 * The simplest use, in a page:
 *
 *     import { Client } from "./pushd.js";
 *     const c = new Client({
 *       url: "wss://push.example.com/v1/ws", app: "app1", device: "dev-1",
 *       tokenFunc: async () => (await fetch("/push-token")).text(),
 *       onMessage: (m) => console.log(new TextDecoder().decode(m.payload)),
 *     });
 *     await c.run(); // until close(), a kick, or a refusal a retry cannot fix
 *
 * In Node.js 20, which has no global WebSocket, pass one:
 * `new Client({..., WebSocket: (await import("ws")).WebSocket})`.
 *
 * Delivery is at least once on the wire and exactly once to onMessage for
 * the messages of one inbox: the client drops replays by its resume cursor
 * (the last inbox sequence number handled) and other repeats by message id
 * within a window. The cursor is kept in `store` (localStorage in a
 * browser) and written before the message is acked, so a page reload
 * resumes where it stopped.
 *
 * Callbacks run one at a time, in the order the frames arrived. onMessage,
 * onCursor and the store may return promises: the client waits for them
 * before it acks, and handles the next frame only after that.
 *
 * uvarints are unsigned 64-bit. A decoded integer is a number when it is
 * at most 2^53-1 and a BigInt above; encoders take either (§12).
 *
 * @module pushd
 */

export const VERSION = "0.1.0";

// ---------------------------------------------------------------------------
// Frame format (docs/protocol.md §2–§7)

/** Frame type numbers (§4). */
export const FrameType = Object.freeze({
  HELLO: 1, WELCOME: 2, PUSH: 3, ACK: 4, PING: 5, PONG: 6, UP: 7,
  UP_REPLY: 8, JOIN: 9, LEAVE: 10, CONTROL: 11, ERROR: 12, BATCH: 13,
  CATCHUP: 14,
});
/** @type {string[]} */
const typeNames = [];
for (const [k, v] of Object.entries(FrameType)) typeNames[v] = k;

/** PUSH flag: the server sent this PUSH before on this connection (§5). */
export const FLAG_REDELIVERY = 1;
/** PUSH flag: this PUSH's seq skips past lost messages on purpose (§5). */
export const FLAG_GAP = 2;
/** PUSH flag: the body carries the message's position in its group's catch-up stream (§4.3). */
export const FLAG_GROUP_SEQ = 4;
/** BATCH flag: the body is an lz4 block (§4.11). */
export const FLAG_LZ4 = 1;
/** HELLO flag: the body carries the device's group cursors (§4.1). */
export const FLAG_GROUP_CURSORS = 1;
/** HELLO/WELCOME capability: lz4-compressed BATCH frames (§6.1). */
export const CAP_LZ4 = 1;
/** HELLO/WELCOME capability: group cursors and CATCHUP frames (§6.1, §10.2). */
export const CAP_GROUP_CURSORS = 2;
/** Length of a frame header. */
export const HEADER_LEN = 7;
/** The largest frame or WebSocket message the client accepts: 4 MiB, as the Go SDK. */
export const MAX_INBOUND = 4 << 20;

/** Error codes of ERROR and UP_REPLY frames, by name (§7). */
export const Code = Object.freeze({
  ok: 0, bad_frame: 1, unsupported_version: 2, frame_too_large: 3, protocol_violation: 4,
  slow_consumer: 5, heartbeat_missed: 6, handshake_timeout: 100, token_malformed: 101,
  token_expired: 102, token_not_yet_valid: 103, token_bad_signature: 104, token_wrong_app: 105,
  token_wrong_device: 106, token_unknown_key: 107, unknown_app: 108, token_lifetime_too_long: 109,
  origin_forbidden: 110, rate_limited: 111, bad_hello: 112, unknown_business: 200,
  too_many_groups: 201, bad_group: 202, upstream_failed: 203, join_refused: 204, internal: 500,
  unavailable: 501, draining: 502,
});
/** @type {Map<number, string>} */
const codeNames = new Map(Object.entries(Code).map(([k, v]) => [v, k]));

/**
 * The stable name of an error code ("token_expired"), or "code_N" for a
 * code this version does not know.
 * @param {number} code
 * @returns {string}
 */
export function codeName(code) {
  return codeNames.get(code) ?? `code_${code}`;
}

/** CONTROL kinds (§6.3). */
export const ControlKind = Object.freeze({ kick: 1, degraded: 2, restored: 3, drain: 4, redirect: 5, resync: 6 });

/**
 * The name of a CONTROL kind ("drain"), or "kind_N" for one this version
 * does not know.
 * @param {number} kind
 * @returns {string}
 */
export function controlKindName(kind) {
  for (const [k, v] of Object.entries(ControlKind)) if (v === kind) return k;
  return `kind_${kind}`;
}

/**
 * An unsigned 64-bit integer: a number up to 2^53-1, a BigInt above.
 * @typedef {number | bigint} Uint64
 */

/**
 * A decoded or to-be-encoded frame. Fields are named as in the tables of
 * docs/protocol.md §4; `flags` is the header's flags byte; bytes fields
 * are Uint8Arrays.
 * @typedef {{group: string, epoch: string, seq: Uint64}} GroupCursor
 * @typedef {{type: "HELLO", flags?: number, token: string, app: string, device: string, platform: string, version: string, businesses: string[], epoch: string, seq: Uint64, caps: Uint64, group_cursors?: GroupCursor[]}} HelloFrame
 * @typedef {{type: "WELCOME", flags?: number, session: string, node: string, heartbeat: Uint64, recovered: boolean, epoch: string, acked: Uint64, max_frame: Uint64, caps: Uint64}} WelcomeFrame
 * @typedef {{type: "PUSH", flags?: number, seq: Uint64, id: string, business: string, priority: number, created: Uint64, group: string, payload: Uint8Array, group_epoch?: string, group_seq?: Uint64}} PushFrame
 * @typedef {{type: "ACK", flags?: number, seq: Uint64}} AckFrame
 * @typedef {{type: "PING" | "PONG", flags?: number, time: Uint64}} PingFrame
 * @typedef {{type: "UP", flags?: number, request: Uint64, business: string, payload: Uint8Array}} UpFrame
 * @typedef {{type: "UP_REPLY", flags?: number, request: Uint64, code: number, payload: Uint8Array}} UpReplyFrame
 * @typedef {{type: "JOIN" | "LEAVE", flags?: number, request: Uint64, group: string}} GroupFrame
 * @typedef {{type: "CONTROL", flags?: number, kind: number, priority: number, reason: string, addr: string, businesses: string[]}} ControlFrame
 * @typedef {{type: "ERROR", flags?: number, code: number, request: Uint64, message: string}} ErrorFrame
 * @typedef {{type: "BATCH", flags?: number, frames: Frame[]}} BatchFrame
 * @typedef {{type: "CATCHUP", flags?: number, group: string, recovered: boolean, epoch: string, seq: Uint64}} CatchUpFrame
 * @typedef {HelloFrame | WelcomeFrame | PushFrame | AckFrame | PingFrame | UpFrame | UpReplyFrame | GroupFrame | ControlFrame | ErrorFrame | BatchFrame | CatchUpFrame} Frame
 */

/**
 * A frame that cannot be decoded. `code` is the wire code it maps to:
 * bad_frame, unsupported_version or frame_too_large (§2.2).
 */
export class DecodeError extends Error {
  /**
   * @param {string} message
   * @param {number} [code]
   * @param {boolean} [truncated] the bytes end inside the frame
   */
  constructor(message, code = Code.bad_frame, truncated = false) {
    super(message);
    this.name = "DecodeError";
    this.code = code;
    this.truncated = truncated;
  }
}

const MAX_SAFE = Number.MAX_SAFE_INTEGER;
const MAX_LIST = 64; // maxListLen: HELLO and CONTROL businesses
const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder();

/** Appends encoded fields to a growing buffer. */
class Writer {
  constructor() {
    this.b = new Uint8Array(64);
    this.n = 0;
  }
  /** @param {number} k */
  room(k) {
    if (this.n + k <= this.b.length) return;
    const b = new Uint8Array(Math.max(2 * this.b.length, this.n + k));
    b.set(this.b.subarray(0, this.n));
    this.b = b;
  }
  /** @param {number} x */
  u8(x) {
    this.room(1);
    this.b[this.n++] = x & 0xff;
  }
  /**
   * @param {Uint64} v
   * @returns {void}
   */
  uvarint(v) {
    if (typeof v === "bigint") {
      if (v < 0n || v > 0xffffffffffffffffn) throw new RangeError(`uvarint out of range: ${v}`);
      if (v <= BigInt(MAX_SAFE)) return this.uvarint(Number(v));
      while (v >= 0x80n) {
        this.u8(Number(v & 0x7fn) | 0x80);
        v >>= 7n;
      }
      this.u8(Number(v));
      return;
    }
    if (!Number.isInteger(v) || v < 0 || v > MAX_SAFE) throw new RangeError(`uvarint out of range: ${v} (use a BigInt above 2^53-1)`);
    while (v >= 0x80) {
      this.u8((v % 0x80) | 0x80);
      v = Math.floor(v / 0x80);
    }
    this.u8(v);
  }
  /** @param {Uint8Array} b */
  bytes(b) {
    this.uvarint(b.length);
    this.room(b.length);
    this.b.set(b, this.n);
    this.n += b.length;
  }
  /** @param {string} s */
  str(s) {
    const n = s.length;
    if (n < 128) {
      // Ids and most strings are short ASCII: no encoder call.
      this.room(n + 1);
      const b = this.b;
      let at = this.n + 1;
      let i = 0;
      for (; i < n; i++) {
        const c = s.charCodeAt(i);
        if (c > 0x7f) break;
        b[at++] = c;
      }
      if (i === n) {
        b[this.n] = n;
        this.n = at;
        return;
      }
    }
    this.bytes(utf8Encoder.encode(s));
  }
  /** @param {string[]} list */
  strs(list) {
    this.uvarint(list.length);
    for (const s of list) this.str(s);
  }
}

/**
 * Encodes one frame, header included. A BATCH is written uncompressed.
 * @param {Frame} f
 * @returns {Uint8Array}
 */
export function encode(f) {
  const w = new Writer();
  encodeTo(w, f);
  return w.b.slice(0, w.n);
}

/**
 * @param {Writer} w
 * @param {Frame} f
 */
function encodeTo(w, f) {
  const type = FrameType[f.type];
  if (!type) throw new TypeError(`unknown frame type ${f.type}`);
  const start = w.n;
  w.room(HEADER_LEN);
  w.n += HEADER_LEN;
  // The flags a frame's optional fields set are the encoder's to decide:
  // group_cursors sets FLAG_GROUP_CURSORS, group_epoch FLAG_GROUP_SEQ.
  let flags = (f.flags ?? 0) & ~((f.type === "HELLO" ? FLAG_GROUP_CURSORS : 0) | (f.type === "PUSH" ? FLAG_GROUP_SEQ : 0));
  switch (f.type) {
    case "HELLO":
      for (const s of [f.token, f.app, f.device, f.platform, f.version]) w.str(s);
      w.strs(f.businesses);
      w.str(f.epoch);
      w.uvarint(f.seq);
      w.uvarint(f.caps);
      if (f.group_cursors?.length) {
        flags |= FLAG_GROUP_CURSORS;
        w.uvarint(f.group_cursors.length);
        for (const c of f.group_cursors) {
          w.str(c.group);
          w.str(c.epoch);
          w.uvarint(c.seq);
        }
      }
      break;
    case "WELCOME":
      w.str(f.session);
      w.str(f.node);
      w.uvarint(f.heartbeat);
      w.u8(f.recovered ? 1 : 0);
      w.str(f.epoch);
      w.uvarint(f.acked);
      w.uvarint(f.max_frame);
      w.uvarint(f.caps);
      break;
    case "PUSH":
      w.uvarint(f.seq);
      w.str(f.id);
      w.str(f.business);
      w.u8(f.priority);
      w.uvarint(f.created);
      w.str(f.group);
      w.bytes(f.payload);
      if (f.group_epoch) {
        flags |= FLAG_GROUP_SEQ;
        w.str(f.group_epoch);
        w.uvarint(f.group_seq ?? 0);
      }
      break;
    case "ACK":
      w.uvarint(f.seq);
      break;
    case "PING":
    case "PONG":
      w.uvarint(f.time);
      break;
    case "UP":
      w.uvarint(f.request);
      w.str(f.business);
      w.bytes(f.payload);
      break;
    case "UP_REPLY":
      w.uvarint(f.request);
      w.uvarint(f.code);
      w.bytes(f.payload);
      break;
    case "JOIN":
    case "LEAVE":
      w.uvarint(f.request);
      w.str(f.group);
      break;
    case "CONTROL":
      w.u8(f.kind);
      w.u8(f.priority);
      w.str(f.reason);
      w.str(f.addr);
      w.strs(f.businesses);
      break;
    case "ERROR":
      w.uvarint(f.code);
      w.uvarint(f.request);
      w.str(f.message);
      break;
    case "CATCHUP":
      w.str(f.group);
      w.u8(f.recovered ? 1 : 0);
      w.str(f.epoch);
      w.uvarint(f.seq);
      break;
    case "BATCH":
      if ((f.flags ?? 0) & FLAG_LZ4) throw new TypeError("this encoder writes uncompressed BATCH frames only");
      for (const inner of f.frames) {
        if (inner.type === "BATCH") throw new TypeError("a BATCH must not contain a BATCH");
        encodeTo(w, inner);
      }
      break;
  }
  const len = w.n - start - HEADER_LEN;
  const b = w.b;
  b[start] = 1;
  b[start + 1] = type;
  b[start + 2] = flags;
  b[start + 3] = len >>> 24;
  b[start + 4] = (len >>> 16) & 0xff;
  b[start + 5] = (len >>> 8) & 0xff;
  b[start + 6] = len & 0xff;
}

/** Reads fields from one frame body. */
class Reader {
  /**
   * @param {Uint8Array} b
   * @param {number} p
   * @param {number} end
   */
  constructor(b, p, end) {
    this.b = b;
    this.p = p;
    this.end = end;
  }
  /** @returns {number} */
  u8() {
    if (this.p >= this.end) throw new DecodeError("field runs past the end of the body");
    return this.b[this.p++];
  }
  /** @returns {Uint64} */
  uvarint() {
    let v = 0;
    let mul = 1;
    for (let i = 0, p = this.p; i < 7; i++, p++) {
      if (p >= this.end) throw new DecodeError("uvarint runs past the end of the body");
      const c = this.b[p];
      v += (c & 0x7f) * mul;
      mul *= 0x80;
      if (c < 0x80) {
        this.p = p + 1;
        return v;
      }
    }
    // 8 bytes or more may exceed 2^53-1: redo it with BigInt (§12).
    let big = 0n;
    for (let i = 0, p = this.p; i < 10; i++, p++) {
      if (p >= this.end) throw new DecodeError("uvarint runs past the end of the body");
      const c = this.b[p];
      if (i === 9 && c > 1) throw new DecodeError("uvarint overflows 64 bits");
      big |= BigInt(c & 0x7f) << BigInt(7 * i);
      if (c < 0x80) {
        this.p = p + 1;
        return big <= BigInt(MAX_SAFE) ? Number(big) : big;
      }
    }
    throw new DecodeError("uvarint longer than 10 bytes");
  }
  /** @returns {number} a length that fits in what is left */
  len() {
    const n = this.uvarint();
    if (typeof n === "bigint" || n > this.end - this.p) throw new DecodeError("length runs past the end of the body");
    return n;
  }
  /** @returns {boolean} */
  bool() {
    const x = this.u8();
    if (x > 1) throw new DecodeError(`bool byte ${x} is neither 0 nor 1`);
    return x === 1;
  }
  /** @returns {number} */
  code() {
    const c = this.uvarint();
    if (typeof c === "bigint" || c > 0xffff) throw new DecodeError(`error code ${c} over 0xFFFF`);
    return c;
  }
  /** @returns {Uint8Array} a copy */
  bytes() {
    const n = this.len();
    this.p += n;
    return this.b.slice(this.p - n, this.p);
  }
  /** @returns {string} */
  str() {
    const n = this.len();
    const b = this.b;
    const from = this.p;
    this.p += n;
    if (n <= 64) {
      // Ids and most strings are short ASCII: no decoder call.
      let ascii = "";
      for (let i = from; i < this.p; i++) {
        if (b[i] > 0x7f) return utf8Decoder.decode(b.subarray(from, this.p));
        ascii += String.fromCharCode(b[i]);
      }
      return ascii;
    }
    return utf8Decoder.decode(b.subarray(from, this.p));
  }
  /** @returns {string[]} */
  strs() {
    const n = this.uvarint();
    if (typeof n === "bigint" || n > MAX_LIST) throw new DecodeError(`list of ${n} elements, over ${MAX_LIST}`);
    if (n > this.end - this.p) throw new DecodeError("list count over the bytes left");
    const out = [];
    for (let i = 0; i < n; i++) out.push(this.str());
    return out;
  }
}

/**
 * Decodes the frame at the front of b and returns it with the number of
 * bytes it took. Bytes after a type's last known field are ignored
 * (§2.3). A BATCH is unwrapped into `frames`, its lz4 block decompressed.
 * @param {Uint8Array} b
 * @param {number} [max] the largest body (and lz4 batch content) accepted
 * @returns {[Frame, number]}
 * @throws {DecodeError}
 */
export function decode(b, max = MAX_INBOUND) {
  return decodeAt(b, 0, b.length, max, true);
}

/**
 * Decodes b as one WebSocket message: exactly one frame, maybe a BATCH
 * (§1.1).
 * @param {Uint8Array} b
 * @param {number} [max]
 * @returns {Frame}
 * @throws {DecodeError}
 */
export function decodeMessage(b, max = MAX_INBOUND) {
  const [f, n] = decode(b, max);
  if (n !== b.length) throw new DecodeError("a WebSocket message must hold exactly one frame; use BATCH for several", Code.protocol_violation);
  return f;
}

/**
 * @param {Uint8Array} b
 * @param {number} at
 * @param {number} end
 * @param {number} max
 * @param {boolean} batchOK
 * @returns {[Frame, number]}
 */
function decodeAt(b, at, end, max, batchOK) {
  if (end - at < HEADER_LEN) throw new DecodeError("truncated frame header", Code.bad_frame, true);
  if (b[at] !== 1) throw new DecodeError(`protocol version ${b[at]}, want 1`, Code.unsupported_version);
  const type = b[at + 1];
  const flags = b[at + 2];
  const len = ((b[at + 3] << 24) >>> 0) + (b[at + 4] << 16) + (b[at + 5] << 8) + b[at + 6];
  if (len > max) throw new DecodeError(`frame body of ${len} bytes over the limit of ${max}`, Code.frame_too_large);
  const name = typeNames[type];
  if (!name) throw new DecodeError(`unknown frame type ${type}`);
  const bodyEnd = at + HEADER_LEN + len;
  if (bodyEnd > end) throw new DecodeError(`truncated ${name}: ${end - at} of ${HEADER_LEN + len} bytes`, Code.bad_frame, true);
  const r = new Reader(b, at + HEADER_LEN, bodyEnd);
  /** @type {Frame} */
  let f;
  switch (name) {
    case "HELLO": {
      const h = { type: name, flags, token: r.str(), app: r.str(), device: r.str(), platform: r.str(), version: r.str(),
        businesses: r.strs(), epoch: r.str(), seq: r.uvarint(), caps: r.uvarint() };
      if (flags & FLAG_GROUP_CURSORS) {
        const n = r.uvarint();
        if (typeof n === "bigint" || n === 0 || n > MAX_LIST) throw new DecodeError(`group cursor list of ${n}: 1 to ${MAX_LIST}`);
        if (n > (r.end - r.p) / 3) throw new DecodeError("group cursor count over the bytes left");
        /** @type {GroupCursor[]} */
        const cursors = [];
        for (let i = 0; i < n; i++) cursors.push({ group: r.str(), epoch: r.str(), seq: r.uvarint() });
        f = { ...h, group_cursors: cursors };
      } else {
        f = /** @type {HelloFrame} */ (h);
      }
      break;
    }
    case "WELCOME":
      f = { type: name, flags, session: r.str(), node: r.str(), heartbeat: r.uvarint(), recovered: r.bool(),
        epoch: r.str(), acked: r.uvarint(), max_frame: r.uvarint(), caps: r.uvarint() };
      break;
    case "PUSH": {
      const p = { type: name, flags, seq: r.uvarint(), id: r.str(), business: r.str(), priority: r.u8(),
        created: r.uvarint(), group: r.str(), payload: r.bytes() };
      f = flags & FLAG_GROUP_SEQ ? { ...p, group_epoch: r.str(), group_seq: r.uvarint() } : /** @type {PushFrame} */ (p);
      break;
    }
    case "ACK":
      f = { type: name, flags, seq: r.uvarint() };
      break;
    case "PING":
    case "PONG":
      f = { type: name, flags, time: r.uvarint() };
      break;
    case "UP":
      f = { type: name, flags, request: r.uvarint(), business: r.str(), payload: r.bytes() };
      break;
    case "UP_REPLY":
      f = { type: name, flags, request: r.uvarint(), code: r.code(), payload: r.bytes() };
      break;
    case "JOIN":
    case "LEAVE":
      f = { type: name, flags, request: r.uvarint(), group: r.str() };
      break;
    case "CONTROL":
      f = { type: name, flags, kind: r.u8(), priority: r.u8(), reason: r.str(), addr: r.str(), businesses: r.strs() };
      break;
    case "ERROR":
      f = { type: name, flags, code: r.code(), request: r.uvarint(), message: r.str() };
      break;
    case "CATCHUP":
      f = { type: name, flags, group: r.str(), recovered: r.bool(), epoch: r.str(), seq: r.uvarint() };
      break;
    default: {
      if (!batchOK) throw new DecodeError("a BATCH inside a BATCH");
      let body = b;
      let p = at + HEADER_LEN;
      let bend = bodyEnd;
      if (flags & FLAG_LZ4) {
        const n = r.uvarint();
        const block = bodyEnd - r.p;
        if (typeof n === "bigint" || n > max) throw new DecodeError(`lz4 BATCH of ${n} bytes over the limit of ${max}`, Code.frame_too_large);
        if (n > 255 * block) throw new DecodeError(`lz4 BATCH declares ${n} bytes from a ${block}-byte block`);
        body = lz4DecodeBlock(b.subarray(r.p, bodyEnd), n);
        p = 0;
        bend = n;
      }
      /** @type {Frame[]} */
      const frames = [];
      while (p < bend) {
        const [inner, k] = decodeAt(body, p, bend, max, false);
        frames.push(inner);
        p += k;
      }
      f = { type: "BATCH", flags, frames };
    }
  }
  return [f, HEADER_LEN + len];
}

/**
 * Decompresses one raw lz4 block (no frame header) that must expand to
 * exactly n bytes.
 * @param {Uint8Array} src
 * @param {number} n
 * @returns {Uint8Array}
 * @throws {DecodeError}
 */
export function lz4DecodeBlock(src, n) {
  const dst = new Uint8Array(n);
  const bad = () => new DecodeError("lz4 block does not decompress to its declared length");
  let s = 0;
  let d = 0;
  while (s < src.length) {
    const token = src[s++];
    let lit = token >>> 4;
    if (lit === 15) {
      let x;
      do {
        if (s >= src.length) throw bad();
        x = src[s++];
        lit += x;
      } while (x === 255);
    }
    if (s + lit > src.length || d + lit > n) throw bad();
    dst.set(src.subarray(s, s + lit), d);
    s += lit;
    d += lit;
    if (s === src.length) break; // the last sequence has literals only
    if (s + 2 > src.length) throw bad();
    const off = src[s] | (src[s + 1] << 8);
    s += 2;
    if (off === 0 || off > d) throw bad();
    let m = token & 15;
    if (m === 15) {
      let x;
      do {
        if (s >= src.length) throw bad();
        x = src[s++];
        m += x;
      } while (x === 255);
    }
    m += 4;
    if (d + m > n) throw bad();
    if (off >= m) {
      dst.copyWithin(d, d - off, d - off + m);
      d += m;
    } else {
      for (let from = d - off, stop = d + m; d < stop; ) dst[d++] = dst[from++];
    }
  }
  if (d !== n) throw bad();
  return dst;
}

// ---------------------------------------------------------------------------
// Errors that reach the app

/**
 * The server refused the session (an ERROR instead of WELCOME: a bad
 * token, an unknown app, …), or answered a request (UP, JOIN, LEAVE) with
 * an error code. `code` is the wire code and `codeName` its name (§7).
 */
export class RefusedError extends Error {
  /**
   * @param {number} code
   * @param {string} message
   */
  constructor(code, message) {
    super(`server refused: ${codeName(code)} (${code}): ${message}`);
    this.name = "RefusedError";
    this.code = code;
    this.codeName = codeName(code);
    this.detail = message;
  }
}

/** Another connection of this device took over (CONTROL kick). The client does not reconnect. */
export class KickedError extends Error {
  /** @param {string} [reason] */
  constructor(reason = "") {
    super(`kicked: another connection of this device took over${reason ? ": " + reason : ""}`);
    this.name = "KickedError";
  }
}

/** A request (up, join, leave) made between connections, or whose connection ended before its answer. */
export class NotConnectedError extends Error {
  constructor() {
    super("not connected");
    this.name = "NotConnectedError";
  }
}

/** close() was called. */
export class ClosedError extends Error {
  constructor() {
    super("client closed");
    this.name = "ClosedError";
  }
}

/**
 * Why one connection ended, as onDisconnect gets it when it is not one of
 * the errors above. `welcomed`: the connection had reached WELCOME;
 * `lost`: it then failed (closed, or silent past 2.5 heartbeats);
 * `closeCode`: the WebSocket close code, when a close came (1006: none).
 */
export class DisconnectError extends Error {
  /**
   * @param {string} message
   * @param {{welcomed?: boolean, lost?: boolean, noAttempt?: boolean, redirect?: {addr: string, now: boolean}, closeCode?: number, cause?: unknown}} [o]
   */
  constructor(message, o = {}) {
    super(message);
    this.name = "DisconnectError";
    this.welcomed = !!o.welcomed;
    this.lost = !!o.lost;
    this.noAttempt = !!o.noAttempt;
    this.redirect = o.redirect;
    this.closeCode = o.closeCode;
    if (o.cause !== undefined) this.cause = o.cause;
  }
}

// ---------------------------------------------------------------------------
// Cursor storage

/**
 * The resume position of a device: the inbox epoch and the last inbox
 * sequence number handled.
 * @typedef {{epoch: string, seq: Uint64}} Cursor
 */

/**
 * Where the client keeps the cursor across restarts and page reloads.
 * Either method may return a promise; set must not resolve before the
 * cursor is stored: the client acks only after it. getGroups and
 * setGroups keep the group cursors (§10.2) the same way; a store without
 * them keeps those in memory only, so after a restart the device catches
 * up in none of its groups.
 * @typedef {{get(key: string): Cursor | null | undefined | Promise<Cursor | null | undefined>, set(key: string, cursor: Cursor): void | Promise<void>,
 *   getGroups?(key: string): GroupCursor[] | null | undefined | Promise<GroupCursor[] | null | undefined>,
 *   setGroups?(key: string, cursors: GroupCursor[]): void | Promise<void>}} CursorStore
 */

/**
 * A CursorStore on a Web Storage object (localStorage by default). Each
 * cursor is one JSON value.
 * @param {Storage} [storage]
 * @returns {CursorStore}
 */
export function webStorageCursorStore(storage = globalThis.localStorage) {
  return {
    get(key) {
      const raw = storage.getItem(key);
      if (!raw) return null;
      const v = JSON.parse(raw);
      if (typeof v?.epoch !== "string" || typeof v?.seq !== "string" || !/^\d+$/.test(v.seq)) return null;
      return { epoch: v.epoch, seq: toUint64(BigInt(v.seq)) };
    },
    set(key, c) {
      storage.setItem(key, JSON.stringify({ epoch: c.epoch, seq: String(c.seq) }));
    },
    getGroups(key) {
      const raw = storage.getItem(key);
      if (!raw) return null;
      const v = JSON.parse(raw);
      if (!Array.isArray(v)) return null;
      return v.filter((c) => typeof c?.group === "string" && typeof c?.epoch === "string" && typeof c?.seq === "string" && /^\d+$/.test(c.seq))
        .map((c) => ({ group: c.group, epoch: c.epoch, seq: toUint64(BigInt(c.seq)) }));
    },
    setGroups(key, cursors) {
      storage.setItem(key, JSON.stringify(cursors.map((c) => ({ group: c.group, epoch: c.epoch, seq: String(c.seq) }))));
    },
  };
}

/**
 * A CursorStore in memory: cursors last as long as the process or page.
 * @returns {CursorStore}
 */
export function memoryCursorStore() {
  /** @type {Map<string, Cursor>} */
  const m = new Map();
  /** @type {Map<string, GroupCursor[]>} */
  const g = new Map();
  return { get: (k) => m.get(k), set: (k, c) => void m.set(k, { ...c }),
    getGroups: (k) => g.get(k), setGroups: (k, cs) => void g.set(k, cs.map((c) => ({ ...c }))) };
}

/**
 * A device id for this browser, made once and kept in storage under
 * "pushd:<app>:device" (§12: an id is 1–128 letters, digits and ._:-).
 * @param {string} app
 * @param {Storage} [storage]
 * @returns {string}
 */
export function persistentDeviceId(app, storage = globalThis.localStorage) {
  const key = `pushd:${app}:device`;
  let id = storage.getItem(key);
  if (!id) {
    id = "web-" + globalThis.crypto.randomUUID();
    storage.setItem(key, id);
  }
  return id;
}

// ---------------------------------------------------------------------------
// Dispatch

/**
 * A dispatch function for the client's `dispatch` option: it asks a
 * region's dispatch endpoint (GET /v1/dispatch on any node's device port,
 * e.g. "https://push.example.com") which node the device should use,
 * before every connect. Several bases are tried in turn, starting with the
 * last one that answered. The URL to avoid (the one the device just lost)
 * is passed on, so the region names another node (§8.7, as the Go SDK's
 * DispatchFrom). A page on another origin needs the node to allow it
 * (`--allowed-origin`, or none set).
 * @param {string[]} bases
 * @param {string} app
 * @param {string} device
 * @param {{fetch?: typeof fetch, timeout?: number}} [options] timeout per request in ms (10000)
 * @returns {(avoid: string, signal?: AbortSignal) => Promise<string>}
 */
export function dispatchFrom(bases, app, device, options = {}) {
  const doFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  const timeout = options.timeout ?? 10000;
  let next = 0;
  /**
   * @param {string} base
   * @param {string} avoid
   * @param {AbortSignal | undefined} signal
   */
  const ask = async (base, avoid, signal) => {
    const q = new URLSearchParams({ app, device });
    if (avoid) q.set("avoid", avoid);
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), timeout);
    const stop = () => ctl.abort();
    signal?.addEventListener("abort", stop);
    try {
      const resp = await doFetch(`${base.replace(/\/$/, "")}/v1/dispatch?${q}`, { signal: ctl.signal });
      if (!resp.ok) throw new Error(`dispatch at ${base} answered ${resp.status}`);
      const a = await resp.json();
      if (!a.ws_url) throw new Error(`dispatch answer from ${base} names no URL`);
      return /** @type {string} */ (a.ws_url);
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", stop);
    }
  };
  return async (avoid, signal) => {
    if (bases.length === 0) throw new Error("dispatch: no endpoint configured");
    const errs = [];
    const first = next;
    for (let i = 0; i < bases.length; i++) {
      const k = (first + i) % bases.length;
      try {
        const u = await ask(bases[k], avoid, signal);
        next = k;
        return u;
      } catch (e) {
        errs.push(e);
        if (signal?.aborted) break;
      }
    }
    throw new AggregateError(errs, `dispatch: no endpoint answered: ${errs.map(String).join("; ")}`);
  };
}

// ---------------------------------------------------------------------------
// Client

/**
 * A message handed to onMessage.
 * @typedef {object} Message
 * @property {string} id global message id
 * @property {Uint64} seq inbox sequence number; 0 for group, broadcast and unstored messages
 * @property {string} business
 * @property {number} priority 1 low, 2 normal, 3 high
 * @property {Uint64} created unix milliseconds when the push API accepted it
 * @property {string} group the group of a group message; "" otherwise
 * @property {string} groupEpoch with groupSeq, the message's place in its group's catch-up stream (§10.2); "" and 0 without one
 * @property {Uint64} groupSeq
 * @property {Uint8Array} payload
 * @property {boolean} redelivered the server sent it before; it is still handed over once
 */

/**
 * Where a group's catch-up left the device (§10.2): the messages after its
 * cursor came before, and recovered false says some may be lost.
 * @typedef {object} CatchUp
 * @property {string} group
 * @property {boolean} recovered
 * @property {string} epoch
 * @property {Uint64} seq
 */

/**
 * An accepted session, as onWelcome gets it.
 * @typedef {object} Welcome
 * @property {string} session
 * @property {string} node
 * @property {boolean} recovered false: messages after the cursor were lost (trimmed, expired, inbox lost): resync the app
 * @property {string} epoch
 * @property {number} heartbeat ms between PINGs
 */

/**
 * The constructor of a WebSocket: the browser's, or the `ws` package's
 * in Node.js.
 * @typedef {new (url: string) => WebSocketLike} WebSocketConstructor
 * @typedef {{binaryType: string, readyState: number, send(data: Uint8Array): void, close(code?: number, reason?: string): void,
 *   onopen: ((ev: any) => void) | null, onmessage: ((ev: {data: any}) => void) | null,
 *   onclose: ((ev: {code: number, reason: string}) => void) | null, onerror: ((ev: any) => void) | null}} WebSocketLike
 */

/**
 * Options of a Client. Every field says what leaving it out means.
 * @typedef {object} ClientOptions
 * @property {string} [url] the node's WebSocket URL, ws://host:port/v1/ws or wss://…; required unless dispatch is set
 * @property {(avoid: string, signal?: AbortSignal) => Promise<string>} [dispatch] called before every connect to choose the URL
 *   (see dispatchFrom); avoid is the URL the previous attempt failed on, "" otherwise
 * @property {string} app
 * @property {string} device
 * @property {string} [token] the device token; required unless tokenFunc is set
 * @property {(signal?: AbortSignal) => string | Promise<string>} [tokenFunc] called for a fresh token before each connect;
 *   with it, token_expired, token_not_yet_valid and token_unknown_key refusals are retried
 * @property {string} [platform] HELLO platform: "web" in a browser, "node" otherwise
 * @property {string} [version] HELLO version: "pushd-js/VERSION"
 * @property {string[]} [businesses] HELLO businesses: none
 * @property {boolean} [lz4] offer lz4-compressed batches (CapLZ4): not offered
 * @property {CursorStore | null} [store] where the cursor is kept: localStorage in a browser, memory otherwise; null: nowhere
 * @property {string} [storeKey] the cursor's key in the store: "pushd:<app>:<device>:cursor"
 * @property {Cursor} [cursor] where to resume; overrides the store's cursor: the store's, else a fresh install
 * @property {WebSocketConstructor} [WebSocket] globalThis.WebSocket
 * @property {(m: Message) => void | Promise<void>} [onMessage] each message, once, in order; the ack waits for its promise
 * @property {(c: Cursor) => void | Promise<void>} [onCursor] the new cursor, after the store has it and before the ack
 * @property {GroupCursor[]} [groupCursors] where to resume the groups' catch-up streams; overrides the store's: the store's, else none
 * @property {(c: GroupCursor) => void} [onGroupCursor] a group's cursor moved (the store has it within a second)
 * @property {(cu: CatchUp) => void} [onCatchUp] a group's catch-up is done, after its replayed messages; recovered false: resync that group
 * @property {(w: Welcome) => void} [onWelcome] each accepted session; rejoin groups here
 * @property {(c: ControlFrame) => void} [onControl] every CONTROL frame: degraded, restored, drain, kick, …
 * @property {(from: Uint64, to: Uint64) => void} [onGap] inbox messages from..to were lost on the server (a flagged gap)
 * @property {(m: Message, why: "repeat" | "out_of_order") => void} [onDrop] a PUSH not handed to onMessage, and why
 * @property {(f: Frame) => void} [onFrame] every frame received, BATCHes unwrapped, before the client acts on it
 * @property {(url: string) => void} [onConnecting] before each connect attempt
 * @property {(err: Error) => void} [onDisconnect] after each connection ends, with why
 * @property {(err: unknown) => void} [onError] an exception thrown by a callback or the store: console.error
 * @property {number} [dedupeWindow] message ids remembered to drop repeats: 4096
 * @property {number} [backoffMin] reconnect backoff floor, ms: 250
 * @property {number} [backoffMax] reconnect backoff cap, ms: 30000
 * @property {number} [dialTimeout] ms for the WebSocket to open: 10000
 * @property {number} [handshakeTimeout] ms for WELCOME after HELLO: 10000
 * @property {() => number} [random] uniform in [0, 1), for jitter: Math.random
 */

const DRAIN_JITTER = 3000;
/** @type {Set<number>} */
const RETRYABLE = new Set([Code.unavailable, Code.draining, Code.rate_limited, Code.internal, Code.handshake_timeout]);
/** @type {Set<number>} */
const TOKEN_RETRYABLE = new Set([Code.token_expired, Code.token_not_yet_valid, Code.token_unknown_key]);

/**
 * Keeps a device connected. Create it, then call run(). Its methods may
 * be called at any time, from any callback.
 */
export class Client {
  /** @type {Core} */
  #core;

  /** @param {ClientOptions} options */
  constructor(options) {
    this.#core = new Core(options);
  }

  /** The current resume cursor. @returns {Cursor} */
  get cursor() {
    return this.#core.cursor;
  }

  /** Whether a session is open right now. */
  get connected() {
    return this.#core.connected;
  }

  /** The last WELCOME, or null before the first. @returns {Welcome | null} */
  get welcome() {
    return this.#core.welcome;
  }

  /**
   * The cursor of group's catch-up stream, or null when the client holds
   * none.
   * @param {string} group
   * @returns {GroupCursor | null}
   */
  groupCursor(group) {
    return this.#core.groupCursor(group);
  }

  /**
   * Connects and stays connected. The promise resolves when close() is
   * called, and rejects with KickedError when another connection of the
   * device took over, or with RefusedError when the server refused the
   * session for a reason a retry cannot fix (a bad token, an unknown
   * app). Calling it again returns the same promise.
   * @returns {Promise<void>}
   */
  run() {
    return this.#core.run();
  }

  /**
   * Ends the connection, dial or backoff wait in progress; run() then
   * resolves and nothing more is dialed.
   */
  close() {
    this.#core.close();
  }

  /**
   * Sends payload to business's webhook (UP) and resolves with its
   * answer; rejects with RefusedError (unknown_business, unavailable,
   * upstream_failed) or NotConnectedError.
   * @param {string} business
   * @param {Uint8Array | string} payload
   * @returns {Promise<Uint8Array>}
   */
  up(business, payload) {
    return this.#core.up(business, payload);
  }

  /**
   * Subscribes this connection to group, for an app that lets its devices
   * join groups (otherwise RefusedError join_refused). Such a membership
   * lasts for the connection: join again in onWelcome. The groups the
   * business adds the device or its user to are joined at every connect
   * without it.
   * @param {string} group
   * @returns {Promise<void>}
   */
  join(group) {
    return this.#core.join(group);
  }

  /**
   * Unsubscribes this connection from group.
   * @param {string} group
   * @returns {Promise<void>}
   */
  leave(group) {
    return this.#core.leave(group);
  }
}

/** The client's state and its reconnect loop, behind Client. */
class Core {
  /** @param {ClientOptions} options */
  constructor(options) {
    const o = { ...options };
    if (!o.url && !o.dispatch) throw new TypeError("pushd: url or dispatch is required");
    if (!o.app || !o.device) throw new TypeError("pushd: app and device are required");
    if (!o.token && !o.tokenFunc) throw new TypeError("pushd: token or tokenFunc is required");
    const WS = o.WebSocket ?? /** @type {any} */ (globalThis).WebSocket;
    if (!WS) throw new TypeError("pushd: no WebSocket here (Node.js 20: pass the ws package's WebSocket as the WebSocket option)");
    /** @type {WebSocketConstructor} */
    this._WS = WS;
    const browser = typeof document !== "undefined";
    this._o = o;
    this._url = o.url ?? "";
    this._platform = o.platform ?? (browser ? "web" : "node");
    this._version = o.version ?? `pushd-js/${VERSION}`;
    this._min = o.backoffMin ?? 250;
    this._max = o.backoffMax ?? 30000;
    this._random = o.random ?? Math.random;
    /** @type {CursorStore | null} */
    this._store = o.store !== undefined ? o.store : browser && globalThis.localStorage ? webStorageCursorStore() : memoryCursorStore();
    this._key = o.storeKey ?? `pushd:${o.app}:${o.device}:cursor`;
    /** @type {Cursor} */
    this._cursor = o.cursor ? { ...o.cursor } : { epoch: "", seq: 0 };
    this._ids = new IdWindow(o.dedupeWindow ?? 4096);
    this._groups = new GroupCursors(o.groupCursors ?? []);
    this._groupsKey = `${this._key}:groups`;
    /** @type {any} a pending write of the group cursors to the store */
    this._groupsTimer = null;
    /** @type {Session | null} the session that reached WELCOME, while it lasts */
    this._conn = null;
    /** @type {Session | null} the connection attempt or session in progress */
    this._live = null;
    /** @type {Welcome | null} */
    this._welcome = null;
    this._nextReq = 0;
    this._closed = false;
    /** @type {Promise<void> | null} */
    this._running = null;
    /** @type {(() => void) | null} ends the backoff wait in progress */
    this._wake = null;
    this._abort = new AbortController();
  }

  /** The current resume cursor. @returns {Cursor} */
  get cursor() {
    return { ...this._cursor };
  }

  /** Whether a session is open right now. */
  get connected() {
    return this._conn !== null;
  }

  /** The last WELCOME, or null before the first. @returns {Welcome | null} */
  get welcome() {
    return this._welcome;
  }

  /**
   * @param {string} group
   * @returns {GroupCursor | null}
   */
  groupCursor(group) {
    const st = this._groups.m.get(group);
    return st ? { group, epoch: st.epoch, seq: st.seq } : null;
  }

  /**
   * Notes a group cursor that moved: tells the app, and has the store
   * write the cursors within a second (group messages are not acked, so
   * a late write only makes the next catch-up replay more).
   * @param {GroupCursor} c
   */
  _groupMoved(c) {
    this._call(this._o.onGroupCursor, c);
    const store = this._store;
    if (!store?.setGroups || this._groupsTimer) return;
    this._groupsTimer = setTimeout(() => this._flushGroups(), 1000);
  }

  /** Writes the group cursors to the store now, if it keeps them. */
  _flushGroups() {
    clearTimeout(this._groupsTimer);
    this._groupsTimer = null;
    const store = this._store;
    if (store?.setGroups) this._call(() => /** @type {any} */ (store).setGroups(this._groupsKey, this._groups.all()));
  }

  /**
   * Connects and stays connected. The promise resolves when close() is
   * called, and rejects with KickedError when another connection of the
   * device took over, or with RefusedError when the server refused the
   * session for a reason a retry cannot fix (a bad token, an unknown
   * app). Calling it again returns the same promise.
   * @returns {Promise<void>}
   */
  run() {
    if (!this._running) {
      this._running = this._loop().finally(() => this._unlisten());
      this._running.catch(() => {}); // the caller's await reports it
    }
    return this._running;
  }

  /**
   * Ends the connection, dial or backoff wait in progress; run() then
   * resolves and nothing more is dialed.
   */
  close() {
    this._closed = true;
    if (this._groupsTimer) this._flushGroups();
    this._abort.abort();
    this._live?.stop(new ClosedError());
    this._wake?.();
  }

  /**
   * Sends payload to business's webhook (UP) and resolves with its
   * answer; rejects with RefusedError (unknown_business, unavailable,
   * upstream_failed) or NotConnectedError.
   * @param {string} business
   * @param {Uint8Array | string} payload
   * @returns {Promise<Uint8Array>}
   */
  async up(business, payload) {
    const p = typeof payload === "string" ? utf8Encoder.encode(payload) : payload;
    const r = await this._request((id) => ({ type: "UP", request: id, business, payload: p }));
    return r.payload;
  }

  /**
   * Subscribes this connection to group. Membership lasts for the
   * connection: join again in onWelcome.
   * @param {string} group
   * @returns {Promise<void>}
   */
  async join(group) {
    await this._request((id) => ({ type: "JOIN", request: id, group }));
  }

  /**
   * Unsubscribes this connection from group.
   * @param {string} group
   * @returns {Promise<void>}
   */
  async leave(group) {
    await this._request((id) => ({ type: "LEAVE", request: id, group }));
  }

  /**
   * @param {(id: number) => Frame} build
   * @returns {Promise<UpReplyFrame>}
   */
  _request(build) {
    const s = this._conn;
    if (!s) return Promise.reject(new NotConnectedError());
    const id = ++this._nextReq;
    return new Promise((resolve, reject) => {
      s.pending.set(id, { resolve, reject });
      s.send(build(id));
    });
  }
  async _loop() {
    this._listen();
    if (!this._o.cursor && this._store) {
      try {
        const c = await this._store.get(this._key);
        if (c) this._cursor = { epoch: c.epoch, seq: c.seq };
      } catch (e) {
        this._report(e);
      }
    }
    if (!this._o.groupCursors && this._store?.getGroups) {
      try {
        const gs = await this._store.getGroups(this._groupsKey);
        if (gs) this._groups = new GroupCursors(gs);
      } catch (e) {
        this._report(e);
      }
    }
    let cur = this._min; // the backoff bound: full jitter in [0, cur]
    const next = () => {
      const d = Math.floor(this._random() * (cur + 1));
      cur = Math.min(2 * cur, this._max);
      return d;
    };
    let redirects = 0; // sessions in a row that ended with CONTROL redirect
    let avoid = ""; // the URL to ask dispatch for an alternative to
    for (;;) {
      if (this._closed) return;
      let url = "";
      /** @type {Error} */
      let err;
      try {
        url = await this._target(avoid, next);
        err = await this._session(url);
      } catch (e) {
        err = e instanceof Error ? e : new Error(String(e));
      }
      this._call(this._o.onDisconnect, err);
      if (this._closed) return;
      if (err instanceof KickedError) throw err;
      if (err instanceof RefusedError && !this._retryable(err)) throw err;
      const end = err instanceof DisconnectError ? err : null;
      if (end?.welcomed) cur = this._min;
      let delay;
      if (end?.redirect?.now) {
        // The first redirect is followed at once; a server that keeps
        // redirecting gets the backoff, not a tight loop of connects.
        redirects++;
        if (redirects === 1) continue;
        delay = next();
      } else if (end?.redirect) {
        // A draining node sends all its devices away at once: spread
        // their arrival elsewhere over a few seconds.
        redirects = 0;
        next();
        delay = Math.floor(this._random() * DRAIN_JITTER);
      } else if (url && this._o.dispatch && nodeFailed(err)) {
        // The node is unreachable, lost, or not taking devices: ask
        // dispatch for another one soon. The backoff still grows, for
        // when dispatch has no other node to name.
        redirects = 0;
        avoid = url;
        next();
        delay = Math.floor(this._random() * (this._min + 1));
      } else {
        redirects = 0;
        delay = next();
      }
      await this._sleep(delay);
    }
  }

  /**
   * The URL to connect to: the configured one, or dispatch's answer. When
   * dispatch names the very node to avoid, the backoff is waited first.
   * @param {string} avoid
   * @param {() => number} backoff
   * @returns {Promise<string>}
   */
  async _target(avoid, backoff) {
    if (!this._o.dispatch) return this._url;
    let u;
    try {
      u = await this._o.dispatch(avoid, this._abort.signal);
    } catch (e) {
      throw new DisconnectError(`dispatch: ${e instanceof Error ? e.message : e}`, { noAttempt: true, cause: e });
    }
    if (avoid && u === avoid) await this._sleep(backoff());
    return u;
  }

  /**
   * Waits ms, or less when close() is called, the browser comes back
   * online, or a hidden page becomes visible.
   * @param {number} ms
   */
  _sleep(ms) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        this._wake = null;
        resolve(undefined);
      };
      const t = setTimeout(done, ms);
      this._wake = done;
      if (this._closed) done();
    });
  }

  /**
   * Runs one connection to url from dial to its end, and resolves with
   * why it ended.
   * @param {string} url
   * @returns {Promise<Error>}
   */
  async _session(url) {
    let token = this._o.token ?? "";
    if (this._o.tokenFunc) {
      try {
        token = await this._o.tokenFunc(this._abort.signal);
      } catch (e) {
        return new DisconnectError(`token: ${e instanceof Error ? e.message : e}`, { noAttempt: true, cause: e });
      }
    }
    if (this._closed) return new ClosedError();
    this._call(this._o.onConnecting, url);
    return new Promise((resolve) => {
      this._live = new Session(this, url, token, (why) => {
        this._live = null;
        resolve(why);
      });
    });
  }

  /** @param {RefusedError} e */
  _retryable(e) {
    return RETRYABLE.has(e.code) || (TOKEN_RETRYABLE.has(e.code) && !!this._o.tokenFunc);
  }

  /**
   * Adopts WELCOME's cursor (§9 item 5) and reports the session.
   * @param {WelcomeFrame} w
   */
  async _onWelcome(w) {
    const c = this._cursor;
    let next = c;
    if (w.epoch === "") {
      // The server keeps no inbox for this session: keep the cursor.
    } else if (w.epoch !== c.epoch) {
      next = { epoch: w.epoch, seq: w.acked };
    } else if (w.acked > c.seq) {
      // Acked on an earlier connection but not stored here: the server
      // will not replay those, and skipping them is no gap.
      next = { epoch: c.epoch, seq: w.acked };
    }
    if (next !== c) {
      this._cursor = next;
      const stored = this._persist(next);
      if (stored) await stored;
    }
    this._welcome = { session: w.session, node: w.node, recovered: w.recovered, epoch: w.epoch, heartbeat: Number(w.heartbeat) };
    this._call(this._o.onWelcome, this._welcome);
  }

  /** @param {Cursor} c */
  _persist(c) {
    return this._store ? this._call(() => /** @type {CursorStore} */ (this._store).set(this._key, c)) : undefined;
  }

  /**
   * Hands a message to the app unless it is a repeat, advances and
   * stores the cursor, and returns the seq to ack, or -1 for none (group
   * and unstored messages are not acked). Inbox messages are taken
   * strictly in sequence: a flagged jump is accepted and reported to
   * onGap; an unflagged one means a frame was lost on the way, so the
   * message is dropped and the cursor acked again, which the server
   * answers by resending in order.
   * @param {PushFrame} p
   * @returns {Uint64 | Promise<Uint64>}
   */
  _onPush(p) {
    const cur = this._cursor.seq;
    const inbox = p.seq != 0; // eslint-disable-line eqeqeq -- number or BigInt zero
    let deliver = true;
    /** @type {[Uint64, Uint64] | null} */
    let gap = null;
    if (inbox) {
      const expected = add(cur, 1);
      if (p.seq <= cur) {
        deliver = false;
      } else if (p.seq > expected && !((p.flags ?? 0) & FLAG_GAP)) {
        this._call(this._o.onDrop, message(p), "out_of_order");
        return cur; // a repeat of the last ack
      } else if (p.seq > expected) {
        gap = [expected, add(p.seq, -1)];
      }
    }
    if (deliver && !this._ids.add(p.id)) deliver = false;
    if (inbox && p.seq > cur) this._cursor = { epoch: this._cursor.epoch, seq: p.seq };
    const next = this._cursor;
    if (p.group && p.group_epoch) {
      const moved = this._groups.received(p.group, p.group_epoch, p.group_seq ?? 0);
      if (moved) this._groupMoved(moved);
    }
    if (gap) this._call(this._o.onGap, gap[0], gap[1]);
    const handled = deliver ? this._call(this._o.onMessage, message(p)) : this._call(this._o.onDrop, message(p), "repeat");
    if (!inbox) return handled ? handled.then(() => -1) : -1;
    // Stored, then told, then acked: only promises are waited for, so a
    // synchronous app and store cost no extra turn per message.
    const told = () => {
      const t = this._call(this._o.onCursor, { ...next });
      return t ? t.then(() => next.seq) : next.seq;
    };
    const store = () => {
      const s = this._persist(next);
      return s ? s.then(told) : told();
    };
    return handled ? handled.then(store) : store();
  }

  /**
   * Calls an app callback; an exception, thrown or rejected, goes to
   * onError. Returns a promise only when the callback returned one.
   * @param {Function | undefined} fn
   * @param {...any} args
   * @returns {Promise<unknown> | undefined}
   */
  _call(fn, ...args) {
    if (!fn) return undefined;
    try {
      const r = fn(...args);
      if (r && typeof r.then === "function") return Promise.resolve(r).catch((e) => this._report(e));
    } catch (e) {
      this._report(e);
    }
    return undefined;
  }

  /** @param {unknown} e */
  _report(e) {
    if (this._o.onError) {
      try {
        this._o.onError(e);
      } catch {
        // nothing left to tell
      }
    } else {
      console.error("pushd:", e);
    }
  }

  /** @param {string} addr */
  _redirectTo(addr) {
    if (addr && !this._o.dispatch) this._url = addr;
  }

  /**
   * In a browser, reconnect at once when the network comes back or a
   * hidden page becomes visible (§12).
   */
  _listen() {
    const win = /** @type {any} */ (globalThis);
    if (typeof win.addEventListener !== "function" || typeof document === "undefined") return;
    this._onOnline = () => this._wake?.();
    this._onVisible = () => {
      if (document.visibilityState !== "visible") return;
      if (this._conn) this._conn.checkAlive();
      else this._wake?.();
    };
    win.addEventListener("online", this._onOnline);
    document.addEventListener("visibilitychange", this._onVisible);
  }
  _unlisten() {
    if (this._onOnline) globalThis.removeEventListener("online", this._onOnline);
    if (this._onVisible) document.removeEventListener("visibilitychange", this._onVisible);
  }
}

/**
 * Whether a connection ended because its node failed the device (dial or
 * handshake failed, connection lost, node refusing for now) rather than
 * because of the device or the server's deliberate choice.
 * @param {Error} err
 */
function nodeFailed(err) {
  if (err instanceof RefusedError) return err.code === Code.unavailable || err.code === Code.draining;
  if (err instanceof DisconnectError) {
    if (err.noAttempt) return false;
    if (err.welcomed) return err.lost;
  }
  return true;
}

/**
 * @param {PushFrame} p
 * @returns {Message}
 */
function message(p) {
  return { id: p.id, seq: p.seq, business: p.business, priority: p.priority, created: p.created,
    group: p.group, groupEpoch: p.group_epoch ?? "", groupSeq: p.group_seq ?? 0, payload: p.payload, redelivered: !!((p.flags ?? 0) & FLAG_REDELIVERY) };
}

/**
 * a + k for a uint64 as a number or a BigInt.
 * @param {Uint64} a
 * @param {number} k
 * @returns {Uint64}
 */
function add(a, k) {
  if (typeof a === "number" && a + k <= MAX_SAFE) return a + k;
  return toUint64(BigInt(a) + BigInt(k));
}

/**
 * @param {bigint} v
 * @returns {Uint64}
 */
function toUint64(v) {
  return v <= BigInt(MAX_SAFE) ? Number(v) : v;
}

/** The most group cursors HELLO carries (§10.2): the most recently moved. */
const MAX_GROUP_CURSORS = 64;
/**
 * The most seqs a group cursor holds above its contiguous prefix: messages
 * of one group pushed through different nodes can arrive out of order, so
 * a cursor moves only over a run without holes, and gives up on a hole
 * (a message the server filtered out for this device) once this many
 * later seqs arrived; the next catch-up settles it.
 */
const MAX_AHEAD = 1024;

/** The group cursors (§10.2), as the Go SDK keeps them. */
class GroupCursors {
  /** @param {GroupCursor[]} initial */
  constructor(initial) {
    /** @type {Map<string, {epoch: string, seq: Uint64, ahead: Set<string>, moved: number}>} */
    this.m = new Map();
    this.moves = 0;
    for (const c of initial) {
      if (c.group && c.epoch) this.m.set(c.group, { epoch: c.epoch, seq: c.seq, ahead: new Set(), moved: ++this.moves });
    }
  }

  /** @returns {GroupCursor[]} every cursor, most recently moved first */
  all() {
    return [...this.m.entries()].sort((a, b) => b[1].moved - a[1].moved)
      .map(([group, st]) => ({ group, epoch: st.epoch, seq: st.seq }));
  }

  /** @returns {GroupCursor[]} what HELLO carries */
  hello() {
    return this.all().slice(0, MAX_GROUP_CURSORS);
  }

  /**
   * Notes a group message's position; returns the cursor when it moved.
   * @param {string} group
   * @param {string} epoch
   * @param {Uint64} seq
   * @returns {GroupCursor | null}
   */
  received(group, epoch, seq) {
    let st = this.m.get(group);
    if (!st || st.epoch !== epoch) {
      // A first message of this stream, or of a new epoch of it.
      st = { epoch, seq: add(seq, -1), ahead: new Set(), moved: 0 };
      this.m.set(group, st);
    }
    if (seq <= st.seq) return null;
    if (seq > add(st.seq, 1)) {
      st.ahead.add(String(seq));
      if (st.ahead.size <= MAX_AHEAD) return null;
      let low = seq;
      for (const s of st.ahead) if (BigInt(s) < BigInt(low)) low = toUint64(BigInt(s));
      st.seq = add(low, -1);
    }
    st.seq = add(st.seq, 1);
    st.ahead.delete(String(st.seq));
    while (st.ahead.delete(String(add(st.seq, 1)))) st.seq = add(st.seq, 1);
    st.moved = ++this.moves;
    return { group, epoch: st.epoch, seq: st.seq };
  }

  /**
   * Sets a group's cursor where its catch-up left it.
   * @param {string} group
   * @param {string} epoch
   * @param {Uint64} seq
   * @returns {GroupCursor}
   */
  caughtUp(group, epoch, seq) {
    let st = this.m.get(group);
    if (!st || st.epoch !== epoch) {
      st = { epoch, seq: 0, ahead: new Set(), moved: 0 };
      this.m.set(group, st);
    }
    if (seq > st.seq) st.seq = seq;
    for (const s of st.ahead) if (BigInt(s) <= BigInt(st.seq)) st.ahead.delete(s);
    while (st.ahead.delete(String(add(st.seq, 1)))) st.seq = add(st.seq, 1);
    st.moved = ++this.moves;
    return { group, epoch: st.epoch, seq: st.seq };
  }
}

/** The last n message ids: a set for lookup, a ring for eviction in arrival order. */
class IdWindow {
  /** @param {number} n */
  constructor(n) {
    /** @type {Set<string>} */
    this.set = new Set();
    /** @type {string[]} */
    this.ring = new Array(n).fill("");
    this.next = 0;
  }
  /**
   * Records id and reports false when it was seen already. An empty id
   * names no message: never a repeat, never recorded.
   * @param {string} id
   */
  add(id) {
    if (id === "") return true;
    if (this.set.has(id)) return false;
    const old = this.ring[this.next];
    if (old !== "") this.set.delete(old);
    this.ring[this.next] = id;
    this.next = (this.next + 1) % this.ring.length;
    this.set.add(id);
    return true;
  }
}

/**
 * One connection, from dial to its end. Frames are decoded as they
 * arrive and handled one at a time, in order, by pump.
 */
class Session {
  /**
   * @param {Core} c
   * @param {string} url
   * @param {string} token
   * @param {(why: Error) => void} done
   */
  constructor(c, url, token, done) {
    this.c = c;
    this.url = url;
    this.done = done;
    /** @type {Map<number, {resolve: (r: UpReplyFrame) => void, reject: (e: Error) => void}>} */
    this.pending = new Map();
    /** @type {(Frame | Error)[]} frames received, not handled yet */
    this.queue = [];
    this.busy = false;
    this.welcomed = false;
    this.finished = false;
    /** @type {Error | null} why the session must end, once the frame being handled is done */
    this.stopWith = null;
    /** @type {{code: number, reason: string} | null} */
    this.closed = null;
    this.hb = 30000;
    this.lastRead = Date.now();
    /** @type {any} */
    this.timer = null;
    /** @type {any} */
    this.pinger = null;
    /** @type {WebSocketLike} */
    let ws;
    try {
      ws = new c._WS(url);
    } catch (e) {
      this.ws = null;
      queueMicrotask(() => this.finish(new DisconnectError(`connect ${url}: ${e instanceof Error ? e.message : e}`, { cause: e })));
      return;
    }
    this.ws = ws;
    ws.binaryType = "arraybuffer";
    this.timer = setTimeout(() => this.stop(new DisconnectError(`connect ${url}: timed out`)), c._o.dialTimeout ?? 10000);
    ws.onopen = () => {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.stop(new DisconnectError("no WELCOME within the handshake timeout")), c._o.handshakeTimeout ?? 10000);
      const cur = c._cursor;
      this.send({ type: "HELLO", token, app: c._o.app, device: c._o.device, platform: c._platform, version: c._version,
        businesses: c._o.businesses ?? [], epoch: cur.epoch, seq: cur.epoch === "" ? 0 : cur.seq,
        caps: (c._o.lz4 ? CAP_LZ4 : 0) | CAP_GROUP_CURSORS, group_cursors: c._groups.hello() });
    };
    ws.onmessage = (ev) => {
      this.lastRead = Date.now();
      if (!(ev.data instanceof ArrayBuffer)) {
        this.queue.push(new DisconnectError("text message from the server", { welcomed: this.welcomed }));
      } else {
        try {
          const f = decodeMessage(new Uint8Array(ev.data));
          this.replies(f);
          this.queue.push(f);
        } catch (e) {
          this.queue.push(new DisconnectError(`bad frame from the server: ${e instanceof Error ? e.message : e}`, { welcomed: this.welcomed, cause: e }));
        }
      }
      this.pump();
    };
    ws.onclose = (ev) => {
      this.closed = { code: ev.code, reason: ev.reason };
      this.pump();
    };
    ws.onerror = () => {}; // a close event follows
  }

  /**
   * Answers requests as soon as their replies arrive, whatever the frames
   * ahead of them: an onMessage may be waiting for one.
   * @param {Frame} f
   */
  replies(f) {
    for (const x of f.type === "BATCH" ? f.frames : [f]) {
      if (x.type !== "UP_REPLY") continue;
      const id = Number(x.request);
      const p = this.pending.get(id);
      if (!p) continue;
      this.pending.delete(id);
      if (x.code === Code.ok) p.resolve(x);
      else p.reject(new RefusedError(x.code, utf8Decoder.decode(x.payload)));
    }
  }

  /** @param {Frame} f */
  send(f) {
    if (!this.ws || this.ws.readyState !== 1) return;
    try {
      this.ws.send(encode(f));
    } catch (e) {
      this.stop(new DisconnectError(`write: ${e instanceof Error ? e.message : e}`, { welcomed: this.welcomed, lost: true, cause: e }));
    }
  }

  /** @param {Uint64} seq */
  ack(seq) {
    this.send({ type: "ACK", seq });
  }

  /**
   * Ends the session once the frame being handled is done.
   * @param {Error} why
   */
  stop(why) {
    if (this.finished) return;
    this.stopWith ??= why;
    if (!this.busy) this.finish(this.stopWith);
  }

  async pump() {
    if (this.busy || this.finished) return;
    this.busy = true;
    try {
      while (!this.stopWith && this.queue.length > 0) {
        const f = /** @type {Frame | Error} */ (this.queue.shift());
        if (f instanceof Error) this.stopWith = f;
        else await this.handle(f);
      }
    } catch (e) {
      this.stopWith ??= e instanceof Error ? e : new Error(String(e));
    } finally {
      this.busy = false;
    }
    if (!this.stopWith && this.closed && this.queue.length === 0) {
      const { code, reason } = this.closed;
      const what = this.welcomed ? "connection lost" : "connection closed before WELCOME";
      this.stopWith = new DisconnectError(`${what}: close ${code}${reason ? " " + reason : ""}`, { welcomed: this.welcomed, lost: true, closeCode: code });
    }
    if (this.stopWith) this.finish(this.stopWith);
  }

  /** @param {Frame} f */
  async handle(f) {
    const c = this.c;
    if (this.welcomed) return this.frame(f);
    // WELCOME may come first in a BATCH with the first replayed
    // messages: take it from the front and handle the rest after.
    /** @type {Frame[]} */
    let rest = [];
    if (f.type === "BATCH") {
      if (f.frames.length === 0) return void (this.stopWith = new DisconnectError("empty BATCH instead of WELCOME"));
      [f, ...rest] = f.frames;
    }
    c._call(c._o.onFrame, f);
    if (f.type === "ERROR") return void (this.stopWith = new RefusedError(f.code, f.message));
    if (f.type !== "WELCOME") return void (this.stopWith = new DisconnectError(`expected WELCOME, got ${f.type}`));
    clearTimeout(this.timer);
    this.welcomed = true;
    c._conn = this;
    await c._onWelcome(f);
    // Heartbeats: PING every interval; the server answers each, so
    // silence past two and a half intervals means the path is dead.
    this.hb = Number(f.heartbeat) || 30000;
    this.pinger = setInterval(() => this.send({ type: "PING", time: Date.now() }), this.hb);
    this.timer = setInterval(() => this.checkAlive(), Math.max(this.hb / 4, 250));
    if (rest.length > 0) await this.frame({ type: "BATCH", flags: 0, frames: rest });
  }

  /** Ends a session that has heard nothing for 2.5 heartbeat intervals. */
  checkAlive() {
    if (Date.now() - this.lastRead > 2.5 * this.hb) {
      this.stop(new DisconnectError("no frame from the server for 2.5 heartbeat intervals", { welcomed: true, lost: true }));
    }
  }

  /** @param {Frame} f */
  async frame(f) {
    const c = this.c;
    if (f.type !== "BATCH") c._call(c._o.onFrame, f);
    switch (f.type) {
      case "BATCH": {
        // One ack for the whole batch: the highest cursor it reached. If
        // a frame was missing in it, the ack is sent twice so the server
        // sees a repeated ack and resends at once (§9 item 3).
        /** @type {Uint64} */
        let ackTo = 0;
        let ackAny = false;
        let jumped = false;
        for (const inner of f.frames) {
          if (this.stopWith) break;
          if (inner.type !== "PUSH") {
            await this.frame(inner);
            continue;
          }
          c._call(c._o.onFrame, inner);
          let seq = c._onPush(inner);
          if (typeof seq === "object") seq = await seq;
          if (seq === -1) continue;
          if (seq > ackTo) ackTo = seq;
          ackAny = true;
          jumped ||= seq < inner.seq && !((inner.flags ?? 0) & FLAG_GAP);
        }
        if (ackAny) {
          this.ack(ackTo);
          if (jumped) this.ack(ackTo);
        }
        return;
      }
      case "PUSH": {
        let seq = c._onPush(f);
        if (typeof seq === "object") seq = await seq;
        if (seq !== -1) this.ack(seq);
        return;
      }
      case "PONG":
      case "UP_REPLY": // answered on arrival (replies)
        return;
      case "CATCHUP": {
        const moved = c._groups.caughtUp(f.group, f.epoch, f.seq);
        c._groupMoved(moved);
        c._call(c._o.onCatchUp, { group: f.group, recovered: f.recovered, epoch: f.epoch, seq: f.seq });
        return;
      }
      case "CONTROL":
        c._call(c._o.onControl, f);
        switch (f.kind) {
          case ControlKind.kick:
            this.stopWith = new KickedError(f.reason);
            return;
          case ControlKind.redirect:
            c._redirectTo(f.addr);
            this.stopWith = new DisconnectError(`server asked to reconnect to ${f.addr}`, { redirect: { addr: f.addr, now: true } });
            return;
          case ControlKind.drain:
            c._redirectTo(f.addr);
            this.stopWith = new DisconnectError(`node draining: reconnect to ${f.addr || "another node"}`, { redirect: { addr: f.addr, now: false } });
            return;
          case ControlKind.resync:
            this.stopWith = new DisconnectError("server asked to resync", { welcomed: true });
            return;
        }
        return; // degraded, restored and unknown kinds: onControl only
      case "ERROR":
        // After WELCOME an ERROR ends this connection (missed heartbeat,
        // protocol error), not the device's right to connect: reconnect.
        this.stopWith = new DisconnectError(`server closed the session: ${codeName(f.code)} (${f.code}): ${f.message}`, { welcomed: true });
        return;
      default:
        this.stopWith = new DisconnectError(`unexpected ${f.type} frame from the server`, { welcomed: true });
    }
  }

  /** @param {Error} why */
  finish(why) {
    if (this.finished) return;
    this.finished = true;
    clearTimeout(this.timer);
    clearInterval(this.timer);
    clearInterval(this.pinger);
    const ws = this.ws;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      ws.onerror = () => {}; // some WebSocket implementations report a close before open as an error
      try {
        if (ws.readyState < 2) ws.close(1000);
      } catch {
        // already closing
      }
    }
    if (this.c._conn === this) this.c._conn = null;
    for (const p of this.pending.values()) p.reject(new NotConnectedError());
    this.pending.clear();
    this.done(why);
  }
}
