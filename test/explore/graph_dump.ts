/**
 * A canonical dump of everything reachable from a set of roots, for tests of snapshots and restores:
 * objects numbered in visit order (so sharing and identity show), every own property (data or
 * accessor, string or symbol key, enumerable or not) with its attributes, array lengths and holes, Map
 * and Set contents in order, typed arrays as a digest of their bytes (and nothing else of them). -0 and NaN are told apart from 0.
 * Objects in `opaque` are printed as such and not walked (a tool's constant configuration, a controller).
 */
import { createHash } from 'node:crypto';

export function graphDump(roots: readonly object[], opaque: Iterable<object> = []): string[] {
  const skip = new Set<unknown>(opaque);
  const ids = new Map<unknown, number>();
  const out: string[] = [];
  const queue: unknown[] = [];
  const ref = (v: unknown): string => {
    if (typeof v === 'number') return Object.is(v, -0) ? 'n:-0' : `n:${v}`;
    if (typeof v === 'symbol') return `sym:${String(v.description)}`;
    if (typeof v !== 'object' && typeof v !== 'function') return `${typeof v}:${String(v)}`;
    if (v === null) return 'null';
    if (skip.has(v)) return 'opaque';
    let id = ids.get(v);
    if (id === undefined) {
      ids.set(v, (id = ids.size));
      queue.push(v);
    }
    return `#${id}`;
  };
  roots.forEach(ref);
  for (let i = 0; i < queue.length; i++) {
    const o = queue[i] as object;
    const proto = Object.getPrototypeOf(o) as { constructor?: { name?: string } } | null;
    let line = `#${i} ${typeof o === 'function' ? 'fn' : (proto?.constructor?.name ?? 'null')}`;
    if (typeof o === 'function') {
      out.push(line);
      continue;
    }
    const view = ArrayBuffer.isView(o);
    if (view) {
      const bytes = Buffer.from(o.buffer, o.byteOffset, o.byteLength);
      line += ` [${o.byteLength} bytes ${createHash('sha1').update(bytes).digest('hex')}]`;
    } else if (o instanceof ArrayBuffer)
      line += ` [buffer ${createHash('sha1').update(Buffer.from(o)).digest('hex')}]`;
    else if (o instanceof Map) for (const [k, v] of o) line += ` ${ref(k)}=>${ref(v)}`;
    else if (o instanceof Set) for (const v of o) line += ` ${ref(v)}`;
    // (a typed array's own keys are its indices: its bytes are above)
    for (const k of view ? [] : Reflect.ownKeys(o)) {
      const d = Object.getOwnPropertyDescriptor(o, k)!;
      const attrs = `${d.enumerable ? 'e' : ''}${d.configurable ? 'c' : ''}${d.writable ? 'w' : ''}`;
      const key = typeof k === 'symbol' ? `[${String(k.description)}]` : k;
      line += ` ${key}(${attrs}):${'value' in d ? ref(d.value) : `get ${ref(d.get)} set ${ref(d.set)}`}`;
    }
    out.push(line);
  }
  return out;
}
