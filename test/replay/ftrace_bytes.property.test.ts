/**
 * Property: the kernel-trace reader that reads its text as bytes (chunks of whole lines in a reused
 * buffer, every character not in ASCII one byte that sends the reader back to the text, the event name
 * compared in bytes) answers exactly what the reader of commit c46bd25 answered, which
 * read every character with charCodeAt. That reader is kept, unchanged, in old_ftrace/ as the oracle.
 * Generated traces: records of every event the replay reads and of others, in the kernel's and
 * trace-cmd's layouts, with random tasks (spaces, parentheses, tgids, non-ASCII letters and spaces such
 * as U+00A0, U+2028, U+3000 around them), cpus, latency flags, times, fields in any order, missing or
 * repeated, bad numbers and numbers past 2^53; lines repeated so that one thread's prefix recurs; then
 * characters inserted, deleted or replaced; texts long enough to span several chunks, and lines longer
 * than a chunk. Compared: every event (keys, order, values), the whole report, and the --strict error.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { readFtrace } from '../../src/replay/ftrace.ts';
import { readFtrace as oldReadFtrace } from './old_ftrace/ftrace.ts';
import type { ReadOptions } from '../../src/replay/events.ts';
import { answer, mutate, mutation as oracleMutation, type Read } from './oracle.ts';

const answerOf = (read: Read, text: string, opts: ReadOptions): string => answer(read, text, opts, 'k.trace');

const hexs = (lo: number, hi: number): fc.Arbitrary<string> =>
  fc.string({ unit: fc.constantFrom(...'0123456789abcdefABCDEF'), minLength: lo, maxLength: hi });
const decs = (lo: number, hi: number): fc.Arbitrary<string> =>
  fc.string({ unit: fc.constantFrom(...'0123456789'), minLength: lo, maxLength: hi });

const task = fc
  .tuple(
    fc.constantFrom('qemu-system-x86', 'vcpu 0', 'CPU 1/KVM', 'kvm-nx-lpage', 'a(b)', '', '\u00e9t\u00e9'),
    fc.constantFrom('', ' ', '\u00a0', '\u3000', '\t'),
    decs(1, 6),
    fc.constantFrom('', ' (1000)', ' ( 4242 )', ' (-----)', '(12)', ' (x)'),
  )
  .map(([c, sp, pid, tgid]) => `${sp}${c}-${pid}${tgid}`);

const event = fc.oneof(
  fc
    .tuple(hexs(1, 18), fc.constantFrom('1', '2', '3', 'x'), hexs(1, 17), hexs(1, 17))
    .map(
      ([g, l, o, n]) => `kvm_tdp_mmu_spte_changed: as id 0 gfn ${g} level ${l} old_spte ${o} new_spte ${n}`,
    ),
  fc
    .tuple(hexs(1, 14), fc.constantFrom('(rwxu)', '(-wx-)', '(r-x-)', '(---)', ''), fc.constantFrom('1', '2'))
    .map(([g, p, l]) => `kvm_mmu_set_spte: gfn ${g} spte 8000000${g}f77 ${p} level ${l} at 1234`),
  fc.tuple(hexs(1, 14), decs(1, 2)).map(([g, l]) => `kvm_mmu_spte_requested: gfn ${g} pfn 1234 level ${l}`),
  fc
    .tuple(hexs(1, 16), hexs(1, 4))
    .map(([a, e]) => `kvm_page_fault: vcpu 0 rip 0xfff0 address 0x${a} error_code 0x${e}`),
  fc
    .tuple(fc.constantFrom('get', 'prepare_zap'), hexs(1, 8), fc.constantFrom('new', 'existing', 'sync', ''))
    .map(
      ([k, g, w]) => `kvm_mmu_${k}_page: sp gen 0 gfn ${g} l1 8-byte q0 direct wux nxe ad root 0 sync ${w}`,
    ),
  fc.tuple(hexs(1, 8)).map(([g]) => `kvm_mmu_get_page: new sp gfn ${g} 2 q0 direct wux`),
  decs(1, 3).map((g) => `kvm_mmu_zap_all_fast: kvm-mmu-valid-gen ${g} used_pages 40`),
  fc
    .tuple(hexs(1, 14), hexs(1, 14))
    .map(([a, b]) => `kvm_unmap_hva_range: mmu notifier unmap range: 0x${a} -- 0x${b}`),
  fc.constantFrom('kvm_exit: reason EPT_VIOLATION', 'sched_switch: prev=a', 'kvm_entry: vcpu 0'),
  // names that a used one is the start of
  fc.constantFrom(
    'kvm_mmu_get_page_x: sp gen 0 gfn 5 l1 new',
    'kvm_page_faults: vcpu 0 rip 0x1 address 0x2000 error_code 0x2',
    'kvm_tdp_mmu_spte_changed2: as id 0 gfn 5 level 1 old_spte 0 new_spte 800',
    'kvm_tdp_mmu_spte_changed: as id 0 gfn 5 level 1 old_spte 0 new_spte 800 level 2 gfn 6',
  ),
);

const record = fc
  .tuple(
    task,
    // mostly well-formed (the event's text is read only then), sometimes not
    fc.constantFrom('000', '1', '012', '000', '1', '012', 'x', ''),
    fc.constantFrom(' ...1.', ' d..1.', '', '  .....'),
    decs(1, 17),
    fc.oneof({ weight: 5, arbitrary: decs(1, 9) }, { weight: 1, arbitrary: decs(0, 12) }),
    fc.constantFrom(...Array<string>(10).fill(': '), ':', ':  ', '.: ', 'x: '),
    event,
  )
  .map(
    ([t, cpu, flags, sec, frac, colon, ev]) =>
      `${t} [${cpu}]${flags} ${sec}${frac ? '.' + frac : ''}${colon}${ev}`,
  );

const header = fc.constantFrom('# tracer: nop', '#', 'cpus=2', 'version = 7', 'CPU 0 is empty', '', ' ');

const mutation = oracleMutation(' 0123456789abcdefx-_:.()[]\t#lgqnewspf');

/**
 * The kernel's texts near-missed where the reader reads them as templates: at a random space of the record
 * after its event name, a doubled space, a tab, a 0x or '-' before the value, a key repeated or another
 * word put in, the rest of the line cut, or the word after the space misspelt (its last letter a q).
 */
const TWEAKS = [
  ...['  ', '\t', ' 0x', ' -', ' gfn 7 ', ' level 2 ', ' new_spte 800 ', ' x ', ' ( ', ') level '],
  ...['\n', 'q', 'q'],
];
function tweak(l: string, at: number, tw: string): string {
  const from = l.indexOf(': ', l.indexOf(': ') + 2) + 1;
  const spaces = [...l.slice(from)].flatMap((c, i) => (c === ' ' ? [from + i] : []));
  if (from === 0 || spaces.length === 0) return l;
  const p = spaces[at % spaces.length]!;
  if (tw === '\n') return l.slice(0, p);
  if (tw === 'q') {
    const end = l.indexOf(' ', p + 1);
    const e = end === -1 ? l.length : end;
    return e > p + 1 ? `${l.slice(0, e - 1)}q${l.slice(e)}` : l;
  }
  return l.slice(0, p) + tw + l.slice(p + 1);
}
const nearMiss = fc
  .tuple(record, fc.array(fc.tuple(fc.nat(), fc.constantFrom(...TWEAKS)), { minLength: 1, maxLength: 2 }))
  .map(([l, tws]) => tws.reduce((x, [at, tw]) => tweak(x, at, tw), l));

const line = fc.oneof(
  { weight: 6, arbitrary: record },
  { weight: 6, arbitrary: nearMiss },
  { weight: 1, arbitrary: header },
  {
    weight: 3,
    arbitrary: fc
      .tuple(record, fc.array(mutation, { minLength: 1, maxLength: 3 }))
      .map(([l, m]) => mutate(l, m)),
  },
);

/** Lines, each repeated 1 to 4 times (a thread's records come in runs), joined with or without a final newline. */
const trace = fc
  .tuple(fc.array(fc.tuple(line, fc.integer({ min: 1, max: 4 })), { maxLength: 40 }), fc.boolean())
  .map(([ls, nl]) => ls.flatMap(([l, k]) => Array<string>(k).fill(l)).join('\n') + (nl ? '\n' : ''));

const OPTS: ReadOptions[] = [{}, { strict: true }, { pids: new Set([1000, 4242, 12]) }];

describe('kernel trace reader on bytes', () => {
  it('answers what the charCodeAt reader answered, on random and malformed traces', () => {
    fc.assert(
      fc.property(trace, (text) => {
        for (const o of OPTS) expect(answerOf(readFtrace, text, o)).toBe(answerOf(oldReadFtrace, text, o));
      }),
      { numRuns: 600 },
    );
  });

  it('the same across chunk boundaries: long texts and a line longer than a chunk', () => {
    fc.assert(
      fc.property(fc.array(trace, { minLength: 1, maxLength: 4 }), fc.nat(300), (parts, pad) => {
        // ~200 k characters: several 64 k chunks whose ends fall at random lines
        let text = parts.join('\n');
        while (text.length < 200_000) text += `\n${' '.repeat(pad)}${parts.join('\n')}`;
        for (const o of OPTS) expect(answerOf(readFtrace, text, o)).toBe(answerOf(oldReadFtrace, text, o));
      }),
      { numRuns: 12 },
    );
    const rec = ' qemu-1000 [000] ..... 1796560000.000001: kvm_tdp_mmu_spte_changed: as id 0 gfn 12 level 1';
    const long = `${rec}\n${rec}${' x'.repeat(70_000)} old_spte 0 new_spte 800\n${rec} old_spte 0 new_spte 800`;
    for (const o of OPTS) expect(answerOf(readFtrace, long, o)).toBe(answerOf(oldReadFtrace, long, o));
    // the long line is one record: its fault is read (the field finder goes past the chunk's other lines)
    expect(readFtrace(long, 'k').events.map((e) => e.line)).toEqual([2, 3]);
  });

  it('a record prefix remembered in bytes is not taken for one that differs only outside ASCII', () => {
    // U+00A0 is trimmed (tgid 12, pid 7), U+00E9 is not (no tgid; "x-7é" has no pid: malformed)
    const ev = '1796560000.000001: kvm_tdp_mmu_spte_changed: as id 0 gfn 5 level 1 old_spte 0 new_spte 800';
    const text = [
      ` x-7 ( \u00a012 ) [000] ..... ${ev}`,
      ` x-7 ( \u00e912 ) [000] ..... ${ev}`,
      ` x-7\u00a0 [000] ..... ${ev}`,
      ` x-7\u00e9 [000] ..... ${ev}`,
      ` x-7 ( \u00a012 ) [000] ..... ${ev}`,
    ].join('\n');
    for (const o of OPTS) expect(answerOf(readFtrace, text, o)).toBe(answerOf(oldReadFtrace, text, o));
    const r = readFtrace(text, 'k', { pids: new Set([12]) });
    expect(r.events.map((e) => e.line)).toEqual([1, 5]);
    expect(r.report.filtered).toBe(2);
    expect(r.report.malformed).toEqual([
      'k:4: expected "comm-pid [cpu] seconds.microseconds: event: fields" (tracefs or trace-cmd report)',
    ]);
  });
});
