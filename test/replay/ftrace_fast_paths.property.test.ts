/**
 * Property: the tracefs reader's in-line layout of kvm_tdp_mmu_spte_changed (the kernel's own
 * `as id %d gfn %llx level %d old_spte %llx new_spte %llx`, read in one pass) gives exactly what the
 * field finders give: the same events, counts, missing fields and `file:line: what was expected`
 * messages, on generated traces that mix the exact layout with every kind of departure from it (keys as
 * values, reordered, repeated or missing fields, tabs and double spaces, upper-case or 0x hex, bad and
 * empty values, trailing text).
 */
import { afterEach, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { FTRACE_FAST_PATHS, readFtrace } from '../../src/replay/ftrace.ts';

afterEach(() => {
  FTRACE_FAST_PATHS.on = true;
});

const KEYS = ['as', 'id', 'gfn', 'level', 'old_spte', 'new_spte'];
const hexTok = fc.stringMatching(/^[0-9a-f]{1,16}$/);
const value = fc.oneof(
  { weight: 6, arbitrary: hexTok },
  { weight: 2, arbitrary: fc.stringMatching(/^[0-9]{1,3}$/) },
  { weight: 1, arbitrary: fc.constantFrom(...KEYS) },
  { weight: 1, arbitrary: fc.stringMatching(/^(0x)?[0-9A-Fa-fxzg-]{0,18}$/) },
);
/** The exact layout, as the kernel prints it (present/absent, leaf or not, 4K or huge). */
const exact = fc
  .tuple(
    fc.stringMatching(/^[0-9]{1,2}$/),
    hexTok,
    fc.constantFrom('1', '2', '3', '4'),
    fc.constantFrom('8000000000000000', '600000010003f77', '6000000100008f7', '80000000000005a0', '0'),
    fc.constantFrom('8000000000000000', '600000010003f77', '6000000100008f7', '600000010003b77', '0'),
  )
  .map(([as, gfn, level, o, n]) => `as id ${as} gfn ${gfn} level ${level} old_spte ${o} new_spte ${n}`);
/** Anything else: fields in any order, repeated or missing, any separators and values. */
const other = fc
  .array(fc.tuple(fc.constantFrom(...KEYS, 'extra'), value, fc.constantFrom(' ', ' ', ' ', '  ', '\t')), {
    maxLength: 8,
  })
  .map((fs) => fs.map(([k, v, sep]) => `${k}${sep}${v}`).join(' '));
const mutated = fc
  .tuple(exact, fc.nat(80), fc.constantFrom('', ' ', '  ', 'x', '\t', 'gfn ', ' level 2', 'G'))
  .map(([t, at, ins]) => t.slice(0, at % (t.length + 1)) + ins + t.slice(at % (t.length + 1)));

/** The exact layout with one character changed (a near-miss key, a bad digit, a separator). */
const changed = fc
  .tuple(exact, fc.nat(80), fc.constantFrom('x', ' ', '\t', '0', 'G', '_', 'e'))
  .map(([t, at, c]) => {
    const i = at % t.length;
    return t.slice(0, i) + c + t.slice(i + 1);
  });

const line = (text: string, i: number): string =>
  ` vcpu-1001   [001] ..... ${(1796560000 + i / 1e6).toFixed(6)}: kvm_tdp_mmu_spte_changed: ${text}`;

function read(text: string, fast: boolean): string {
  FTRACE_FAST_PATHS.on = fast;
  const p = readFtrace(text, 'k.trace');
  return JSON.stringify({ events: p.events, report: p.report });
}

describe('tracefs reader: the kvm_tdp_mmu_spte_changed layout read in line', () => {
  it('gives what the field finders give', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            { weight: 4, arbitrary: exact },
            { weight: 3, arbitrary: mutated },
            { weight: 3, arbitrary: changed },
            { weight: 2, arbitrary: other },
          ),
          {
            minLength: 1,
            maxLength: 30,
          },
        ),
        (texts) => {
          const t = texts.map(line).join('\n') + '\n';
          expect(read(t, true)).toBe(read(t, false));
        },
      ),
      { numRuns: 400 },
    );
  });

  it('reads the exact layout in line (and its events are the ones expected)', () => {
    const t = [
      line('as id 0 gfn 1f level 1 old_spte 8000000000000000 new_spte 600000010003f77', 1),
      line('as id 0 gfn 1f level 1 old_spte 600000010003f77 new_spte 8000000000000000', 2),
      line('as id 0 gfn 1f level zz old_spte 600000010003f77 new_spte 8000000000000000', 3),
    ].join('\n');
    const p = readFtrace(t, 'k.trace');
    expect(p.events.map((e) => [e.kind, 'gfn' in e ? e.gfn : -1, e.line])).toEqual([
      ['fault', 0x1f, 1],
      ['leafZap', 0x1f, 2],
    ]);
    expect(p.report.malformed).toEqual([
      'k.trace:3: kvm_tdp_mmu_spte_changed: expected hex gfn/old_spte/new_spte and a decimal level',
    ]);
  });
});
