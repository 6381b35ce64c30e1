/**
 * A hash of everything reachable from a set of roots (the graph a snapshot captures, snapshot.ts):
 * object structure and sharing (objects are numbered in visit order), property names and values, array,
 * Map and Set contents in order, typed-array bytes (up to the owner's extent where one is declared).
 * Two graphs that are equal hash equal; different graphs collide with probability about 2^-64 per pair
 * (two independent 32-bit lanes), which the explorer's state hashing accepts.
 * Model-only file (no kernel counterpart).
 */
import { SNAPSHOT_EXTENTS, type SnapshotExtents } from './snapshot.ts';

export interface StateHashOptions {
  /** properties left out of the hash, per object (a label that names the last step, not the state) */
  skip?: Map<object, ReadonlySet<PropertyKey>>;
}

const f64 = new Float64Array(1);
const u32 = new Uint32Array(f64.buffer);

class Hasher {
  a = 0x9e3779b9 | 0;
  b = 0x85ebca6b | 0;
  word(x: number): void {
    this.a = Math.imul(this.a ^ x, 0xcc9e2d51);
    this.a = (this.a << 15) | (this.a >>> 17);
    this.b = Math.imul(this.b + x, 0x1b873593) ^ (this.b >>> 13);
  }
  num(v: number): void {
    if ((v | 0) === v) this.word(v);
    else {
      f64[0] = v;
      this.word(u32[0]!);
      this.word(u32[1]!);
    }
  }
  str(s: string): void {
    this.word(s.length);
    for (let i = 0; i < s.length; i++) this.word(s.charCodeAt(i));
  }
  hex(): string {
    const mix = (h: number): number => {
      h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
      h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
      return (h ^ (h >>> 16)) >>> 0;
    };
    return (
      mix(this.a).toString(16).padStart(8, '0') +
      mix(this.b ^ this.a)
        .toString(16)
        .padStart(8, '0')
    );
  }
}

/** The hash of the graph reachable from `roots`, as 16 hex digits. */
export function stateHash(roots: readonly unknown[], opts: StateHashOptions = {}): string {
  const h = new Hasher();
  const ids = new Map<unknown, number>();
  const queue: object[] = [];
  const typed: ArrayBufferView[] = [];
  const extents = new Map<ArrayBufferView, number>();
  const value = (v: unknown): void => {
    switch (typeof v) {
      case 'number':
        h.word(1);
        h.num(v);
        return;
      case 'string':
        h.word(2);
        h.str(v);
        return;
      case 'boolean':
        h.word(v ? 3 : 4);
        return;
      case 'undefined':
        h.word(5);
        return;
      case 'bigint':
        h.word(6);
        h.str(v.toString(16));
        return;
      case 'symbol':
        h.word(7);
        h.str(String(v.description));
        return;
    }
    if (v === null) return h.word(8);
    let id = ids.get(v);
    if (id === undefined) {
      ids.set(v, (id = ids.size));
      queue.push(v as object);
    }
    h.word(9);
    h.word(id);
  };
  roots.forEach(value);
  for (let q = 0; q < queue.length; q++) {
    const o = queue[q]!;
    h.word(0x51);
    if (typeof o === 'function') continue; // identity only (its number above)
    if (ArrayBuffer.isView(o)) {
      typed.push(o);
      continue;
    }
    if (Array.isArray(o)) {
      h.word(o.length);
      for (let i = 0; i < o.length; i++) value(o[i]);
      continue;
    }
    if (o instanceof Map) {
      h.word(o.size);
      for (const [k, v] of o) {
        value(k);
        value(v);
      }
      continue;
    }
    if (o instanceof Set) {
      h.word(o.size);
      for (const v of o) value(v);
      continue;
    }
    if (typeof (o as Partial<SnapshotExtents>)[SNAPSHOT_EXTENTS] === 'function')
      for (const [a, n] of (o as SnapshotExtents)[SNAPSHOT_EXTENTS]()) extents.set(a, n);
    const skip = opts.skip?.get(o);
    for (const k of Object.keys(o)) {
      if (skip?.has(k)) continue;
      h.str(k);
      value((o as Record<string, unknown>)[k]);
    }
  }
  // typed arrays last, once every owner has said how much of its arrays is in use
  for (const t of typed) {
    const per = t instanceof DataView ? 1 : (t as unknown as { BYTES_PER_ELEMENT: number }).BYTES_PER_ELEMENT;
    const len = extents.has(t) ? Math.min(t.byteLength, extents.get(t)! * per) : t.byteLength;
    h.word(t.byteLength);
    if (t.byteOffset % 4 === 0) {
      const words = new Int32Array(t.buffer, t.byteOffset, len >> 2);
      for (let i = 0; i < words.length; i++) h.word(words[i]!);
    }
    const bytes = new Uint8Array(t.buffer, t.byteOffset, len);
    for (let i = t.byteOffset % 4 === 0 ? len & ~3 : 0; i < len; i++) h.word(bytes[i]!);
  }
  return h.hex();
}
