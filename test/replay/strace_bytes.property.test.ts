/**
 * Property: the strace reader that reads its lines in the shared byte buffer (TraceReader.b: the head, the
 * `ioctl(` / `<... ioctl resumed>` / `<unfinished ...>` words and the unused request name compared four
 * bytes at a time, the last unused name too) answers exactly what the reader of 37fb73c answered, which
 * read every character with charCodeAt and startsWith. That reader is kept, unchanged, in old_readers/ as
 * the oracle. Generated logs: KVM_RUN-heavy ioctl lines with and without pids, `-y` fd decorations, every
 * KVM ioctl the reader uses (decoded structs, `_IOC(…)` names, pointers), results with errnos, unfinished
 * and resumed pairs (also unmatched ones), other syscalls, signals and blank lines; then characters
 * inserted, deleted or replaced (ASCII and not); logs long enough to span several chunks. Compared: every
 * event (keys, order, values), the whole report, and the --strict error.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { readStrace } from '../../src/replay/strace.ts';
import { readStrace as oldReadStrace } from './old_readers/strace.ts';
import { answer, longText, mutate, mutation } from './oracle.ts';

const decs = (lo: number, hi: number): fc.Arbitrary<string> =>
  fc.string({ unit: fc.constantFrom(...'0123456789'), minLength: lo, maxLength: hi });

const head = fc
  .tuple(
    fc.oneof({ weight: 4, arbitrary: decs(1, 6).map((p) => `${p} `) }, fc.constantFrom('', '1001  ', '12 ')),
    decs(1, 11),
    fc.oneof({ weight: 6, arbitrary: decs(6, 6) }, decs(0, 10)),
  )
  .map(([pid, sec, frac]) => `${pid}${sec}.${frac}`);

const fd = fc.constantFrom('9', '11', '3', '9<anon_inode:kvm-vm>', '11<anon_inode:kvm-vcpu:0>', '12');
const region = fc
  .tuple(fc.nat(3), fc.constantFrom('0', 'KVM_MEM_LOG_DIRTY_PAGES', 'KVM_MEM_READONLY|0x8', 'x'), fc.nat(8))
  .map(
    ([slot, flags, sz]) =>
      `{slot=${slot}, flags=${flags}, guest_phys_addr=0xc0000000, memory_size=${sz * 0x100000}, userspace_addr=0x7f0100000000}`,
  );
const call = fc.oneof(
  { weight: 8, arbitrary: fd.map((f) => `ioctl(${f}, KVM_RUN, 0)`) },
  fc.constantFrom(
    'ioctl(3, KVM_CREATE_VM, 0)',
    'ioctl(3, KVM_CREATE_VM, 0x2)',
    'ioctl(9, KVM_CREATE_VCPU, 0)',
  ),
  fc.tuple(fd, region).map(([f, r]) => `ioctl(${f}, KVM_SET_USER_MEMORY_REGION, ${r})`),
  fd.map((f) => `ioctl(${f}, _IOC(_IOC_WRITE, 0xae, 0x49, 0x20), 0x7ffc1234)`),
  fd.map((f) => `ioctl(${f}, KVM_ENABLE_CAP, {cap=KVM_CAP_DISABLE_QUIRKS2, flags=0, args=[0x20, 0, 0, 0]})`),
  fd.map((f) => `ioctl(${f}, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY)`),
  fd.map((f) => `ioctl(${f}, _IO(KVMIO, 0x99), 0)`),
  fc.constantFrom('ioctl(9, KVM_RUN', 'ioctl(9,KVM_RUN, 0)', 'ioctl(9, , 0)', 'ioctl(9, KVM_RU N, 0)'),
);
const result = fc.constantFrom(
  ' = 0',
  ' = 0',
  ' = 9',
  ' = -1 EEXIST (File exists)',
  ' = ?',
  ' = -1 EINTR',
  '',
);

const line = fc.oneof(
  { weight: 10, arbitrary: fc.tuple(head, call, result).map(([h, c, r]) => `${h} ${c}${r}`) },
  {
    weight: 2,
    arbitrary: fc
      .tuple(head, call, head, result)
      .map(([h, c, h2, r]) => `${h} ${c} <unfinished ...>\n${h2} <... ioctl resumed>${r}`),
  },
  fc.constantFrom(
    '1000 1796560000.000001 <... ioctl resumed>) = 0',
    '1000 1796560000.000001 ioctl(9, KVM_RUN, 0 <unfinished ...>',
    '1000 1796560000.000001 --- SIGUSR1 {si_signo=SIGUSR1} ---',
    '1000 1796560000.000001 +++ exited with 0 +++',
    '1000 1796560000.000001 execve("/usr/bin/qemu", ["qemu"], 0x7ffc /* 30 vars */) = 0',
    '',
    '  ',
    'strace: Process 1000 attached',
  ),
);

const log = fc
  .array(
    fc.tuple(
      line,
      fc.integer({ min: 1, max: 4 }),
      fc.array(mutation(' 0123456789.,()=<>_-ACEIKMNORUVabcdefx'), { maxLength: 3 }),
      fc.boolean(),
    ),
    { maxLength: 40 },
  )
  .map((ls) =>
    ls.flatMap(([l, k, m, doMutate]) => Array<string>(k).fill(doMutate ? mutate(l, m) : l)).join('\n'),
  );

const OPTS = [{}, { strict: true }];

describe('strace reader on bytes = the reader of 37fb73c (old_readers/, frozen)', () => {
  it('every event, the report and the --strict error, on generated and mutated logs', () => {
    fc.assert(
      fc.property(log, fc.boolean(), (text, nl) => {
        const t = nl ? `${text}\n` : text;
        for (const o of OPTS)
          expect(answer(readStrace, t, o, 's.txt')).toBe(answer(oldReadStrace, t, o, 's.txt'));
      }),
      { numRuns: 500 },
    );
  });

  it('the same across the byte chunks: long logs, and a line longer than a chunk', () => {
    fc.assert(
      fc.property(fc.array(log, { minLength: 1, maxLength: 3 }), fc.nat(300), (parts, pad) => {
        const text = longText(parts, pad);
        for (const o of OPTS) expect(answer(readStrace, text, o)).toBe(answer(oldReadStrace, text, o));
      }),
      { numRuns: 10 },
    );
    const run = '1000 1796560000.000001 ioctl(11, KVM_RUN, 0) = 0';
    const long = `${run}\n1000 1796560000.000002 ioctl(11, KVM_RUN, ${'x'.repeat(70_000)}) = 0\n${run}`;
    expect(answer(readStrace, long, {})).toBe(answer(oldReadStrace, long, {}));
    expect(readStrace(long, 's').report.unknown).toEqual({ KVM_RUN: 3 });
  });
});
