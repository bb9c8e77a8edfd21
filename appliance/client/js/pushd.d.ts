/**
 * The stable name of an error code ("token_expired"), or "code_N" for a
 * code this version does not know.
 * @param {number} code
 * @returns {string}
 */
export function codeName(code: number): string;
/**
 * The name of a CONTROL kind ("drain"), or "kind_N" for one this version
 * does not know.
 * @param {number} kind
 * @returns {string}
 */
export function controlKindName(kind: number): string;
/**
 * Encodes one frame, header included. A BATCH is written uncompressed.
 * @param {Frame} f
 * @returns {Uint8Array}
 */
export function encode(f: Frame): Uint8Array;
/**
 * Decodes the frame at the front of b and returns it with the number of
 * bytes it took. Bytes after a type's last known field are ignored
 * (§2.3). A BATCH is unwrapped into `frames`, its lz4 block decompressed.
 * @param {Uint8Array} b
 * @param {number} [max] the largest body (and lz4 batch content) accepted
 * @returns {[Frame, number]}
 * @throws {DecodeError}
 */
export function decode(b: Uint8Array, max?: number): [Frame, number];
/**
 * Decodes b as one WebSocket message: exactly one frame, maybe a BATCH
 * (§1.1).
 * @param {Uint8Array} b
 * @param {number} [max]
 * @returns {Frame}
 * @throws {DecodeError}
 */
export function decodeMessage(b: Uint8Array, max?: number): Frame;
/**
 * Decompresses one raw lz4 block (no frame header) that must expand to
 * exactly n bytes.
 * @param {Uint8Array} src
 * @param {number} n
 * @returns {Uint8Array}
 * @throws {DecodeError}
 */
export function lz4DecodeBlock(src: Uint8Array, n: number): Uint8Array;
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
export function webStorageCursorStore(storage?: Storage): CursorStore;
/**
 * A CursorStore in memory: cursors last as long as the process or page.
 * @returns {CursorStore}
 */
export function memoryCursorStore(): CursorStore;
/**
 * A device id for this browser, made once and kept in storage under
 * "pushd:<app>:device" (§12: an id is 1–128 letters, digits and ._:-).
 * @param {string} app
 * @param {Storage} [storage]
 * @returns {string}
 */
export function persistentDeviceId(app: string, storage?: Storage): string;
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
export function dispatchFrom(bases: string[], app: string, device: string, options?: {
    fetch?: typeof fetch;
    timeout?: number;
}): (avoid: string, signal?: AbortSignal) => Promise<string>;
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
export const VERSION: "0.1.0";
/** Frame type numbers (§4). */
export const FrameType: Readonly<{
    HELLO: 1;
    WELCOME: 2;
    PUSH: 3;
    ACK: 4;
    PING: 5;
    PONG: 6;
    UP: 7;
    UP_REPLY: 8;
    JOIN: 9;
    LEAVE: 10;
    CONTROL: 11;
    ERROR: 12;
    BATCH: 13;
    CATCHUP: 14;
}>;
/** PUSH flag: the server sent this PUSH before on this connection (§5). */
export const FLAG_REDELIVERY: 1;
/** PUSH flag: this PUSH's seq skips past lost messages on purpose (§5). */
export const FLAG_GAP: 2;
/** PUSH flag: the body carries the message's position in its group's catch-up stream (§4.3). */
export const FLAG_GROUP_SEQ: 4;
/** BATCH flag: the body is an lz4 block (§4.11). */
export const FLAG_LZ4: 1;
/** HELLO flag: the body carries the device's group cursors (§4.1). */
export const FLAG_GROUP_CURSORS: 1;
/** HELLO/WELCOME capability: lz4-compressed BATCH frames (§6.1). */
export const CAP_LZ4: 1;
/** HELLO/WELCOME capability: group cursors and CATCHUP frames (§6.1, §10.2). */
export const CAP_GROUP_CURSORS: 2;
/** Length of a frame header. */
export const HEADER_LEN: 7;
/** The largest frame or WebSocket message the client accepts: 4 MiB, as the Go SDK. */
export const MAX_INBOUND: number;
/** Error codes of ERROR and UP_REPLY frames, by name (§7). */
export const Code: Readonly<{
    ok: 0;
    bad_frame: 1;
    unsupported_version: 2;
    frame_too_large: 3;
    protocol_violation: 4;
    slow_consumer: 5;
    heartbeat_missed: 6;
    handshake_timeout: 100;
    token_malformed: 101;
    token_expired: 102;
    token_not_yet_valid: 103;
    token_bad_signature: 104;
    token_wrong_app: 105;
    token_wrong_device: 106;
    token_unknown_key: 107;
    unknown_app: 108;
    token_lifetime_too_long: 109;
    origin_forbidden: 110;
    rate_limited: 111;
    bad_hello: 112;
    unknown_business: 200;
    too_many_groups: 201;
    bad_group: 202;
    upstream_failed: 203;
    join_refused: 204;
    internal: 500;
    unavailable: 501;
    draining: 502;
}>;
/** CONTROL kinds (§6.3). */
export const ControlKind: Readonly<{
    kick: 1;
    degraded: 2;
    restored: 3;
    drain: 4;
    redirect: 5;
    resync: 6;
}>;
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
    constructor(message: string, code?: number, truncated?: boolean);
    code: number;
    truncated: boolean;
}
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
    constructor(code: number, message: string);
    code: number;
    codeName: string;
    detail: string;
}
/** Another connection of this device took over (CONTROL kick). The client does not reconnect. */
export class KickedError extends Error {
    /** @param {string} [reason] */
    constructor(reason?: string);
}
/** A request (up, join, leave) made between connections, or whose connection ended before its answer. */
export class NotConnectedError extends Error {
    constructor();
}
/** close() was called. */
export class ClosedError extends Error {
    constructor();
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
    constructor(message: string, o?: {
        welcomed?: boolean;
        lost?: boolean;
        noAttempt?: boolean;
        redirect?: {
            addr: string;
            now: boolean;
        };
        closeCode?: number;
        cause?: unknown;
    });
    welcomed: boolean;
    lost: boolean;
    noAttempt: boolean;
    redirect: {
        addr: string;
        now: boolean;
    } | undefined;
    closeCode: number | undefined;
    cause: unknown;
}
/**
 * Keeps a device connected. Create it, then call run(). Its methods may
 * be called at any time, from any callback.
 */
export class Client {
    /** @param {ClientOptions} options */
    constructor(options: ClientOptions);
    /** The current resume cursor. @returns {Cursor} */
    get cursor(): Cursor;
    /** Whether a session is open right now. */
    get connected(): boolean;
    /** The last WELCOME, or null before the first. @returns {Welcome | null} */
    get welcome(): Welcome | null;
    /**
     * The cursor of group's catch-up stream, or null when the client holds
     * none.
     * @param {string} group
     * @returns {GroupCursor | null}
     */
    groupCursor(group: string): GroupCursor | null;
    /**
     * Connects and stays connected. The promise resolves when close() is
     * called, and rejects with KickedError when another connection of the
     * device took over, or with RefusedError when the server refused the
     * session for a reason a retry cannot fix (a bad token, an unknown
     * app). Calling it again returns the same promise.
     * @returns {Promise<void>}
     */
    run(): Promise<void>;
    /**
     * Ends the connection, dial or backoff wait in progress; run() then
     * resolves and nothing more is dialed.
     */
    close(): void;
    /**
     * Sends payload to business's webhook (UP) and resolves with its
     * answer; rejects with RefusedError (unknown_business, unavailable,
     * upstream_failed) or NotConnectedError.
     * @param {string} business
     * @param {Uint8Array | string} payload
     * @returns {Promise<Uint8Array>}
     */
    up(business: string, payload: Uint8Array | string): Promise<Uint8Array>;
    /**
     * Subscribes this connection to group, for an app that lets its devices
     * join groups (otherwise RefusedError join_refused). Such a membership
     * lasts for the connection: join again in onWelcome. The groups the
     * business adds the device or its user to are joined at every connect
     * without it.
     * @param {string} group
     * @returns {Promise<void>}
     */
    join(group: string): Promise<void>;
    /**
     * Unsubscribes this connection from group.
     * @param {string} group
     * @returns {Promise<void>}
     */
    leave(group: string): Promise<void>;
    #private;
}
/**
 * The resume position of a device: the inbox epoch and the last inbox
 * sequence number handled.
 */
export type Cursor = {
    epoch: string;
    seq: Uint64;
};
/**
 * Where the client keeps the cursor across restarts and page reloads.
 * Either method may return a promise; set must not resolve before the
 * cursor is stored: the client acks only after it. getGroups and
 * setGroups keep the group cursors (§10.2) the same way; a store without
 * them keeps those in memory only, so after a restart the device catches
 * up in none of its groups.
 */
export type CursorStore = {
    get(key: string): Cursor | null | undefined | Promise<Cursor | null | undefined>;
    set(key: string, cursor: Cursor): void | Promise<void>;
    getGroups?(key: string): GroupCursor[] | null | undefined | Promise<GroupCursor[] | null | undefined>;
    setGroups?(key: string, cursors: GroupCursor[]): void | Promise<void>;
};
/**
 * An unsigned 64-bit integer: a number up to 2^53-1, a BigInt above.
 */
export type Uint64 = number | bigint;
/**
 * A decoded or to-be-encoded frame. Fields are named as in the tables of
 * docs/protocol.md §4; `flags` is the header's flags byte; bytes fields
 * are Uint8Arrays.
 */
export type GroupCursor = {
    group: string;
    epoch: string;
    seq: Uint64;
};
/**
 * A decoded or to-be-encoded frame. Fields are named as in the tables of
 * docs/protocol.md §4; `flags` is the header's flags byte; bytes fields
 * are Uint8Arrays.
 */
export type HelloFrame = {
    type: "HELLO";
    flags?: number;
    token: string;
    app: string;
    device: string;
    platform: string;
    version: string;
    businesses: string[];
    epoch: string;
    seq: Uint64;
    caps: Uint64;
    group_cursors?: GroupCursor[];
};
/**
 * A decoded or to-be-encoded frame. Fields are named as in the tables of
 * docs/protocol.md §4; `flags` is the header's flags byte; bytes fields
 * are Uint8Arrays.
 */
export type WelcomeFrame = {
    type: "WELCOME";
    flags?: number;
    session: string;
    node: string;
    heartbeat: Uint64;
    recovered: boolean;
    epoch: string;
    acked: Uint64;
    max_frame: Uint64;
    caps: Uint64;
};
/**
 * A decoded or to-be-encoded frame. Fields are named as in the tables of
 * docs/protocol.md §4; `flags` is the header's flags byte; bytes fields
 * are Uint8Arrays.
 */
export type PushFrame = {
    type: "PUSH";
    flags?: number;
    seq: Uint64;
    id: string;
    business: string;
    priority: number;
    created: Uint64;
    group: string;
    payload: Uint8Array;
    group_epoch?: string;
    group_seq?: Uint64;
};
/**
 * A decoded or to-be-encoded frame. Fields are named as in the tables of
 * docs/protocol.md §4; `flags` is the header's flags byte; bytes fields
 * are Uint8Arrays.
 */
export type AckFrame = {
    type: "ACK";
    flags?: number;
    seq: Uint64;
};
/**
 * A decoded or to-be-encoded frame. Fields are named as in the tables of
 * docs/protocol.md §4; `flags` is the header's flags byte; bytes fields
 * are Uint8Arrays.
 */
export type PingFrame = {
    type: "PING" | "PONG";
    flags?: number;
    time: Uint64;
};
/**
 * A decoded or to-be-encoded frame. Fields are named as in the tables of
 * docs/protocol.md §4; `flags` is the header's flags byte; bytes fields
 * are Uint8Arrays.
 */
export type UpFrame = {
    type: "UP";
    flags?: number;
    request: Uint64;
    business: string;
    payload: Uint8Array;
};
/**
 * A decoded or to-be-encoded frame. Fields are named as in the tables of
 * docs/protocol.md §4; `flags` is the header's flags byte; bytes fields
 * are Uint8Arrays.
 */
export type UpReplyFrame = {
    type: "UP_REPLY";
    flags?: number;
    request: Uint64;
    code: number;
    payload: Uint8Array;
};
/**
 * A decoded or to-be-encoded frame. Fields are named as in the tables of
 * docs/protocol.md §4; `flags` is the header's flags byte; bytes fields
 * are Uint8Arrays.
 */
export type GroupFrame = {
    type: "JOIN" | "LEAVE";
    flags?: number;
    request: Uint64;
    group: string;
};
/**
 * A decoded or to-be-encoded frame. Fields are named as in the tables of
 * docs/protocol.md §4; `flags` is the header's flags byte; bytes fields
 * are Uint8Arrays.
 */
export type ControlFrame = {
    type: "CONTROL";
    flags?: number;
    kind: number;
    priority: number;
    reason: string;
    addr: string;
    businesses: string[];
};
/**
 * A decoded or to-be-encoded frame. Fields are named as in the tables of
 * docs/protocol.md §4; `flags` is the header's flags byte; bytes fields
 * are Uint8Arrays.
 */
export type ErrorFrame = {
    type: "ERROR";
    flags?: number;
    code: number;
    request: Uint64;
    message: string;
};
/**
 * A decoded or to-be-encoded frame. Fields are named as in the tables of
 * docs/protocol.md §4; `flags` is the header's flags byte; bytes fields
 * are Uint8Arrays.
 */
export type BatchFrame = {
    type: "BATCH";
    flags?: number;
    frames: Frame[];
};
/**
 * A decoded or to-be-encoded frame. Fields are named as in the tables of
 * docs/protocol.md §4; `flags` is the header's flags byte; bytes fields
 * are Uint8Arrays.
 */
export type CatchUpFrame = {
    type: "CATCHUP";
    flags?: number;
    group: string;
    recovered: boolean;
    epoch: string;
    seq: Uint64;
};
/**
 * A decoded or to-be-encoded frame. Fields are named as in the tables of
 * docs/protocol.md §4; `flags` is the header's flags byte; bytes fields
 * are Uint8Arrays.
 */
export type Frame = HelloFrame | WelcomeFrame | PushFrame | AckFrame | PingFrame | UpFrame | UpReplyFrame | GroupFrame | ControlFrame | ErrorFrame | BatchFrame | CatchUpFrame;
/**
 * A message handed to onMessage.
 */
export type Message = {
    /**
     * global message id
     */
    id: string;
    /**
     * inbox sequence number; 0 for group, broadcast and unstored messages
     */
    seq: Uint64;
    business: string;
    /**
     * 1 low, 2 normal, 3 high
     */
    priority: number;
    /**
     * unix milliseconds when the push API accepted it
     */
    created: Uint64;
    /**
     * the group of a group message; "" otherwise
     */
    group: string;
    /**
     * with groupSeq, the message's place in its group's catch-up stream (§10.2); "" and 0 without one
     */
    groupEpoch: string;
    groupSeq: Uint64;
    payload: Uint8Array;
    /**
     * the server sent it before; it is still handed over once
     */
    redelivered: boolean;
};
/**
 * Where a group's catch-up left the device (§10.2): the messages after its
 * cursor came before, and recovered false says some may be lost.
 */
export type CatchUp = {
    group: string;
    recovered: boolean;
    epoch: string;
    seq: Uint64;
};
/**
 * An accepted session, as onWelcome gets it.
 */
export type Welcome = {
    session: string;
    node: string;
    /**
     * false: messages after the cursor were lost (trimmed, expired, inbox lost): resync the app
     */
    recovered: boolean;
    epoch: string;
    /**
     * ms between PINGs
     */
    heartbeat: number;
};
/**
 * The constructor of a WebSocket: the browser's, or the `ws` package's
 * in Node.js.
 */
export type WebSocketConstructor = new (url: string) => WebSocketLike;
/**
 * The constructor of a WebSocket: the browser's, or the `ws` package's
 * in Node.js.
 */
export type WebSocketLike = {
    binaryType: string;
    readyState: number;
    send(data: Uint8Array): void;
    close(code?: number, reason?: string): void;
    onopen: ((ev: any) => void) | null;
    onmessage: ((ev: {
        data: any;
    }) => void) | null;
    onclose: ((ev: {
        code: number;
        reason: string;
    }) => void) | null;
    onerror: ((ev: any) => void) | null;
};
/**
 * Options of a Client. Every field says what leaving it out means.
 */
export type ClientOptions = {
    /**
     * the node's WebSocket URL, ws://host:port/v1/ws or wss://…; required unless dispatch is set
     */
    url?: string | undefined;
    /**
     * called before every connect to choose the URL
     * (see dispatchFrom); avoid is the URL the previous attempt failed on, "" otherwise
     */
    dispatch?: ((avoid: string, signal?: AbortSignal) => Promise<string>) | undefined;
    app: string;
    device: string;
    /**
     * the device token; required unless tokenFunc is set
     */
    token?: string | undefined;
    /**
     * called for a fresh token before each connect;
     * with it, token_expired, token_not_yet_valid and token_unknown_key refusals are retried
     */
    tokenFunc?: ((signal?: AbortSignal) => string | Promise<string>) | undefined;
    /**
     * HELLO platform: "web" in a browser, "node" otherwise
     */
    platform?: string | undefined;
    /**
     * HELLO version: "pushd-js/VERSION"
     */
    version?: string | undefined;
    /**
     * HELLO businesses: none
     */
    businesses?: string[] | undefined;
    /**
     * offer lz4-compressed batches (CapLZ4): not offered
     */
    lz4?: boolean | undefined;
    /**
     * where the cursor is kept: localStorage in a browser, memory otherwise; null: nowhere
     */
    store?: CursorStore | null | undefined;
    /**
     * the cursor's key in the store: "pushd:<app>:<device>:cursor"
     */
    storeKey?: string | undefined;
    /**
     * where to resume; overrides the store's cursor: the store's, else a fresh install
     */
    cursor?: Cursor | undefined;
    /**
     * globalThis.WebSocket
     */
    WebSocket?: WebSocketConstructor | undefined;
    /**
     * each message, once, in order; the ack waits for its promise
     */
    onMessage?: ((m: Message) => void | Promise<void>) | undefined;
    /**
     * the new cursor, after the store has it and before the ack
     */
    onCursor?: ((c: Cursor) => void | Promise<void>) | undefined;
    /**
     * where to resume the groups' catch-up streams; overrides the store's: the store's, else none
     */
    groupCursors?: GroupCursor[] | undefined;
    /**
     * a group's cursor moved (the store has it within a second)
     */
    onGroupCursor?: ((c: GroupCursor) => void) | undefined;
    /**
     * a group's catch-up is done, after its replayed messages; recovered false: resync that group
     */
    onCatchUp?: ((cu: CatchUp) => void) | undefined;
    /**
     * each accepted session; rejoin groups here
     */
    onWelcome?: ((w: Welcome) => void) | undefined;
    /**
     * every CONTROL frame: degraded, restored, drain, kick, …
     */
    onControl?: ((c: ControlFrame) => void) | undefined;
    /**
     * inbox messages from..to were lost on the server (a flagged gap)
     */
    onGap?: ((from: Uint64, to: Uint64) => void) | undefined;
    /**
     * a PUSH not handed to onMessage, and why
     */
    onDrop?: ((m: Message, why: "repeat" | "out_of_order") => void) | undefined;
    /**
     * every frame received, BATCHes unwrapped, before the client acts on it
     */
    onFrame?: ((f: Frame) => void) | undefined;
    /**
     * before each connect attempt
     */
    onConnecting?: ((url: string) => void) | undefined;
    /**
     * after each connection ends, with why
     */
    onDisconnect?: ((err: Error) => void) | undefined;
    /**
     * an exception thrown by a callback or the store: console.error
     */
    onError?: ((err: unknown) => void) | undefined;
    /**
     * message ids remembered to drop repeats: 4096
     */
    dedupeWindow?: number | undefined;
    /**
     * reconnect backoff floor, ms: 250
     */
    backoffMin?: number | undefined;
    /**
     * reconnect backoff cap, ms: 30000
     */
    backoffMax?: number | undefined;
    /**
     * ms for the WebSocket to open: 10000
     */
    dialTimeout?: number | undefined;
    /**
     * ms for WELCOME after HELLO: 10000
     */
    handshakeTimeout?: number | undefined;
    /**
     * uniform in [0, 1), for jitter: Math.random
     */
    random?: (() => number) | undefined;
};
