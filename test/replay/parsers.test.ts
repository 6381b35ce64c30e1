/**
 * The trace readers: QEMU trace events (7.2 and the AddrSpace#/guest_memfd format, with and without the
 * tid@time prefix), strace of KVM ioctls (decoded, _IOC-named, unfinished/resumed, errno, fd → VM),
 * tracefs and trace-cmd report text (by field name, tgid column, pid filter, missing fields), and the
 * merge (QEMU's after-the-call records moved before their ioctl's zap events; clocks; untimed streams).
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { readQemuTrace } from '../../src/replay/qemu_trace.ts';
import { readStrace } from '../../src/replay/strace.ts';
import { readFtrace } from '../../src/replay/ftrace.ts';
import { mergeStreams } from '../../src/replay/merge.ts';
import { detectFormat } from '../../src/replay/load.ts';
import { TraceFormatError, type MemslotEvent } from '../../src/replay/events.ts';

describe('QEMU trace', () => {
  it('reads the 7.2 format with the tid@sec.usec: prefix; Slot# carries the address space', () => {
    const p = readQemuTrace(
      '11426@1796562681.851642:kvm_set_user_memory Slot#65537 flags=0x2 gpa=0xfffc0000 size=0x40000 ua=0x7f8850200000 ret=-17\n',
      'q',
    );
    expect(p.events).toEqual([
      {
        kind: 'memslot',
        t: 1796562681851642,
        tid: 11426,
        src: 'qemu',
        line: 1,
        vm: 0,
        slot: 65537,
        flags: 2,
        gpa: 0xfffc0000,
        size: 0x40000,
        ua: 0x7f8850200000,
        ret: -17,
        v2: false,
      },
    ]);
  });

  it('reads the newer AddrSpace#/guest_memfd format without a prefix (no time)', () => {
    const p = readQemuTrace(
      'kvm_set_user_memory AddrSpace#1 Slot#3 flags=0x4 gpa=0x100000 size=0x200000 ua=0x7f0000000000 guest_memfd=12 guest_memfd_offset=0x1000 ret=0\n',
      'q',
    );
    const e = p.events[0] as MemslotEvent;
    expect([e.slot, e.flags, e.guestMemfd, e.guestMemfdOffset, e.v2, Number.isNaN(e.t), e.tid]).toEqual([
      (1 << 16) | 3,
      4,
      12,
      0x1000,
      true,
      true,
      -1,
    ]);
  });

  it('reads the AddrSpace# format without guest_memfd fields (QEMU 8.x)', () => {
    const p = readQemuTrace(
      '9@2.5:kvm_set_user_memory AddrSpace#0 Slot#2 flags=0x1 gpa=0xfd000000 size=0x1000000 ua=0x7f8842a00000 ret=0\n',
      'q',
    );
    expect(p.events[0]).toMatchObject({
      slot: 2,
      flags: 1,
      gpa: 0xfd000000,
      size: 0x1000000,
      v2: false,
      t: 2500000,
      tid: 9,
    });
  });

  it('adds the untraced size-0 call QEMU makes before a READONLY flip', () => {
    const p = readQemuTrace(
      [
        '1@1.000001:kvm_set_user_memory Slot#5 flags=0x0 gpa=0xe0000 size=0x20000 ua=0x7f0000000000 ret=0',
        '1@1.000002:kvm_set_user_memory Slot#5 flags=0x2 gpa=0xe0000 size=0x20000 ua=0x7f0000000000 ret=0',
        '1@1.000003:kvm_set_user_memory Slot#5 flags=0x3 gpa=0xe0000 size=0x20000 ua=0x7f0000000000 ret=0',
      ].join('\n'),
      'q',
    );
    const m = p.events as MemslotEvent[];
    expect(m.map((e) => [e.size, e.flags, e.implied ?? false])).toEqual([
      [0x20000, 0, false],
      [0, 0, true],
      [0x20000, 2, false],
      [0x20000, 3, false],
    ]);
  });

  it('counts other events, skips QEMU messages, reports malformed records as file:line (fatal with strict)', () => {
    const text = [
      "2026-12-06T13:11:21.847860Z qemu-system-x86_64: warning: host doesn't support requested feature",
      '1@1.5:kvm_vcpu_ioctl cpu_index 0, type 0xae80, arg (nil)',
      '1@1.6:kvm_set_user_memory Slot#0 flags=0x0 gpa=0x0 ua=0x1000 ret=0',
      '1@x.y:kvm_set_user_memory Slot#0',
      '1@1.7:kvm_convert_memory start 0x0 size 0x1000 shared_to_private',
    ].join('\n');
    const p = readQemuTrace(text, 'q.log');
    expect(p.report.other).toBe(1);
    expect(p.report.unknown).toEqual({ kvm_vcpu_ioctl: 1 });
    expect(p.report.malformed).toEqual([
      'q.log:3: kvm_set_user_memory: expected fields Slot, flags, gpa, size, ua, ret; missing size',
      'q.log:4: expected tid@seconds.microseconds: before the event, got "1@x.y:"',
    ]);
    expect(p.events.map((e) => e.kind)).toEqual(['vmCall']);
    expect(() => readQemuTrace(text, 'q.log', { strict: true })).toThrow(
      new TraceFormatError(
        'q.log:3: kvm_set_user_memory: expected fields Slot, flags, gpa, size, ua, ret; missing size',
      ),
    );
  });
});

describe('strace', () => {
  const text = [
    '100 10.000001 ioctl(3, KVM_CREATE_VM, 0) = 9',
    '100 10.000002 ioctl(9<anon_inode:kvm-vm>, KVM_SET_USER_MEMORY_REGION, {slot=0, flags=KVM_MEM_LOG_DIRTY_PAGES|KVM_MEM_READONLY, guest_phys_addr=0xfffc0000, memory_size=262144, userspace_addr=0x7f8850200000}) = 0',
    '101 10.000003 ioctl(9, KVM_SET_USER_MEMORY_REGION <unfinished ...>',
    '102 10.000004 ioctl(11, KVM_RUN, 0) = 0',
    '101 10.000005 <... ioctl resumed>, {slot=0, flags=0, guest_phys_addr=0, memory_size=4096, userspace_addr=0x1000}) = -1 EEXIST (File exists)',
    '100 10.000006 ioctl(9, _IOC(_IOC_WRITE, 0xae, 0x49, 0xa0), 0x7ffd0000) = -1 EINVAL (Invalid argument)',
    '100 10.000007 ioctl(9, KVM_ENABLE_CAP, {cap=KVM_CAP_DISABLE_QUIRKS2, flags=0, args=[0x80, 0, 0, 0]}) = 0',
    '100 10.000008 ioctl(9, KVM_CREATE_VCPU, 0) = 11',
    '100 10.000009 +++ exited with 0 +++',
  ].join('\n');

  it('decodes memslot calls with errno, joins unfinished/resumed at the start time, maps fds to VMs', () => {
    const p = readStrace(text, 's');
    expect(p.events.map((e) => [e.kind, e.t, e.tid, 'ret' in e ? e.ret : null])).toEqual([
      ['createVm', 10000001, 100, 0],
      ['memslot', 10000002, 100, 0],
      ['memslot', 10000003, 101, -17],
      ['vmCall', 10000006, 100, -22],
      ['enableCap', 10000007, 100, 0],
      ['createVcpu', 10000008, 100, 0],
    ]);
    const m = p.events[1] as MemslotEvent;
    expect([m.slot, m.flags, m.gpa, m.size, m.ua, m.vm]).toEqual([
      0, 3, 0xfffc0000, 262144, 0x7f8850200000, 0,
    ]);
    expect(p.events[3]).toMatchObject({ name: 'KVM_SET_USER_MEMORY_REGION2 (not decoded)' });
    expect(p.events[4]).toMatchObject({ cap: 213, args: [0x80, 0, 0, 0] });
    expect(p.report.unknown).toEqual({ KVM_RUN: 1 });
    expect(p.report.other).toBe(1);
    expect(p.report.notes).toEqual([
      'KVM_SET_USER_MEMORY_REGION2: this strace prints the argument as a pointer (not decoded); the call is counted, its contents unknown',
    ]);
  });

  it('reports a memslot call on an fd no traced KVM_CREATE_VM returned, and a resume without its start', () => {
    const p = readStrace(
      '5 1.000001 ioctl(7, KVM_SET_USER_MEMORY_REGION, {slot=0, flags=0, guest_phys_addr=0, memory_size=0, userspace_addr=0}) = 0\n5 1.000002 <... ioctl resumed>, 0) = 0\ngarbage\n',
      's.txt',
    );
    expect(p.report.malformed).toEqual([
      's.txt:1: KVM_SET_USER_MEMORY_REGION on fd 7, which no traced KVM_CREATE_VM returned',
      's.txt:2: ioctl resumed without its <unfinished ...> line',
      's.txt:3: expected "[pid] seconds.microseconds syscall(…)" (strace -f -ttt)',
    ]);
  });
});

describe('kernel tracepoints', () => {
  const tracefs = [
    '# tracer: nop',
    '#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION',
    ' qemu-system-x86-11428   [000] ...1. 1796562681.948633: kvm_mmu_zap_all_fast: kvm-mmu-valid-gen 0 used_pages 4',
    ' qemu-system-x86-11428   [000] ...1. 1796562681.948635: kvm_mmu_prepare_zap_page: sp gen 0 gfn 40000 l2 8-byte q0 direct wux nxe ad root 1 sync',
    ' qemu-system-x86-11428   [000] ...1. 1796562681.950264: kvm_mmu_get_page: sp gen 1 gfn 0 l2 8-byte q0 direct wux nxe ad root 0 sync new',
    ' qemu-system-x86-11426   [001] ..... 1796562681.852536: kvm_unmap_hva_range: mmu notifier unmap range: 0x007f8850200000 -- 0x007f8850240000',
    '           other-999     [001] ..... 1796562681.852537: kvm_mmu_zap_all_fast: kvm-mmu-valid-gen 1 used_pages 0',
    ' qemu-system-x86-11428   [000] ...1. 1796562681.960000: kvm_exit: reason EPT_VIOLATION',
    ' qemu-system-x86-11428   [000] ...1. 1796562681.960001: kvm_mmu_set_spte: gfn 1f spte 80000000001f0877 (rw-u) level 1 at 12345',
    ' qemu-system-x86-11428   [000] ...1. 1796562681.960002: kvm_mmu_spte_requested: pfn 1f0 level 1',
  ].join('\n');

  it('parses tracefs text by field name; pid filter matches the task pid', () => {
    const p = readFtrace(tracefs, 'trace', { pids: new Set([11428, 11426]) });
    expect(p.events).toEqual([
      { kind: 'zapAllFast', t: 1796562681948633, tid: 11428, line: 3, src: 'kernel', gen: 0 },
      {
        kind: 'prepareZapPage',
        t: 1796562681948635,
        tid: 11428,
        line: 4,
        src: 'kernel',
        gfn: 0x40000,
        level: 2,
        created: false,
      },
      {
        kind: 'getPage',
        t: 1796562681950264,
        tid: 11428,
        line: 5,
        src: 'kernel',
        gfn: 0,
        level: 2,
        created: true,
      },
      {
        kind: 'unmap',
        t: 1796562681852536,
        tid: 11426,
        line: 6,
        src: 'kernel',
        start: 0x7f8850200000,
        end: 0x7f8850240000,
      },
      {
        kind: 'fault',
        t: 1796562681960001,
        tid: 11428,
        line: 9,
        src: 'kernel',
        tp: 'kvm_mmu_set_spte',
        gfn: 0x1f,
        level: 1,
        write: true,
      },
    ]);
    expect(p.report.filtered).toBe(1);
    expect(p.report.unknown).toEqual({ kvm_exit: 1 });
    expect(p.report.missingFields).toEqual({ 'kvm_mmu_spte_requested.gfn': 1 });
    expect(p.report.other).toBe(2);
  });

  it('parses trace-cmd report text (no latency flags, cpus= header) and the tgid column', () => {
    const report = [
      'cpus=2',
      '  qemu-system-x86-2000  [001] 1796562681.100000: kvm_tdp_mmu_spte_changed: as id 0 gfn 100 level 1 old_spte 8000000000000000 new_spte 6000001234f77',
      '  qemu-system-x86-2001 (   2000) [001] d..1. 1796562681.100001: kvm_tdp_mmu_spte_changed: as id 0 gfn 100 level 1 old_spte 6000001234f77 new_spte 8000000000000000',
      '  qemu-system-x86-2001 (   2000) [001] d..1. 1796562681.100002: kvm_tdp_mmu_spte_changed: as id 0 gfn 0 level 2 old_spte 8000000000000000 new_spte 1234907',
    ].join('\n');
    const p = readFtrace(report, 'report.txt', { pids: new Set([2000]) });
    expect(p.events.map((e) => [e.kind, e.tid, 'gfn' in e ? e.gfn : -1])).toEqual([
      ['fault', 2000, 0x100],
      ['leafZap', 2001, 0x100],
    ]);
    expect(p.report.unknown).toEqual({ 'kvm_tdp_mmu_spte_changed (non-leaf or leaf-to-leaf)': 1 });
    expect(detectFormat(report)).toBe('ftrace');
  });

  it('reads real trace-cmd report output (instance-name prefix, libtraceevent kvm plugin formats)', () => {
    // trace-cmd 3.1 `extract -B <instance>` + `report` of a QEMU 7.2 boot on the 6.18.44 shadow-MMU host
    const text = gunzipSync(
      readFileSync(join(import.meta.dirname, '..', 'recorded', 'replay', 'trace-cmd', 'report.txt.gz')),
    ).toString();
    const p = readFtrace(text, 'report.txt');
    const count: Record<string, number> = {};
    for (const e of p.events) count[e.kind] = (count[e.kind] ?? 0) + 1;
    expect(count).toEqual({ unmap: 514, zapAllFast: 12, getPage: 20, prepareZapPage: 40 });
    expect(p.events.filter((e) => e.kind === 'getPage' && e.created)).toHaveLength(20);
    expect(new Set(p.events.map((e) => ('level' in e ? e.level : -1)).filter((l) => l !== -1))).toEqual(
      new Set([2]),
    );
    // the plugin prints kvm_mmu_prepare_zap_page without its gfn: counted, the events kept
    expect(p.report.missingFields).toEqual({ 'kvm_mmu_prepare_zap_page.gfn': 40 });
    expect([p.report.lines, p.report.other, p.report.malformed]).toEqual([587, 1, []]);
    expect(p.events[0]).toEqual({
      t: 1796567600449025,
      tid: 16224,
      line: 2,
      src: 'kernel',
      kind: 'unmap',
      start: 0x7f9c5fe00000,
      end: 0x7f9c63e00000,
    });
    expect(detectFormat(text)).toBe('ftrace');
  });

  it('an event named like an Object member is an unknown event like any other', () => {
    const p = readFtrace(
      [
        ' qemu-1 [000] ..... 1.000001: constructor: x',
        ' qemu-1 [000] ..... 1.000002: __proto__: x',
        ' qemu-1 [000] ..... 1.000003: __proto__: x',
      ].join('\n'),
      'k',
    );
    expect(p.events).toEqual([]);
    expect(Object.entries(p.report.unknown)).toEqual([
      ['constructor', 1],
      ['__proto__', 2],
    ]);
    const q = readQemuTrace('1@1.5:constructor x\n1@1.6:__proto__ y\n', 'q');
    expect(Object.entries(q.report.unknown)).toEqual([
      ['constructor', 1],
      ['__proto__', 1],
    ]);
  });

  it('reports a line that is not a record as file:line', () => {
    const p = readFtrace('nonsense here\n', 'k.txt');
    expect(p.report.malformed).toEqual([
      'k.txt:1: expected "comm-pid [cpu] seconds.microseconds: event: fields" (tracefs or trace-cmd report)',
    ]);
    expect(() => readFtrace('nonsense here\n', 'k.txt', { strict: true })).toThrow(TraceFormatError);
  });
});

describe('merge', () => {
  const q = readQemuTrace(
    [
      '7@1.000100:kvm_set_user_memory Slot#0 flags=0x0 gpa=0x0 size=0x1000 ua=0x10000 ret=0',
      '7@1.000300:kvm_set_user_memory Slot#0 flags=0x0 gpa=0x0 size=0x0 ua=0x10000 ret=0',
    ].join('\n'),
    'q',
  );
  const k = readFtrace(
    [
      '  qemu-7   [000] ..... 1.000050: kvm_mmu_zap_all_fast: kvm-mmu-valid-gen 0 used_pages 0',
      '  vcpu-8   [001] ..... 1.000150: kvm_mmu_get_page: sp gen 0 gfn 0 l1 8-byte q0 direct wux nxe ad root 0 sync new',
      '  qemu-7   [000] ..... 1.000200: kvm_mmu_zap_all_fast: kvm-mmu-valid-gen 0 used_pages 1',
      '  qemu-7   [000] ..... 1.000210: kvm_mmu_prepare_zap_page: sp gen 0 gfn 0 l1 8-byte q0 direct wux nxe ad root 0 sync',
    ].join('\n'),
    'k',
  );

  it("moves a QEMU-traced DELETE before the zap events its ioctl emitted, not before an earlier call's", () => {
    const m = mergeStreams([q, k]);
    expect(m.events.map((e) => `${e.src}:${e.kind}@${e.t - 1e6}`)).toEqual([
      'kernel:zapAllFast@50',
      'qemu:memslot@100',
      'kernel:getPage@150',
      'qemu:memslot@200',
      'kernel:zapAllFast@200',
      'kernel:prepareZapPage@210',
    ]);
    expect(m.notes).toEqual([
      '1 QEMU-traced DELETEs placed before the zap events their ioctl emitted (QEMU traces after the call)',
    ]);
  });

  it('applies per-source clock offsets and refuses to merge an untimed stream with others', () => {
    const m = mergeStreams([q, k], { offsetUs: { kernel: 1000 } });
    expect(m.events.map((e) => e.src)).toEqual(['qemu', 'qemu', 'kernel', 'kernel', 'kernel', 'kernel']);
    const untimed = readQemuTrace(
      'kvm_set_user_memory Slot#0 flags=0x0 gpa=0x0 size=0x1000 ua=0x10000 ret=0\n',
      'nots.log',
    );
    expect(() => mergeStreams([untimed, k])).toThrow(
      'nots.log: events without times cannot be merged with other sources (QEMU: add -msg timestamp=on)',
    );
    expect(mergeStreams([untimed]).events).toHaveLength(1);
  });
});
