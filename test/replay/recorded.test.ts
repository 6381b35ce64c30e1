/**
 * Replays of real recordings made on the development host (QEMU 7.2 SeaBIOS boots of pc and q35, and a
 * pc-dimm hotplug driven over QMP, and a hotplug
 * and unplug whose eject a boot-sector guest performs (pc-dimm-unplug/README.md); strace 6.1; tracefs of kernel 6.18.44-fc-v1272, shadow MMU, tai clock)
 * and of a hand-made TDP-MMU trace. Each recorded replay must get every memslot answer right and make as
 * many zap-all-fasts as the kernel did (both numbers asserted), and the QEMU-trace and strace views of the
 * same boot must give the same replay.
 */
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { loadInputs, readText } from '../../src/replay/load.ts';
import { mergeStreams } from '../../src/replay/merge.ts';
import { replayEvents, type ReplayResult } from '../../src/replay/replay.ts';
import { readQemuTrace } from '../../src/replay/qemu_trace.ts';
import { readFtrace } from '../../src/replay/ftrace.ts';
import type { Parsed } from '../../src/replay/events.ts';
import { formatReplay } from '../../src/replay/format.ts';
import { readFileSync } from 'node:fs';

const DIR = join(import.meta.dirname, '..', 'recorded', 'replay');

async function replayBundle(name: string, only?: 'qemu' | 'strace'): Promise<ReplayResult> {
  const { streams, bundle } = loadInputs([join(DIR, name)], [], {});
  const keep = streams.filter(
    (s) => only === undefined || !s.report.file.startsWith(only === 'qemu' ? 'strace' : 'qemu'),
  );
  const m = mergeStreams(keep);
  return replayEvents(m.events, m.reports, { host: bundle!.host });
}

const row = (r: ReplayResult, key: string) => r.observed.rows.find((x) => x.key === key)!;

describe('recorded QEMU 7.2 runs on the shadow-MMU host', () => {
  const cases = [
    // name, memslot calls, kvm_mmu_zap_all_fast lines in kernel.trace, shadow pages the kernel zapped
    { name: 'pc-boot', calls: 20, zapAll: 9, shadowZapped: 24 },
    { name: 'q35-boot', calls: 22, zapAll: 10, shadowZapped: 24 },
    { name: 'pc-dimm-hotplug', calls: 21, zapAll: 9, shadowZapped: 24 },
    { name: 'pc-dimm-unplug', calls: 32, zapAll: 13, shadowZapped: 48 },
  ];
  for (const c of cases) {
    it(`${c.name}: ${c.calls} memslot calls answered as the kernel did; ${c.zapAll} zap-all-fasts, as the kernel`, async () => {
      const kernelLines = readText(join(DIR, c.name, 'kernel.trace.gz'))
        .split('\n')
        .filter((l) => l.includes(' kvm_mmu_zap_all_fast: ')).length;
      expect(kernelLines).toBe(c.zapAll);
      const r = await replayBundle(c.name);
      expect(r.answers).toEqual({ compared: c.calls, disagreements: [] });
      expect(r.tracedDesign).toBe('quirk');
      expect(row(r, 'zapAllFast')).toMatchObject({ observed: c.zapAll, modelled: c.zapAll });
      // the boots run at CPL0, emulated: the kernel builds and zaps shadow pages the model has no fault for
      expect(row(r, 'shadowZapped')).toMatchObject({ observed: c.shadowZapped, modelled: 0 });
      expect(row(r, 'faults')).toMatchObject({ observed: 0, modelled: 0 });
      expect(r.faultSource).toBe('none in the trace');
      expect(r.impossible).toEqual([]);
      // every design priced; the precise designs make the zaps the quirk makes zap-all
      const by = Object.fromEntries(r.runs.map((x) => [x.design, x.totals]));
      expect(r.runs.map((x) => x.design)).toEqual(['quirk', 'quirk-off', 'vm-type', 'slot-flag']);
      expect(by['quirk']!['memslot_zap_all_fast']).toBe(c.zapAll);
      expect(by['quirk-off']!['memslot_zap_precise']).toBe(c.zapAll);
      expect(r.skipped).toEqual([{ id: 'slot-flag+leafs', why: 'KVM_MEM_ZAP_LEAFS_ONLY needs the TDP MMU' }]);
      expect(r.runs.every((x) => x.verdict === 'ok')).toBe(true);
    });
  }

  it('the QEMU trace and strace views of the same boot give the same replay', async () => {
    for (const name of ['pc-boot', 'q35-boot', 'pc-dimm-hotplug', 'pc-dimm-unplug']) {
      const q = await replayBundle(name, 'qemu');
      const s = await replayBundle(name, 'strace');
      expect(q.answers.compared).toBe(s.answers.compared);
      expect(q.runs.map((x) => [x.design, x.totals, x.modelled.totalNs])).toEqual(
        s.runs.map((x) => [x.design, x.totals, x.modelled.totalNs]),
      );
      expect(q.observed.rows).toEqual(s.observed.rows);
      expect(q.observed.differences.map((d) => [d.what, d.observed, d.modelled])).toEqual(
        s.observed.differences.map((d) => [d.what, d.observed, d.modelled]),
      );
    }
  });

  it('the hotplugged DIMM is a slot at 4 GiB created while the guest runs', async () => {
    const { streams } = loadInputs([join(DIR, 'pc-dimm-hotplug')], [], {});
    const q = streams.find((s) => s.report.file.startsWith('qemu'))!;
    const last = q.events.at(-1)!;
    expect(last).toMatchObject({ kind: 'memslot', slot: 2, gpa: 0x100000000, size: 0x8000000, ret: 0 });
  });

  it('the unplugged DIMM: its slot at 4 GiB created, then DELETEd with one kvm_mmu_zap_all_fast, as the model', async () => {
    const { streams, bundle } = loadInputs([join(DIR, 'pc-dimm-unplug')], [], {});
    const m = mergeStreams(streams);
    const slots = m.events.filter((e) => e.kind === 'memslot');
    expect(slots.slice(-2).map((e) => e.kind === 'memslot' && [e.slot, e.gpa, e.size, e.ret])).toEqual([
      [6, 0x100000000, 0x8000000, 0],
      [6, 0x100000000, 0, 0],
    ]);
    const del = m.events.lastIndexOf(slots.at(-1)!);
    expect(m.events.slice(del).filter((e) => e.kind === 'zapAllFast').length).toBe(1);
    const r = await replayEvents(m.events, m.reports, { host: bundle!.host });
    const quirk = r.runs.find((x) => x.design === 'quirk')!;
    expect(quirk.steps.at(-1)!.counts['memslot_zap_all_fast']).toBe(1);
    expect(r.runs.find((x) => x.design === 'quirk-off')!.steps.at(-1)!.counts['memslot_zap_precise']).toBe(1);
  });
});

describe('the README', () => {
  it("shows the q35 boot's replay exactly as the CLI prints it today", async () => {
    const readme = readFileSync(join(import.meta.dirname, '..', '..', 'README.md'), 'utf8');
    const at = readme.indexOf('as `zaplab replay test/recorded/replay/q35-boot` prints it');
    expect(at).toBeGreaterThan(0);
    const open = readme.indexOf('```\n', at) + 4;
    const block = readme.slice(open, readme.indexOf('```\n', open));
    // what replay_cmd.ts does: load the bundle, merge, replay with the bundle's host, merge notes first
    const { streams, bundle } = loadInputs([join(DIR, 'q35-boot')], [], {});
    const m = mergeStreams(streams);
    const r = await replayEvents(m.events, m.reports, { host: bundle!.host });
    r.notes.unshift(...m.notes);
    expect(block).toBe(formatReplay(r, { color: false }));
  });
});

describe('a hand-made TDP-MMU trace (kvm_tdp_mmu_spte_changed)', () => {
  it('drives faults and zaps, and prices every design', async () => {
    const r = await replayBundle('handmade-tdp');
    expect(r.faultSource).toBe('kvm_tdp_mmu_spte_changed');
    expect(r.answers).toEqual({ compared: 4, disagreements: [] });
    expect(r.observed.rows.map((x) => [x.key, x.observed, x.modelled])).toEqual([
      ['zapAllFast', 1, 1],
      ['shadowZapped', 0, 0],
      ['shadowCreated', 0, 0],
      ['leafZapped', 110, 110],
      ['faults', 210, 210],
      ['unmaps', 0, 0],
    ]);
    expect(r.observed.differences).toEqual([]);
    const by = Object.fromEntries(r.runs.map((x) => [x.design, x.totals]));
    const zapped = (t: Record<string, number>) =>
      (t['sptes_zapped_4k'] ?? 0) + (t['sptes_zapped_2m'] ?? 0) + (t['sptes_zapped_1g'] ?? 0);
    // zap-all drops the 100 RAM leafs with the BAR's 10 and refaults them; the precise zap drops the 10
    expect([zapped(by['quirk']!), by['quirk']!['refaults']]).toEqual([110, 100]);
    expect([zapped(by['quirk-off']!), by['quirk-off']!['refaults'] ?? 0]).toEqual([10, 0]);
    expect([zapped(by['slot-flag+leafs']!), by['slot-flag+leafs']!['refaults'] ?? 0]).toEqual([10, 0]);
    const cost = Object.fromEntries(r.runs.map((x) => [x.design, x.modelled.totalNs]));
    expect(cost['quirk']! > cost['quirk-off']!).toBe(true);
  });
});

describe('bad and impossible traces', () => {
  const k = (lines: string[]): Parsed => readFtrace(lines.join('\n'), 'k');
  it('a kernel answer the model does not give is listed with its time and call', async () => {
    const q = readQemuTrace(
      [
        '1@5.000000:kvm_set_user_memory Slot#0 flags=0x0 gpa=0x0 size=0x1000 ua=0x7f0000000000 ret=0',
        '1@5.000010:kvm_set_user_memory Slot#0 flags=0x0 gpa=0x0 size=0x1000 ua=0x7f0000000000 ret=-17',
      ].join('\n'),
      'q',
    );
    const m = mergeStreams([q]);
    const r = await replayEvents(m.events, m.reports);
    expect(r.answers.disagreements).toEqual([
      {
        t: 5000010,
        where: 'qemu:2 t+0.000010s',
        call: 'SET slot 0 gpa 0x0 size 0x1000',
        traced: 'EEXIST',
        model: '0',
      },
    ]);
  });

  it('a DELETE of a slot never created and a fault no slot covers are reported, not crashed on', async () => {
    const q = readQemuTrace(
      [
        '1@5.000000:kvm_set_user_memory Slot#0 flags=0x0 gpa=0x0 size=0x2000 ua=0x7f0000000000 ret=0',
        '1@5.000020:kvm_set_user_memory Slot#7 flags=0x0 gpa=0x100000 size=0x0 ua=0x0 ret=0',
      ].join('\n'),
      'q',
    );
    const kt = k([
      '  qemu-2  [000] ..... 5.000010: kvm_mmu_set_spte: gfn 1 spte 1f0877 (rw-u) level 1 at 12345',
      '  qemu-2  [000] ..... 5.000011: kvm_mmu_set_spte: gfn 900 spte 1f0877 (rw-u) level 1 at 12345',
    ]);
    const m = mergeStreams([q, kt]);
    const r = await replayEvents(m.events, m.reports);
    expect(r.impossible).toEqual([
      'kernel:2 t+0.000011s: kvm_mmu_set_spte on gfn 0x900, which no memslot covers (not replayed)',
      'qemu:2 t+0.000020s: DELETE of slot 7, which no traced call created (replayed: the model answers it)',
    ]);
    // 6.x answers a DELETE of an empty slot with EINVAL (kvm_set_memory_region), so the trace is impossible twice
    expect(r.answers.disagreements).toEqual([
      {
        t: 5000020,
        where: 'qemu:2 t+0.000020s',
        call: 'DELETE slot 7 gpa 0x100000 size 0x0',
        traced: '0',
        model: 'EINVAL',
      },
    ]);
    expect(r.runs.find((x) => x.design === 'quirk')!.totals['vcpu.pf_fixed']).toBe(1);
    // the same trace on the shadow-paging host: faults counted, not replayed, and said so
    const s = await replayEvents(m.events, m.reports, { host: { profile: 'pvm-6.18' } });
    expect(s.runs.find((x) => x.design === 'quirk')!.totals['vcpu.pf_fixed'] ?? 0).toBe(0);
    expect(s.observed.rows.find((x) => x.key === 'faults')).toMatchObject({ observed: 2, modelled: 0 });
    expect(s.impossible).toEqual(r.impossible);
    expect(s.notes).toContain(
      'shadow-paging host (tdp off): guest accesses need the guest page tables, which traces do not carry; faults are counted, not replayed',
    );
  });

  it('a memslot range past the 47-bit host is replayed with hva 0 and noted, not thrown on', async () => {
    const q = readQemuTrace(
      '1@1.000001:kvm_set_user_memory Slot#0 flags=0x0 gpa=0x0 size=0xfffffffffff000 ua=0x7f0000000000 ret=-22\n',
      'q',
    );
    const m = mergeStreams([q]);
    const r = await replayEvents(m.events, m.reports);
    expect(r.answers).toEqual({ compared: 1, disagreements: [] });
    expect(r.notes).toEqual([
      'qemu:1 t+0.000000s: hva range 0x7f0000000000+0xfffffffffff000 is past the 47-bit host; replayed with hva 0',
    ]);
  });

  it('kvm_unmap_hva_range is replayed only over memslot-backed memory, per slot piece', async () => {
    const q = readQemuTrace(
      [
        '1@5.000000:kvm_set_user_memory Slot#0 flags=0x0 gpa=0x0 size=0x10000 ua=0x7f0000000000 ret=0',
        '1@5.000001:kvm_set_user_memory Slot#1 flags=0x0 gpa=0x100000 size=0x10000 ua=0x7f0000010000 ret=0',
      ].join('\n'),
      'q',
    );
    const kt = k([
      '  qemu-2  [000] ..... 5.000010: kvm_tdp_mmu_spte_changed: as id 0 gfn f level 1 old_spte 8000000000000000 new_spte 6000001234f77',
      '  qemu-2  [000] ..... 5.000011: kvm_tdp_mmu_spte_changed: as id 0 gfn 100 level 1 old_spte 8000000000000000 new_spte 6000001235f77',
      // the VMM's heap: no slot there
      '  qemu-1  [000] ..... 5.000020: kvm_unmap_hva_range: mmu notifier unmap range: 0x007f1000000000 -- 0x007f1000200000',
      // the last page of slot 0 and the first of slot 1: two pieces
      '  qemu-1  [000] ..... 5.000021: kvm_unmap_hva_range: mmu notifier unmap range: 0x007f000000f000 -- 0x007f0000011000',
    ]);
    const m = mergeStreams([q, kt]);
    const r = await replayEvents(m.events, m.reports);
    expect(r.observed.rows.map((x) => [x.key, x.observed, x.modelled])).toEqual([
      ['zapAllFast', 0, 0],
      ['shadowZapped', 0, 0],
      ['shadowCreated', 0, 0],
      ['leafZapped', 0, 2],
      ['faults', 2, 2],
      ['unmaps', 2, 2],
    ]);
    // the kernel's own zaps of those two leafs were not traced here, so the model's 2 show up as a difference
    expect(r.observed.differences).toEqual([
      {
        t: 5000001,
        what: 'leaf SPTEs zapped (kvm_tdp_mmu_spte_changed)',
        observed: 0,
        modelled: 2,
        call: 't+0.000001s SET slot 1 gpa 0x100000 size 0x10000',
      },
    ]);
  });

  it('--touch: with no fault events, an assumed working set is written and labelled', async () => {
    const q = readQemuTrace(
      [
        '1@5.000000:kvm_set_user_memory Slot#0 flags=0x0 gpa=0x0 size=0x100000 ua=0x7f0000000000 ret=0',
        '1@5.000010:kvm_set_user_memory Slot#1 flags=0x2 gpa=0xf0000000 size=0x10000 ua=0x7f0100000000 ret=0',
        '1@5.000020:kvm_set_user_memory Slot#1 flags=0x2 gpa=0xf0000000 size=0x0 ua=0x7f0100000000 ret=0',
      ].join('\n'),
      'q',
    );
    const m = mergeStreams([q]);
    const r = await replayEvents(m.events, m.reports, { touch: { pages: 16 } });
    expect(r.faultSource).toMatch(/^assumed \(--touch 16:/);
    const quirk = r.runs.find((x) => x.design === 'quirk')!.totals;
    const off = r.runs.find((x) => x.design === 'quirk-off')!.totals;
    // 16 pages before the BAR create, 16 (mapped) before the DELETE, 16 at the end: refaulted after zap-all only
    expect([quirk['first_faults_4k'], quirk['refaults_4k'] ?? 0]).toEqual([16, 16]);
    expect([off['first_faults_4k'], off['refaults_4k'] ?? 0]).toEqual([16, 0]);
  });
});
