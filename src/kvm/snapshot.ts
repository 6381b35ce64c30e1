/**
 * Snapshots of model state: capture everything reachable from a set of roots (a Kvm, and the tool
 * objects that drive it) and later put it back in place, so a tool can run many executions from one
 * built-and-set-up state instead of rebuilding the VM each time (the explorer's schedules). A restore
 * keeps every object's identity (references held anywhere in the graph stay valid) and rewrites:
 *   - the data properties of plain and class objects (properties added since are deleted),
 *   - array elements and lengths, Map and Set contents (in their insertion order),
 *   - typed-array contents.
 * Objects created after the snapshot simply become unreachable.
 *
 * A restore writes each object's saved fields through a function generated once per shape (the class
 * or prototype and the list of keys): one plain assignment per field, so the stores stay monomorphic
 * instead of one generic keyed store per field through a loop over every object's keys. A Map or Set whose
 * contents (in order) are still the snapshot's is left as it is.
 *
 * Large typed arrays whose owner knows how much of them is in use (the SPTE pool's chunks, the host
 * page pool's refcount/version chunks) are copied back only up to the larger of the extent in use at
 * the snapshot and at the restore: beyond that neither the snapshot nor anything since has written,
 * so the bytes there are already the snapshot's. An owner declares this with SNAPSHOT_EXTENTS. An owner
 * that notes which elements of its arrays it writes (written_range.ts: a TLB, the host's fault log) has
 * only those copied back.
 *
 * The rule that makes this complete: model state lives in object fields, never in closure variables or
 * module variables. What a snapshot cannot see is refused, not skipped: a WeakMap/WeakSet/WeakRef, a
 * generator, a promise or a SharedArrayBuffer in the graph throws. Accessor properties are left alone
 * (their state is in closures set up once: the checker's trace taps). Functions are kept by reference.
 * Non-writable properties are not restored (nothing could have changed them), but what they point to is.
 *
 * stateHash() walks the same graph and hashes it (structure, sharing and values), for the explorer's
 * state hashing: two graphs with equal hashes are equal but for a 2^-64-ish chance of collision.
 *
 * Model-only file (no kernel counterpart).
 */

import { hasWritten, SNAPSHOT_WRITTEN, WRITTEN, type SnapshotWritten } from './written_range.ts';
import { mapIs, refuse, restorerFor, setIs, typedOf, type Restorer, type Typed } from './snapshot_parts.ts';

/** The method an owner of large typed arrays implements: each array with the elements in use (a prefix). */
export const SNAPSHOT_EXTENTS: unique symbol = Symbol('zaplab.snapshotExtents');

export interface SnapshotExtents {
  [SNAPSHOT_EXTENTS](): Iterable<readonly [ArrayBufferView, number]>;
}

/** An owner of written-range arrays (written_range.ts): its arrays' records, each with its range offset. */
interface Writer {
  o: SnapshotWritten;
  /** the range at the snapshot */
  lo: number;
  hi: number;
  recs: TypedRec[];
  offs: number[];
}

interface ObjRec {
  o: Record<PropertyKey, unknown>;
  keys: PropertyKey[];
  vals: unknown[];
  /** own keys at the snapshot (data, accessor and non-writable alike) of a plain object; -1 = a class instance */
  own: number;
  /** of those, the string-named ones (the rest are symbols) */
  names: number;
  /**
   * every own key at the snapshot was an enumerable string (and the prototype has no enumerable keys):
   * a restore counts the keys with for-in, which allocates nothing (see restore)
   */
  simple: boolean;
  /** writes vals back into o (restorerFor) */
  put: Restorer;
  /** the symbol keys, in the order the restorer reads them */
  syms: symbol[];
}

interface TypedRec {
  o: Typed;
  saved: Typed;
  /** elements in use at the snapshot; -1 = no owner declared an extent (copied whole) */
  ext: number;
  /** elements to copy back at the coming restore (set while collecting the owners' extents) */
  cur: number;
  epoch: number;
  /** the restore (epoch) that copied its written range back */
  wrote: number;
}

export interface SnapshotOptions {
  /** objects kept by reference and not walked (a tool's constant configuration, a controller) */
  opaque?: Iterable<object>;
}

const hasExtents = (o: object): o is SnapshotExtents =>
  typeof (o as Partial<SnapshotExtents>)[SNAPSHOT_EXTENTS] === 'function';

/** A captured state; `restore()` puts it back (any number of times). */
export class Snapshot {
  /** class instances (their fields are rewritten; no keys are added to them) */
  private readonly objs: ObjRec[] = [];
  /** plain records (their fields are rewritten, keys added since are deleted) */
  private readonly plain: ObjRec[] = [];
  private readonly arrays: { o: unknown[]; vals: unknown[]; at: number[] | null; length: number }[] = [];
  private readonly maps: { o: Map<unknown, unknown>; keys: unknown[]; vals: unknown[] }[] = [];
  private readonly sets: { o: Set<unknown>; vals: unknown[] }[] = [];
  private readonly typed: TypedRec[] = [];
  private readonly byView = new Map<ArrayBufferView, TypedRec>();
  private readonly owners: SnapshotExtents[] = [];
  private readonly writers: Writer[] = [];
  private epoch = 0;

  constructor(roots: readonly object[], opts: SnapshotOptions = {}) {
    const opaque = new Set(opts.opaque ?? []);
    const seen = new Set<unknown>();
    const stack: [unknown, string][] = roots.map((r, i) => [r, `root ${i}`]);
    while (stack.length > 0) {
      const [v, path] = stack.pop()!;
      if (typeof v !== 'object' || v === null || seen.has(v) || opaque.has(v)) continue;
      seen.add(v);
      this.capture(v, path, (c, p) => {
        if (typeof c === 'object' && c !== null && !seen.has(c)) stack.push([c, p]);
      });
    }
    for (const ow of this.owners)
      for (const [a, n] of ow[SNAPSHOT_EXTENTS]()) {
        const r = this.byView.get(a);
        if (r !== undefined) r.ext = Math.max(r.ext, Math.min(n, r.o.length));
      }
    for (const w of this.writers)
      for (const [a, off] of w.o[SNAPSHOT_WRITTEN]()) {
        const r = this.byView.get(a);
        if (r === undefined || !this.typed.includes(r)) continue;
        w.recs.push(r);
        w.offs.push(off);
      }
  }

  private capture(o: object, path: string, visit: (child: unknown, path: string) => void): void {
    if (ArrayBuffer.isView(o)) {
      const t = typedOf(o);
      const r: TypedRec = { o: t, saved: t.slice(), ext: -1, cur: 0, epoch: 0, wrote: 0 };
      // an empty view has nothing to restore (a view's length is fixed: no resizable buffer is used)
      if (t.length > 0) this.typed.push(r);
      this.byView.set(o, r);
      return;
    }
    if (o instanceof ArrayBuffer) {
      const t = new Uint8Array(o) as unknown as Typed;
      this.typed.push({ o: t, saved: t.slice(), ext: -1, cur: 0, epoch: 0, wrote: 0 });
      return;
    }
    refuse(o, path);
    if (Array.isArray(o)) {
      // a sparse array keeps its holes: it is saved as its present indices
      let holes = 0;
      for (let i = 0; i < o.length; i++) if (!(i in o)) holes++;
      const at =
        holes === 0
          ? null
          : Object.keys(o)
              .filter((k) => /^\d+$/.test(k))
              .map(Number);
      const vals = at === null ? o.slice() : at.map((i) => o[i] as unknown);
      // a frozen array (a constant table) cannot have changed; what it holds may have
      if (!Object.isFrozen(o)) this.arrays.push({ o, vals, at, length: o.length });
      vals.forEach((c, i) => visit(c, `${path}[${at === null ? i : at[i]}]`));
      return;
    }
    if (o instanceof Map) {
      const keys = [...o.keys()];
      const vals = [...o.values()];
      this.maps.push({ o, keys, vals });
      keys.forEach((k, i) => {
        visit(k, `${path}.key`);
        visit(vals[i], `${path}.get(${String(k)})`);
      });
      return;
    }
    if (o instanceof Set) {
      const vals = [...o];
      this.sets.push({ o, vals });
      vals.forEach((c) => visit(c, `${path}.member`));
      return;
    }
    if (typeof o === 'function') return;
    if (hasExtents(o)) this.owners.push(o);
    if (hasWritten(o)) {
      const { lo, hi } = o[WRITTEN];
      this.writers.push({ o, lo, hi, recs: [], offs: [] });
    }
    const descs = Object.getOwnPropertyDescriptors(o);
    const keys = Reflect.ownKeys(descs);
    const proto = Object.getPrototypeOf(o) as object | null;
    const rec: ObjRec = {
      o: o as Record<PropertyKey, unknown>,
      keys: [],
      vals: [],
      own: -1,
      names: 0,
      simple: false,
      put: restorerFor(proto, []),
      syms: [],
    };
    // Only plain objects (records keyed by data) get properties added at run time; a class instance
    // has the fields its class declares. Counting keys costs more than the rest of a restore, so only
    // plain objects are checked for additions (the snapshot test checks that no class grows any).
    if (proto === Object.prototype || proto === null) {
      rec.own = keys.length;
      rec.names = keys.filter((k) => typeof k === 'string').length;
      rec.simple =
        rec.names === rec.own &&
        keys.every((k) => descs[k as string]!.enumerable === true) &&
        (proto === null || Object.keys(proto).length === 0);
    }
    for (const k of keys) {
      const d = descs[k as keyof typeof descs]!;
      if (!('value' in d)) continue; // an accessor: its state is in its closures
      if (d.writable === true) {
        rec.keys.push(k);
        rec.vals.push(d.value);
        if (typeof k === 'symbol') rec.syms.push(k);
      }
      visit(d.value, `${path}.${String(k)}`);
    }
    rec.put = restorerFor(proto, rec.keys);
    if (rec.own >= 0) this.plain.push(rec);
    else if (rec.keys.length > 0) this.objs.push(rec);
  }

  /**
   * Put the captured state back. (In parts: each is compiled on its own, so the optimizing compiler's
   * work on one does not wait for, or get thrown away with, the others'.)
   */
  restore(): void {
    this.restoreTyped();
    this.restoreObjs();
    this.restorePlain();
    this.restoreArrays();
    this.restoreCollections();
  }

  private restoreTyped(): void {
    const epoch = ++this.epoch;
    // Written ranges now (before their owners' fields, which hold them, are restored).
    const writers = this.writers;
    for (let k = 0; k < writers.length; k++) this.restoreWritten(writers[k]!, epoch);
    // Owners' extents now (before their own fields are restored): what the run may have written.
    for (const ow of this.owners)
      for (const [a, n] of ow[SNAPSHOT_EXTENTS]()) {
        const r = this.byView.get(a);
        if (r === undefined || r.ext < 0) continue;
        r.cur = Math.min(r.o.length, Math.max(r.ext, n));
        r.epoch = epoch;
      }
    const typed = this.typed;
    for (let k = 0; k < typed.length; k++) {
      const r = typed[k]!;
      if (r.wrote === epoch) continue;
      const n = r.ext >= 0 && r.epoch === epoch ? r.cur : r.o.length;
      if (n === r.o.length) r.o.set(r.saved);
      else if (n > 0) r.o.set(r.saved.subarray(0, n));
    }
  }

  /** Copy back the elements in the owner's range now or at the snapshot (see written_range.ts). */
  private restoreWritten(w: Writer, epoch: number): void {
    const now = w.o[WRITTEN];
    const lo = Math.min(now.lo, w.lo);
    const hi = Math.max(now.hi, w.hi);
    for (let k = 0; k < w.recs.length; k++) {
      const r = w.recs[k]!;
      r.wrote = epoch;
      const a = Math.max(0, lo - w.offs[k]!);
      const b = Math.min(r.o.length, hi - w.offs[k]!);
      if (a < b) r.o.set(r.saved.subarray(a, b), a);
    }
  }

  private restoreObjs(): void {
    const objs = this.objs;
    for (let k = 0; k < objs.length; k++) {
      const r = objs[k]!;
      r.put(r.o, r.vals, r.syms);
    }
  }

  private restorePlain(): void {
    const plain = this.plain;
    for (let k = 0; k < plain.length; k++) {
      const r = plain[k]!;
      const o = r.o;
      r.put(o, r.vals, r.syms);
      // Added keys. Model code adds keys to a record only by assignment (an enumerable string key), so
      // where the record had only such keys, for-in counts them without allocating a list (the explorer's
      // restore test compares every key, symbols and attributes included, with a fresh build's); any other
      // record is counted exactly.
      if (r.simple) {
        let n = 0;
        for (const _ in o) n++;
        if (n !== r.names) this.dropAdded(r);
      } else if (
        Object.getOwnPropertyNames(o).length !== r.names ||
        Object.getOwnPropertySymbols(o).length !== r.own - r.names
      )
        this.dropAdded(r);
    }
  }

  private restoreArrays(): void {
    const arrays = this.arrays;
    for (let k = 0; k < arrays.length; k++) {
      const r = arrays[k]!;
      const o = r.o;
      const at = r.at;
      const vals = r.vals;
      if (at === null) {
        // Setting an array's length is a runtime call (even when it does not change) and gives back the
        // backing store the next run's pushes would need again; pop() is neither.
        while (o.length > vals.length) o.pop();
        for (let i = 0; i < vals.length; i++) o[i] = vals[i];
      } else {
        o.length = 0;
        o.length = r.length;
        for (let i = 0; i < at.length; i++) o[at[i]!] = vals[i];
      }
    }
  }

  /** (clear() allocates a fresh table: an unchanged Map or Set is left alone) */
  private restoreCollections(): void {
    for (const r of this.maps) {
      if (mapIs(r.o, r.keys, r.vals)) continue;
      r.o.clear();
      for (let i = 0; i < r.keys.length; i++) r.o.set(r.keys[i], r.vals[i]);
    }
    for (const r of this.sets) {
      if (setIs(r.o, r.vals)) continue;
      r.o.clear();
      for (const v of r.vals) r.o.add(v);
    }
  }

  private dropAdded(r: ObjRec): void {
    const had = new Set<PropertyKey>(r.keys);
    for (const k of Reflect.ownKeys(r.o)) {
      if (had.has(k)) continue;
      const d = Object.getOwnPropertyDescriptor(r.o, k);
      if (d !== undefined && 'value' in d && d.writable !== true) continue; // was there, read-only
      if (d !== undefined && !('value' in d)) continue; // an accessor that was there
      delete r.o[k];
    }
  }

  /** What the snapshot holds (for tests and the bench). */
  size(): { objects: number; typedArrays: number; typedBytes: number } {
    return {
      objects:
        this.objs.length + this.plain.length + this.arrays.length + this.maps.length + this.sets.length,
      typedArrays: this.typed.length,
      typedBytes: this.typed.reduce((s, r) => s + r.o.byteLength, 0),
    };
  }
}

/** Capture the state reachable from `roots`. */
export function snapshot(roots: readonly object[], opts: SnapshotOptions = {}): Snapshot {
  return new Snapshot(roots, opts);
}
