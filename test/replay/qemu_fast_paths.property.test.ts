/**
 * Property: the QEMU trace reader's fast paths (the key at each token position compared with the
 * previous record's, QEMU's own `%zu.%06zu:` time read in line, the present-slot table indexed by slot
 * id) give exactly what a plain reading of the format gives. The reference here splits each line with
 * string methods and reads numbers with the string parsers of events.ts (parseSecondsUs, parseInteger,
 * parseHex), keeps present slots in a Map, and says the reader's error messages; generated traces mix
 * the 7.2, 8.x and 9.x formats, shuffled and repeated keys, '#' or '=' after any key, unknown keys,
 * blank tokens, odd times (no prefix, 1 to 9 fraction digits, long seconds, a stray character), slot ids
 * in and past the indexed range (negative, -0, huge), READONLY flips, failed calls and bad numbers.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { readQemuTrace } from '../../src/replay/qemu_trace.ts';
import { readQemuTrace as oldReadQemuTrace } from './old_readers/qemu_trace.ts';
import { answer, longText, mutate, mutation } from './oracle.ts';
import { parseHex, parseInteger, parseSecondsUs, type TraceEvent } from '../../src/replay/events.ts';

const KEYS = ['AddrSpace', 'Slot', 'flags', 'gpa', 'size', 'ua', 'ret', 'guest_memfd', 'guest_memfd_offset'];
const INT_KEY = new Set(['AddrSpace', 'Slot', 'ret', 'guest_memfd']);
const NEED = ['Slot', 'flags', 'gpa', 'size', 'ua', 'ret'];
const OTHER = ['kvm_convert_memory', 'kvm_memory_fault', 'kvm_clear_dirty_log'];

interface Reference {
  events: TraceEvent[];
  malformed: string[];
  unknown: Record<string, number>;
  other: number;
}

/** The reader's answer for `text`, worked out line by line with string methods. */
function reference(text: string, file: string): Reference {
  const out: Reference = { events: [], malformed: [], unknown: {}, other: 0 };
  const present = new Map<number, { flags: number; gpa: number; ua: number }>();
  const lines = text.split('\n');
  if (text.endsWith('\n')) lines.pop();
  lines.forEach((l, n) => {
    const line = n + 1;
    let t = NaN;
    let tid = -1;
    let rest = l;
    const pre = /^(\d+)@/.exec(l);
    const colon = pre ? l.indexOf(':', pre[0].length) : -1;
    if (pre && colon !== -1) {
      t = parseSecondsUs(l.slice(pre[0].length, colon));
      if (Number.isNaN(t)) {
        out.malformed.push(
          `${file}:${line}: expected tid@seconds.microseconds: before the event, got "${l.slice(0, colon + 1)}"`,
        );
        return;
      }
      tid = Number(pre[1]);
      rest = l.slice(colon + 1);
    }
    const sp = rest.indexOf(' ');
    const name = sp === -1 ? rest : rest.slice(0, sp);
    if (!/^[a-z_][a-z0-9_]*$/.test(name)) return void out.other++;
    if (OTHER.includes(name)) {
      out.events.push({ kind: 'vmCall', t, tid, src: 'qemu', line, vm: 0, name, ret: 0 });
      return;
    }
    if (name !== 'kvm_set_user_memory') return void (out.unknown[name] = (out.unknown[name] ?? 0) + 1);
    const f = new Map<string, string>();
    for (const tok of (sp === -1 ? '' : rest.slice(sp + 1)).split(' ')) {
      const d = tok.search(/[=#]/);
      if (d > 0 && KEYS.includes(tok.slice(0, d))) f.set(tok.slice(0, d), tok.slice(d + 1));
    }
    const missing = NEED.filter((k) => !f.has(k));
    if (missing.length) {
      out.malformed.push(
        `${file}:${line}: kvm_set_user_memory: expected fields ${NEED.join(', ')}; missing ${missing.join(', ')}`,
      );
      return;
    }
    const num = (k: string): number => (INT_KEY.has(k) ? parseInteger(f.get(k)) : parseHex(f.get(k)));
    const bad = ['AddrSpace', ...NEED].find((k) => f.has(k) && Number.isNaN(num(k)));
    if (bad) {
      out.malformed.push(
        `${file}:${line}: kvm_set_user_memory: expected a number for ${bad}, got "${f.get(bad)}"`,
      );
      return;
    }
    const slot = f.has('AddrSpace') ? (num('AddrSpace') << 16) | num('Slot') : num('Slot');
    const [flags, gpa, size, ua, ret] = ['flags', 'gpa', 'size', 'ua', 'ret'].map(num) as [
      number,
      number,
      number,
      number,
      number,
    ];
    const v2 = f.has('guest_memfd');
    const gm = v2
      ? {
          guestMemfd: num('guest_memfd'),
          guestMemfdOffset: f.has('guest_memfd_offset') ? num('guest_memfd_offset') : 0,
        }
      : {};
    const ev = (x: object): TraceEvent =>
      ({ kind: 'memslot', t, tid, src: 'qemu', line, vm: 0, slot, ret, v2, ...x, ...gm }) as TraceEvent;
    const prev = present.get(slot);
    if (ret === 0 && prev && size !== 0 && ((prev.flags ^ flags) & 2) !== 0)
      out.events.push(ev({ flags: prev.flags, gpa: prev.gpa, size: 0, ua: prev.ua, implied: true }));
    out.events.push(ev({ flags, gpa, size, ua }));
    if (ret === 0) {
      if (size === 0) present.delete(slot);
      else present.set(slot, { flags, gpa, ua });
    }
  });
  return out;
}

// ---- generated lines ---------------------------------------------------------------------------

const hex = (v: number): string => `0x${v.toString(16)}`;
const digits = (lo: number, hi: number): fc.Arbitrary<string> =>
  fc.string({ unit: fc.constantFrom(...'0123456789'), minLength: lo, maxLength: hi });

/** `tid@secs.frac:` mostly as QEMU prints it, sometimes odd; or nothing. */
const prefix = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.tuple(fc.nat(99999), digits(1, 10), digits(6, 6)).map(([t, s, u]) => `${t}@${s}.${u}:`),
  },
  { weight: 1, arbitrary: fc.constant('') },
  {
    weight: 2,
    arbitrary: fc
      .tuple(
        digits(1, 18),
        digits(0, 18),
        fc.string({ unit: fc.constantFrom('0', '.', 'x', ' ', '1'), maxLength: 2 }),
        digits(0, 10),
      )
      .map(([t, s, junk, u]) => `${t}@${s}${junk}.${u}:`),
  },
);

/** A value for key k: mostly what QEMU prints, sometimes not a number. */
function value(k: string, slots: number[]): fc.Arbitrary<string> {
  const good =
    k === 'Slot'
      ? fc
          .oneof(fc.constantFrom(...slots), fc.constantFrom(-1, 65535, 70000, 131071, 131072, 1 << 30))
          .map(String)
      : k === 'AddrSpace'
        ? fc.constantFrom('0', '1', '2', '-0', '0x1')
        : k === 'flags'
          ? fc.constantFrom(0, 1, 2, 3, 4, 6).map(hex)
          : k === 'size'
            ? fc.constantFrom(0, 0x1000, 0x200000, 0x40000000).map(hex)
            : k === 'ret'
              ? fc.constantFrom('0', '0', '0', '-17', '-22', '0x0')
              : k === 'guest_memfd'
                ? fc.constantFrom('12', '-1', '0')
                : fc.oneof(
                    fc.nat({ max: 2 ** 47 }).map(hex),
                    fc.constantFrom('c0000000', '0xffffffffffffffff', '0X10'),
                  );
  const bad = fc.constantFrom('', 'zz', '0x', '-', '0x1g', '12 ', '1=2', '#3', '0x1000000000000000000');
  return fc.oneof({ weight: 12, arbitrary: good }, { weight: 1, arbitrary: bad });
}

const FORMATS = [
  ['Slot', 'flags', 'gpa', 'size', 'ua', 'ret'],
  ['AddrSpace', 'Slot', 'flags', 'gpa', 'size', 'ua', 'ret'],
  ['AddrSpace', 'Slot', 'flags', 'gpa', 'size', 'ua', 'guest_memfd', 'guest_memfd_offset', 'ret'],
];

/** One kvm_set_user_memory record: a format, perhaps changed (keys shuffled, dropped, repeated, unknown). */
function record(slots: number[]): fc.Arbitrary<string> {
  return fc
    .tuple(fc.constantFrom(...FORMATS), fc.nat(20), fc.nat(1000), fc.boolean())
    .chain(([fmt, change, seed, trailing]) => {
      let keys = [...fmt];
      if (change === 0) keys = keys.sort(() => (seed % 3) - 1);
      else if (change === 1) keys.splice(seed % keys.length, 1);
      else if (change === 2) keys.splice(seed % keys.length, 0, keys[(seed >> 3) % keys.length]!);
      else if (change === 3) keys.splice(seed % keys.length, 0, ['Slo', 'gpa_x', 'x', 'size2'][seed % 4]!);
      else if (change === 4) keys.splice(seed % keys.length, 0, '');
      return fc
        .tuple(
          ...keys.map((k) =>
            fc.tuple(
              KEYS.includes(k) ? value(k, slots) : fc.constantFrom('1', '0x2'),
              fc.constantFrom('=', '=', '=', '=', '=', '#', ' '),
            ),
          ),
        )
        .map((vals) =>
          keys
            .map((k, i) => {
              if (k === '') return '';
              const [v, d] = vals[i]!;
              // QEMU prints Slot# and AddrSpace#, the others key=; a space: a key with no value
              const delim = d === ' ' || !(k === 'Slot' || k === 'AddrSpace') ? d : d === '=' ? '#' : '=';
              return `${k}${delim}${v}`;
            })
            .join(' ')
            .concat(trailing && change === 5 ? ' ' : ''),
        );
    });
}

function line(slots: number[]): fc.Arbitrary<string> {
  const body = fc.oneof(
    { weight: 20, arbitrary: record(slots).map((r) => `kvm_set_user_memory ${r}`) },
    { weight: 1, arbitrary: fc.constantFrom(...OTHER).map((n) => `${n} start 0x0 size 0x1000`) },
    {
      weight: 1,
      arbitrary: fc.constantFrom('kvm_run_exit x', 'kvm_set_user_memory', 'Slot#1 flags=0', 'qemu: warning'),
    },
  );
  return fc.tuple(prefix, body).map(([p, b]) => p + b);
}

const trace = fc
  .uniqueArray(fc.integer({ min: 0, max: 40 }), { minLength: 1, maxLength: 4 })
  .chain((slots) => fc.array(line(slots), { minLength: 1, maxLength: 60 }))
  .map((ls) => `${ls.join('\n')}\n`);

/** Lines of `trace`, some with characters inserted, deleted or replaced (ASCII or not). */
const mutated = fc
  .uniqueArray(fc.integer({ min: 0, max: 40 }), { minLength: 1, maxLength: 4 })
  .chain((slots) =>
    fc.array(
      fc.tuple(line(slots), fc.array(mutation(' 0123456789abcdefx-_:.@#=\tSlotgpaize'), { maxLength: 3 })),
      { minLength: 1, maxLength: 60 },
    ),
  )
  .map((ls) => ls.map(([l, m]) => mutate(l, m)).join('\n'));

const OPTS = [{}, { strict: true }];

describe('QEMU trace reader on bytes = the reader of 37fb73c (old_readers/, frozen)', () => {
  it('every event, the report and the --strict error, on generated and mutated traces', () => {
    fc.assert(
      fc.property(fc.oneof(trace, mutated), fc.boolean(), (text, nl) => {
        const t = nl || text.endsWith('\n') ? text : `${text}\n`;
        for (const x of [text, t])
          for (const o of OPTS) expect(answer(readQemuTrace, x, o)).toBe(answer(oldReadQemuTrace, x, o));
      }),
      { numRuns: 400 },
    );
  });

  it('the same across the byte chunks: long texts, and a line longer than a chunk', () => {
    fc.assert(
      fc.property(fc.array(mutated, { minLength: 1, maxLength: 3 }), fc.nat(300), (parts, pad) => {
        const text = longText(parts, pad);
        for (const o of OPTS) expect(answer(readQemuTrace, text, o)).toBe(answer(oldReadQemuTrace, text, o));
      }),
      { numRuns: 10 },
    );
    const rec = '1@1.000001:kvm_set_user_memory Slot#1 flags=0x0 gpa=0x0 size=0x1000 ua=0x7f0000000000 ret=0';
    const long = `${rec}\n${rec.replace(' ret=0', `${' x=1'.repeat(40_000)} ret=0`)}\n${rec}`;
    expect(answer(readQemuTrace, long, {})).toBe(answer(oldReadQemuTrace, long, {}));
    expect(readQemuTrace(long, 'q').events.map((e) => e.line)).toEqual([1, 2, 3]);
  });
});

describe('QEMU trace reader: fast paths = the plain reading', () => {
  it('same events, malformed lines, unknown and other counts on generated traces', () => {
    fc.assert(
      fc.property(trace, (text) => {
        const p = readQemuTrace(text, 'q.trace');
        const r = reference(text, 'q.trace');
        expect(p.report.malformed).toEqual(r.malformed);
        expect(p.events).toEqual(r.events);
        expect({ ...p.report.unknown }).toEqual(r.unknown);
        expect(p.report.other).toBe(r.other);
      }),
      { numRuns: 400 },
    );
  });

  it('a READONLY flip of a slot id past the indexed range gets its implied DELETE, as one inside it', () => {
    for (const slot of [5, 131071, 131072, 1 << 30, -3]) {
      const p = readQemuTrace(
        [
          `1@1.000001:kvm_set_user_memory Slot#${slot} flags=0x0 gpa=0xe0000 size=0x20000 ua=0x7f0000000000 ret=0`,
          `1@1.000002:kvm_set_user_memory Slot#${slot} flags=0x2 gpa=0xe0000 size=0x20000 ua=0x7f0000000000 ret=0`,
        ].join('\n'),
        'q',
      );
      expect(
        p.events.map((e) => [(e as { size: number }).size, (e as { implied?: boolean }).implied ?? false]),
      ).toEqual([
        [0x20000, false],
        [0, true],
        [0x20000, false],
      ]);
    }
  });
});
