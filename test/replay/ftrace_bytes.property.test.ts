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

type Read = typeof readFtrace;

function answer(read: Read, text: string, opts: ReadOptions): string {
  try {
    const r = read(text, 'k.trace', opts);
    return JSON.stringify({ ev: r.events.map((e) => [Object.keys(e), e]), rep: r.report }, (_, v: unknown) =>
      typeof v === 'number' && !Number.isFinite(v) ? `#${v}` : v === undefined ? '#undef' : v,
    );
  } catch (e) {
    return `THROW ${(e as Error).constructor.name} ${(e as Error).message}`;
  }
}

const ODD = ['\u00a0', '\u2028', '\u3000', '\u00e9', '\u4e2d', '\t', '\r', '\ufeff', '\ud83d\ude00'];
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
);

const record = fc
  .tuple(
    task,
    fc.constantFrom('000', '1', '012', 'x', ''),
    fc.constantFrom(' ...1.', ' d..1.', '', '  .....'),
    decs(1, 17),
    decs(0, 9),
    event,
  )
  .map(([t, cpu, flags, sec, frac, ev]) => `${t} [${cpu}]${flags} ${sec}${frac ? '.' + frac : ''}: ${ev}`);

const header = fc.constantFrom('# tracer: nop', '#', 'cpus=2', 'version = 7', 'CPU 0 is empty', '', ' ');

/** A character inserted, deleted or replaced at a random place (an ASCII one, or one of ODD). */
const mutation = fc.tuple(
  fc.nat(),
  fc.constantFrom(0, 1, 2),
  fc.constantFrom(...' 0123456789abcdefx-_:.()[]\t#lgqnewspf', ...ODD),
);

function mutate(l: string, muts: [number, number, string][]): string {
  for (const [at, op, c] of muts) {
    const p = at % (l.length + 1);
    l = op === 0 ? l.slice(0, p) + c + l.slice(p) : l.slice(0, p) + (op === 1 ? '' : c) + l.slice(p + 1);
  }
  return l;
}

const line = fc.oneof(
  { weight: 6, arbitrary: record },
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
        for (const o of OPTS) expect(answer(readFtrace, text, o)).toBe(answer(oldReadFtrace, text, o));
      }),
      { numRuns: 400 },
    );
  });

  it('the same across chunk boundaries: long texts and a line longer than a chunk', () => {
    fc.assert(
      fc.property(fc.array(trace, { minLength: 1, maxLength: 4 }), fc.nat(300), (parts, pad) => {
        // ~200 k characters: several 64 k chunks whose ends fall at random lines
        let text = parts.join('\n');
        while (text.length < 200_000) text += `\n${' '.repeat(pad)}${parts.join('\n')}`;
        for (const o of OPTS) expect(answer(readFtrace, text, o)).toBe(answer(oldReadFtrace, text, o));
      }),
      { numRuns: 12 },
    );
    const rec = ' qemu-1000 [000] ..... 1796560000.000001: kvm_tdp_mmu_spte_changed: as id 0 gfn 12 level 1';
    const long = `${rec}\n${rec}${' x'.repeat(70_000)} old_spte 0 new_spte 800\n${rec} old_spte 0 new_spte 800`;
    for (const o of OPTS) expect(answer(readFtrace, long, o)).toBe(answer(oldReadFtrace, long, o));
    // the long line is one record: its fault is read (the field finder goes past the chunk's other lines)
    expect(readFtrace(long, 'k').events.map((e) => e.line)).toEqual([2, 3]);
  });
});
