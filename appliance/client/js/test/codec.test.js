// The codec against docs/protocol.md: every example of the document, as
// appliance/wire/testdata/conformance.json holds them (the same set the Go
// codec is checked with), decoded and encoded.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { decode, decodeMessage, encode, lz4DecodeBlock, DecodeError, Code, FLAG_LZ4 } from "../pushd.js";

const fixture = JSON.parse(readFileSync(new URL("../../../wire/testdata/conformance.json", import.meta.url), "utf8"));
const hex = (b) => Buffer.from(b).toString("hex");
const unhex = (s) => new Uint8Array(Buffer.from(s, "hex"));
const bytesFields = new Set(["payload"]);

// fromFixture turns an example's fields into what the codec takes and
// gives: bytes fields as Uint8Array, integers above 2^53-1 as BigInt.
function fromFixture(type, fields) {
  const f = { type, flags: fields.flags ?? 0 };
  for (const [k, v] of Object.entries(fields)) {
    if (k === "flags" || k === "type") continue;
    if (k === "frames") f.frames = v.map((x) => fromFixture(x.type, x));
    else if (bytesFields.has(k)) f[k] = new TextEncoder().encode(v);
    else if (typeof v === "string" && /^\d{16,}$/.test(v)) f[k] = BigInt(v);
    else f[k] = v;
  }
  return f;
}

test("the fixture holds every frame type", () => {
  const types = new Set(fixture.frames.map((f) => f.type));
  assert.equal(types.size, 14, [...types].join(" "));
  assert.ok(fixture.frames.length >= 20);
});

for (const ex of fixture.frames) {
  test(`conformance ${ex.name} ${ex.type}${ex.decode_only ? " (decode only)" : ""}`, () => {
    const b = unhex(ex.hex);
    const want = fromFixture(ex.type, ex.fields);
    const [got, n] = decode(b);
    assert.equal(n, b.length);
    assert.deepEqual(got, want);
    assert.deepEqual(decodeMessage(b), want);
    if (ex.decode_only) return;
    if (ex.type === "BATCH" && want.flags & FLAG_LZ4) {
      // Another compressor may write another valid block (the fixture's
      // conventions): round-trip through this test's own, and check that
      // the frames inside encode to the decompressed bytes.
      const inner = encode({ type: "BATCH", frames: want.frames }).subarray(7);
      const again = decodeMessage(lz4Batch(inner));
      assert.deepEqual(again, want);
      const body = b.subarray(7);
      const [ulen, k] = readUvarint(body);
      assert.equal(hex(lz4DecodeBlock(body.subarray(k), ulen)), hex(inner));
      return;
    }
    assert.equal(hex(encode(want)), ex.hex);
  });
}

for (const u of fixture.uvarints) {
  test(`uvarint ${u.value} = ${u.hex}`, () => {
    const big = BigInt(u.value);
    const value = big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
    // An ACK carries one uvarint: the simplest frame to hold one.
    const body = unhex(u.hex);
    const frame = new Uint8Array([1, 4, 0, 0, 0, 0, body.length, ...body]);
    assert.deepEqual(decodeMessage(frame), { type: "ACK", flags: 0, seq: value });
    if (!u.decode_only) {
      assert.equal(hex(encode({ type: "ACK", seq: value }).subarray(7)), u.hex);
      assert.equal(hex(encode({ type: "ACK", seq: big }).subarray(7)), u.hex);
    }
  });
}

test("malformed frames are refused with the code §2.2 gives", () => {
  const cases = [
    ["02040000000001 05", Code.unsupported_version],
    ["01000000000001 05", Code.bad_frame], // type 0
    ["010f0000000001 05", Code.bad_frame], // unknown type
    ["01040000000002 85", Code.bad_frame], // uvarint past the end
    ["0104000000000b ffffffffffffffffff02", Code.bad_frame], // overflow; length 11 but 10 bytes: truncated
    ["0104000000000a ffffffffffffffffff02", Code.bad_frame], // 10th byte > 1
    ["010c0000000004 ffff0400", Code.bad_frame], // code over 0xFFFF
    ["010d0000000007 01040000000001", Code.bad_frame], // inner frame cut short
    ["010d000000000f 010d000000000801040000000001 05", Code.bad_frame], // nested batch
  ];
  for (const [h, code] of cases) {
    assert.throws(() => decodeMessage(unhex(h.replace(/ /g, ""))), (e) => e instanceof DecodeError && e.code === code, h);
  }
  // WELCOME with a bool byte of 2.
  assert.throws(() => decodeMessage(unhex("01020000000015046e312d31026e31b0ea0102026531ac0280800101")), DecodeError);
  // A body over the limit is refused from the header alone.
  assert.throws(() => decode(unhex("01040000010001"), 65536), (e) => e.code === Code.frame_too_large);
  // Trailing bytes after the frame in one WebSocket message.
  assert.throws(() => decodeMessage(unhex("0104000000000105ff")), (e) => e.code === Code.protocol_violation);
  // An lz4 batch claiming more than 255 × its block, or over the limit.
  assert.throws(() => decodeMessage(unhex("010d0100000003 ff0f 00".replace(/ /g, ""))), DecodeError);
  assert.throws(() => decode(unhex("010d0100000004 8080 04 00".replace(/ /g, "")), 1000), (e) => e.code === Code.frame_too_large);
  // A HELLO flagged with group cursors that holds none, or more than 64.
  assert.throws(() => decodeMessage(unhex("0101010000000a 00000000000000000000".replace(/ /g, ""))), DecodeError);
  assert.throws(() => decodeMessage(unhex("0101010000000a 00000000000000000041".replace(/ /g, ""))), DecodeError);
  // A PUSH flagged with a group position that is not there.
  assert.throws(() => decodeMessage(unhex("01030400000007 00000002000000".replace(/ /g, ""))), DecodeError);
  // A BATCH of more than 64 businesses in a CONTROL.
  assert.throws(() => decodeMessage(unhex("010b0000000005 0100000041".replace(/ /g, ""))), DecodeError);
});

test("lz4 blocks with overlapping matches and long lengths", () => {
  // "abc" × 100: a sequence of 3 literals and a 285-byte match at offset
  // 3 (token 0x3f, match length 15 + 255 + 11 + 4, overlapping itself),
  // then the last sequence, 12 literals (token 0xc0).
  const tail = new TextEncoder().encode("abcabcabcabc");
  const full = new Uint8Array([0x3f, 0x61, 0x62, 0x63, 0x03, 0x00, 0xff, 0x0b, 0xc0, ...tail]);
  const out = lz4DecodeBlock(full, 3 + 285 + 12);
  assert.equal(new TextDecoder().decode(out), "abc".repeat(100));
  assert.throws(() => lz4DecodeBlock(full, 301), DecodeError);
  assert.throws(() => lz4DecodeBlock(new Uint8Array([0x10, 0x61, 0x05, 0x00]), 10), DecodeError); // offset past the start
});

// lz4Batch wraps frames in an lz4 BATCH whose block is one run of
// literals: valid lz4 that any decoder must read.
function lz4Batch(frames) {
  const n = frames.length;
  const block = [];
  if (n < 15) block.push(n << 4);
  else {
    block.push(0xf0);
    let rest = n - 15;
    while (rest >= 255) { block.push(255); rest -= 255; }
    block.push(rest);
  }
  block.push(...frames);
  const ulen = [];
  for (let v = n; ; v = Math.floor(v / 128)) { if (v < 128) { ulen.push(v); break; } ulen.push((v % 128) | 128); }
  const body = [...ulen, ...block];
  const len = body.length;
  return new Uint8Array([1, 13, FLAG_LZ4, len >>> 24, (len >>> 16) & 255, (len >>> 8) & 255, len & 255, ...body]);
}

function readUvarint(b) {
  let v = 0, mul = 1;
  for (let i = 0; ; i++) { v += (b[i] & 127) * mul; mul *= 128; if (b[i] < 128) return [v, i + 1]; }
}
