/**
 * The column store the readers write (src/replay/event_table.ts): every recorded bundle replays the same
 * from mergeStreams' table (the CLI's and the bench's path, no object per event) as from the same events
 * as objects (the path the other replay tests take); a table gives back the events its rows were made from;
 * the merge moves a QEMU-traced DELETE before its zap rows in the table as in the objects.
 */
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { loadInputs } from '../../src/replay/load.ts';
import { mergeStreams } from '../../src/replay/merge.ts';
import { replayEvents } from '../../src/replay/replay.ts';
import { readQemuTrace } from '../../src/replay/qemu_trace.ts';
import { readFtrace } from '../../src/replay/ftrace.ts';
import { B_WRITE, EventTable, K_FAULT, K_LEAF_ZAP, K_MEMSLOT } from '../../src/replay/event_table.ts';
import type { TraceEvent } from '../../src/replay/events.ts';

const DIR = join(import.meta.dirname, '..', 'recorded', 'replay');

describe('event table', () => {
  for (const name of ['handmade-tdp', 'pc-dimm-unplug', 'q35-boot']) {
    it(`${name}: the replay from the merged table equals the replay from its events as objects`, async () => {
      const { streams, bundle } = loadInputs([join(DIR, name)], [], {});
      const fromTable = await replayEvents(
        mergeStreams(streams).table,
        streams.map((s) => s.report),
        { host: bundle!.host },
      );
      const m = mergeStreams(streams);
      const fromObjects = await replayEvents(m.events.slice(), m.reports, { host: bundle!.host });
      expect(fromTable.events).toBe(m.events.length);
      expect(fromTable.events).toBeGreaterThan(0);
      expect(JSON.stringify(fromTable)).toBe(JSON.stringify(fromObjects));
    }, 60_000);
  }

  it('rows give back their events; a table made from objects keeps them as they are', () => {
    const q = readQemuTrace(
      '7@1.000001:kvm_set_user_memory AddrSpace#1 Slot#3 flags=0x4 gpa=0x100000 size=0x200000 ua=0x7f0000000000 guest_memfd=12 guest_memfd_offset=0x1000 ret=0\n',
      'q',
    );
    const k = readFtrace(
      ' vcpu-8 [001] ..... 1.000002: kvm_tdp_mmu_spte_changed: as id 0 gfn 1f level 1 old_spte 0 new_spte 600000000011f77\n',
      'k',
    );
    expect(q.table!.kind[0]).toBe(K_MEMSLOT);
    expect(q.table!.v[3]![0]).toBe(0x100000);
    expect(k.table!.kind[0]).toBe(K_FAULT);
    expect(k.events).toEqual([
      {
        t: 1000002,
        tid: 8,
        line: 1,
        src: 'kernel',
        kind: 'fault',
        tp: 'kvm_tdp_mmu_spte_changed',
        gfn: 0x1f,
        level: 1,
        write: true,
      },
    ]);
    const both = [...q.events, ...k.events];
    const t = EventTable.fromEvents(both);
    expect(t.n).toBe(2);
    expect(t.event(0)).toBe(both[0]);
    expect([t.gfn(1), t.level(1), t.faultTp(1)]).toEqual([0x1f, 1, 'kvm_tdp_mmu_spte_changed']);
  });

  it('the merge moves a QEMU DELETE before the zap rows of its ioctl, in the table', () => {
    const q = readQemuTrace(
      [
        '5@1.000001:kvm_set_user_memory Slot#1 flags=0x0 gpa=0xc0000000 size=0x200000 ua=0x7f0100000000 ret=0',
        '5@1.000010:kvm_set_user_memory Slot#1 flags=0x0 gpa=0xc0000000 size=0x0 ua=0x7f0100000000 ret=0',
      ].join('\n'),
      'q',
    );
    const k = readFtrace(
      [
        ' qemu-5 [000] ..... 1.000005: kvm_mmu_zap_all_fast: kvm-mmu-valid-gen 1 used_pages 4',
        ' qemu-5 [000] ..... 1.000006: kvm_mmu_prepare_zap_page: sp gen 0 gfn 0 l4 8-byte q0 direct wux nxe ad root 1 sync',
      ].join('\n'),
      'k',
    );
    const m = mergeStreams([q, k]);
    expect(m.notes).toEqual([
      '1 QEMU-traced DELETEs placed before the zap events their ioctl emitted (QEMU traces after the call)',
    ]);
    expect(Array.from(m.table.t.subarray(0, m.table.n))).toEqual([1000001, 1000005, 1000005, 1000006]);
    expect(m.events.map((e) => `${e.src}:${e.kind}:${e.line}`)).toEqual([
      'qemu:memslot:1',
      'qemu:memslot:2',
      'kernel:zapAllFast:1',
      'kernel:prepareZapPage:2',
    ]);
    // the reader's own events are left as they were
    expect(q.events[1]!.t).toBe(1000010);
  });

  it('columns grow past their capacity, and block copies keep boxed rows pointing at their own events', () => {
    const a = new EventTable(2, 1);
    const boxed: TraceEvent = {
      t: 3,
      tid: 9,
      line: 3,
      src: 'kernel',
      kind: 'unmap',
      start: 0x1000,
      end: 0x2000,
    };
    a.pushGfn(K_FAULT, 1, 7, 1, 0x10, 1, B_WRITE, 1);
    a.pushGfn(K_LEAF_ZAP, 2, 7, 2, 0x11, 2, 0);
    a.pushBoxed(boxed);
    a.pushGfn(K_FAULT, 4, 8, 4, 0x12, 1, 0, 0);
    expect(a.n).toBe(4);
    expect([
      a.gfn(0),
      a.gfn(1),
      a.level(1),
      a.gfn(3),
      a.faultTp(3),
      a.flag(0, B_WRITE, 'write'),
      a.flag(3, B_WRITE, 'write'),
    ]).toEqual([0x10, 0x11, 2, 0x12, 'kvm_mmu_set_spte', true, false]);
    const other: TraceEvent = { t: 0, tid: 1, line: 1, src: 'kernel', kind: 'unmap', start: 0, end: 0x1000 };
    const b = new EventTable(2, 1);
    b.pushBoxed(other);
    b.copyRows(a, 1, 4);
    expect(b.n).toBe(4);
    expect(b.event(0)).toBe(other);
    expect(b.event(2)).toBe(boxed);
    expect(b.toEvents().map((e) => [e.kind, e.t, 'gfn' in e ? e.gfn : -1])).toEqual([
      ['unmap', 0, -1],
      ['leafZap', 2, 0x11],
      ['unmap', 3, -1],
      ['fault', 4, 0x12],
    ]);
    b.moveBack(3, 1);
    b.setTime(2, 5);
    expect(b.toEvents().map((e) => [e.kind, e.t])).toEqual([
      ['unmap', 0],
      ['fault', 4],
      ['leafZap', 5],
      ['unmap', 3],
    ]);
  });
});
