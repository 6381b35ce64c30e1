/**
 * The pieces of snapshot.ts's capture and restore that are not the Snapshot class: the per-shape restorer
 * functions it generates, the Map/Set "unchanged?" checks, and what a snapshot refuses to capture.
 * Model-only file (no kernel counterpart).
 */

/** A typed array, or a DataView seen through its bytes: what a snapshot saves a copy of. */
export type Typed = ArrayBufferView & {
  length: number;
  set(a: Typed, offset?: number): void;
  subarray(a: number, b: number): Typed;
  slice(): Typed;
};

/** Writes a record's saved values back: o[key i] = vals[i] for every key of its shape. */
export type Restorer = (o: Record<PropertyKey, unknown>, vals: unknown[], syms: symbol[]) => void;

/**
 * The restorers generated so far, per prototype (a class, Object.prototype, null) and key list: objects of
 * one shape share one function, whose assignment sites then see one hidden class each. A cache of code,
 * not of state.
 */
const restorers = new Map<object | null, Map<string, Restorer>>();

/** The generated restorer for objects with this prototype and these writable keys (in this order). */
export function restorerFor(proto: object | null, keys: readonly PropertyKey[]): Restorer {
  let byKeys = restorers.get(proto);
  if (byKeys === undefined) restorers.set(proto, (byKeys = new Map()));
  // symbols are read from the record's own list (slot j of `syms`); strings are written as literals
  let j = 0;
  const lhs = keys.map((k) => (typeof k === 'symbol' ? `o[s[${j++}]]` : `o[${JSON.stringify(k)}]`));
  const sig = lhs.join();
  let f = byKeys.get(sig);
  if (f === undefined) {
    // `o.__proto__ = x` would set the prototype: an own property of that name is redefined instead
    const body = lhs
      .map((l, i) =>
        l === 'o["__proto__"]'
          ? `Object.defineProperty(o, "__proto__", { value: v[${i}] });`
          : `${l} = v[${i}];`,
      )
      .join('\n');
    f = new Function('o', 'v', 's', `"use strict";\n${body}`) as Restorer;
    byKeys.set(sig, f);
  }
  return f;
}

/** Same value, -0 and NaN told apart as a restore would (Object.is). */
const same = Object.is;

/** Does the Map hold exactly these entries, in this order? */
export function mapIs(m: Map<unknown, unknown>, keys: unknown[], vals: unknown[]): boolean {
  if (m.size !== keys.length) return false;
  let i = 0;
  for (const [k, v] of m) {
    if (!same(k, keys[i]) || !same(v, vals[i])) return false;
    i++;
  }
  return true;
}

/** Does the Set hold exactly these members, in this order? */
export function setIs(s: Set<unknown>, vals: unknown[]): boolean {
  if (s.size !== vals.length) return false;
  let i = 0;
  for (const v of s) if (!same(v, vals[i++])) return false;
  return true;
}

/** The typed view a saved copy is made through (a DataView's bytes, a typed array as itself). */
export function typedOf(v: ArrayBufferView): Typed {
  if (v instanceof DataView) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength) as unknown as Typed;
  return v as Typed;
}

/** What a snapshot refuses: state it cannot see into. */
export function refuse(o: object, path: string): void {
  const what =
    o instanceof WeakMap
      ? 'a WeakMap'
      : o instanceof WeakSet
        ? 'a WeakSet'
        : o instanceof WeakRef
          ? 'a WeakRef'
          : o instanceof Promise
            ? 'a promise'
            : typeof SharedArrayBuffer !== 'undefined' && o instanceof SharedArrayBuffer
              ? 'a SharedArrayBuffer'
              : Object.prototype.toString.call(o) === '[object Generator]'
                ? 'a generator'
                : null;
  if (what !== null)
    throw new TypeError(`snapshot: ${path} is ${what}, whose state a snapshot cannot capture`);
}
