/**
 * Trace replay: lines parsed per second for each reader (target ≥ 1 M/s) on synthetic text in the real
 * formats (tracefs kvm_tdp_mmu_spte_changed / kvm_mmu_get_page, strace KVM_RUN-heavy ioctl logs, QEMU
 * kvm_set_user_memory), and a 1 M-event replay end to end — read, merge, replay under every design —
 * (target < 10 s): 1,000,000 kernel events (faults over a 64 MiB guest, repeated on mapped pages as real
 * traces are, with BAR churn: 500 create/delete pairs with their zap-all-fast events). Also the same
 * 1 M events under the CLI's default audit level (points: a whole-VM audit at every memslot
 * call), and 200 k faults in random order (each its own access step, the runner's per-step cost).
 * Every line runs the compiled build (dist/, what `zaplab replay` runs) when it is fresh, else these
 * sources, and says which.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as ftraceSrc from '../src/replay/ftrace.ts';
import * as straceSrc from '../src/replay/strace.ts';
import * as qemuSrc from '../src/replay/qemu_trace.ts';
import * as mergeSrc from '../src/replay/merge.ts';
import * as replaySrc from '../src/replay/replay.ts';
import type { BenchLine } from './report.ts';
import { buildDist } from './dist.ts';

/** The replay's modules: dist/'s when fresh (what `zaplab replay` runs), else these sources; and which. */
async function replayModules(): Promise<{
  from: string;
  m: typeof ftraceSrc & typeof straceSrc & typeof qemuSrc & typeof mergeSrc & typeof replaySrc;
}> {
  const sources = { ...ftraceSrc, ...straceSrc, ...qemuSrc, ...mergeSrc, ...replaySrc };
  const root = fileURLToPath(new URL('..', import.meta.url));
  const dist = `${root}dist/replay/`;
  if (!existsSync(`${dist}replay.js`)) return { from: 'sources: no dist/, npm run build', m: sources };
  const why = buildDist();
  if (why !== null) return { from: `sources: ${why}`, m: sources };
  const load = async (f: string): Promise<object> => (await import(pathToFileURL(dist + f).href)) as object;
  const parts = await Promise.all(
    ['ftrace.js', 'strace.js', 'qemu_trace.js', 'merge.js', 'replay.js'].map(load),
  );
  return { from: 'dist', m: Object.assign({}, ...parts) as typeof sources };
}

/** The modules run() loaded, and each line's note of which build ran. */
let M = { ...ftraceSrc, ...straceSrc, ...qemuSrc, ...mergeSrc, ...replaySrc };
let tag = '';

/**
 * Lines parsed per second: five timed parses after a warm-up. The machine is shared, so one run can land
 * on a busy moment: the target is held to the median run, and the best run is printed beside it.
 */
function linesPerSec(name: string, text: string, lines: number, parse: (t: string) => unknown): BenchLine[] {
  parse(text); // warm up
  const rates: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    parse(text);
    rates.push(lines / ((performance.now() - t0) / 1000));
  }
  rates.sort((a, b) => a - b);
  return [
    {
      name: `${name}: lines parsed/s (median of 5)${tag}`,
      value: rates[2]!,
      unit: 'ops/s',
      target: { atLeast: 1e6 },
    },
    { name: `${name}: lines parsed/s (best of 5)${tag}`, value: rates[4]!, unit: 'ops/s' },
  ];
}

/** Lines as one flat string with a final newline, as a file read from disk is (`a + b` would make a rope). */
const text = (lines: string[]): string => [...lines, ''].join('\n');

function kernelText(n: number): string {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const ts = (1796560000 + i / 1e6).toFixed(6);
    out.push(
      i % 4 === 3
        ? ` qemu-system-x86-1001   [001] ...1. ${ts}: kvm_mmu_get_page: sp gen 0 gfn ${(i & 0xffff).toString(16)} l1 8-byte q0 direct wux nxe ad root 0 sync new`
        : ` qemu-system-x86-1001   [001] ...1. ${ts}: kvm_tdp_mmu_spte_changed: as id 0 gfn ${(i & 0x3fff).toString(16)} level 1 old_spte 8000000000000000 new_spte 600000${(0x10000 + (i & 0x3fff)).toString(16)}f77`,
    );
  }
  return text(out);
}

function straceText(n: number): string {
  const out = ['1000 1796560000.000000 ioctl(3, KVM_CREATE_VM, 0) = 9'];
  for (let i = 1; i < n; i++) {
    const ts = (1796560000 + i / 1e6).toFixed(6);
    out.push(
      i % 50 === 0
        ? `1000 ${ts} ioctl(9, KVM_SET_USER_MEMORY_REGION, {slot=1, flags=0, guest_phys_addr=0xc0000000, memory_size=${i % 100 ? 0 : 2097152}, userspace_addr=0x7f0100000000}) = 0`
        : `1001 ${ts} ioctl(11, KVM_RUN, 0) = 0`,
    );
  }
  return text(out);
}

function qemuText(n: number): string {
  const out: string[] = [];
  for (let i = 0; i < n; i++)
    out.push(
      `1000@${(1796560000 + i / 1e6).toFixed(6)}:kvm_set_user_memory Slot#1 flags=0x0 gpa=0xc0000000 size=0x${(i & 1 ? 0 : 0x200000).toString(16)} ua=0x7f0100000000 ret=0`,
    );
  return text(out);
}

/** 1 M kernel events: faults (mostly on mapped pages), with 500 BAR create/delete pairs and their zaps. */
function replayInputs(events: number): { qemu: string; kernel: string } {
  const q = [
    '1000@1796560000.000000:kvm_set_user_memory Slot#0 flags=0x0 gpa=0x0 size=0x4000000 ua=0x7f0000000000 ret=0',
  ];
  const k: string[] = [];
  const pairs = 500;
  const per = Math.floor(events / pairs);
  let t = 1796560000.000001;
  const ts = (): string => (t += 0.000001).toFixed(6);
  for (let p = 0; p < pairs; p++) {
    q.push(
      `1000@${ts()}:kvm_set_user_memory Slot#1 flags=0x0 gpa=0xc0000000 size=0x200000 ua=0x7f0100000000 ret=0`,
    );
    for (let i = 0; i < per - 1; i++) {
      const gfn = (p * 97 + i) % 16384;
      k.push(
        ` vcpu-1001   [001] ..... ${ts()}: kvm_tdp_mmu_spte_changed: as id 0 gfn ${gfn.toString(16)} level 1 old_spte 8000000000000000 new_spte 6000${(0x10000 + gfn).toString(16).padStart(8, '0')}f77`,
      );
    }
    k.push(
      ` qemu-1000   [000] ..... ${ts()}: kvm_mmu_zap_all_fast: kvm-mmu-valid-gen ${p & 1} used_pages 40`,
    );
    q.push(
      `1000@${ts()}:kvm_set_user_memory Slot#1 flags=0x0 gpa=0xc0000000 size=0x0 ua=0x7f0100000000 ret=0`,
    );
  }
  return { qemu: text(q), kernel: text(k) };
}

export async function run(): Promise<BenchLine[]> {
  const loaded = await replayModules();
  M = loaded.m;
  tag = loaded.from === 'dist' ? ' [dist]' : ` [${loaded.from}]`;
  const { readFtrace, readStrace, readQemuTrace, mergeStreams, replayEvents } = M;
  const N = 400_000;
  const lines: BenchLine[] = [
    ...linesPerSec('tracefs kvmmmu', kernelText(N), N, (t) => readFtrace(t, 'k')),
    ...linesPerSec('strace ioctl log', straceText(N), N, (t) => readStrace(t, 's')),
    ...linesPerSec('QEMU kvm_set_user_memory', qemuText(N), N, (t) => readQemuTrace(t, 'q')),
  ];
  const inp = replayInputs(1_000_000);
  const t0 = performance.now();
  const q = readQemuTrace(inp.qemu, 'q');
  const k = readFtrace(inp.kernel, 'k');
  const m = mergeStreams([q, k]);
  const read = (performance.now() - t0) / 1000;
  const r = await replayEvents(m.table, m.reports, { audit: 'off' });
  const s = (performance.now() - t0) / 1000;
  if (r.answers.disagreements.length) throw new Error('bench replay disagreed with its own trace');
  lines.push({ name: `1 M-event replay: read + merge${tag}`, value: read, unit: 's' });
  lines.push({
    name: `1 M-event replay end to end (${r.runs.length} designs, audit off)${tag}`,
    value: s,
    unit: 's',
    target: { atMost: 10 },
  });
  lines.push(
    await timed(
      '1 M-event replay end to end, audit points (CLI default)',
      replayInputs(1_000_000),
      'points',
      10,
    ),
  );
  lines.push(
    await timed('200 k scattered faults (one step each) end to end', scatteredInputs(200_000), 'off'),
  );
  return lines;
}

/** Read, merge and replay under every design, in seconds. */
async function timed(
  name: string,
  inp: { qemu: string; kernel: string },
  audit: 'off' | 'points',
  atMost?: number,
): Promise<BenchLine> {
  const t0 = performance.now();
  const m = M.mergeStreams([M.readQemuTrace(inp.qemu, 'q'), M.readFtrace(inp.kernel, 'k')]);
  const r = await M.replayEvents(m.table, m.reports, { audit });
  if (r.answers.disagreements.length) throw new Error('bench replay disagreed with its own trace');
  return {
    name: name + tag,
    value: (performance.now() - t0) / 1000,
    unit: 's',
    ...(atMost ? { target: { atMost } } : {}),
  };
}

/** Faults in a seeded random order over a 64 MiB guest: no two consecutive, so each is its own access step. */
function scatteredInputs(events: number): { qemu: string; kernel: string } {
  const qemu =
    '1000@1796560000.000000:kvm_set_user_memory Slot#0 flags=0x0 gpa=0x0 size=0x4000000 ua=0x7f0000000000 ret=0\n';
  const k: string[] = [];
  let x = 12345;
  for (let i = 0; i < events; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    const gfn = x % 16384;
    const ts = (1796560000.000001 + i / 1e6).toFixed(6);
    k.push(
      ` vcpu-1001   [001] ..... ${ts}: kvm_tdp_mmu_spte_changed: as id 0 gfn ${gfn.toString(16)} level 1 old_spte 8000000000000000 new_spte 6000${(0x10000 + gfn).toString(16).padStart(8, '0')}f77`,
    );
  }
  return { qemu, kernel: text(k) };
}
