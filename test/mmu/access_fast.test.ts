/**
 * vcpu.access's fast path (x86/mmu/guest_access_fast.ts) in the corners a random workload reaches
 * rarely: each case runs one script on two identical models, one through vcpu.access (fast path where
 * it applies), one through the full path (the MMU's vcpuAccess, as vcpu.access made every access before
 * it had a fast path), and requires the same results, stats and whole model state (kvm/state_hash.ts),
 * plus the exact number of accesses the fast path made, so no case passes without reaching its corner.
 * The random workloads are in test/property/access_fast.property.test.ts.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { Kvm, type AccessKind, type AccessResult, type Vcpu, type Vm } from '../../src/index.ts';
import { stateHash } from '../../src/kvm/state_hash.ts';
import { X86Mmu } from '../../src/x86/mmu/mmu.ts';
import { KVM_CAP, KVM_MEM_GUEST_MEMFD, GUEST_MEMFD_FLAG_MMAP } from '../../src/uapi/kvm.ts';
import { KVM_X86_QUIRK_IGNORE_GUEST_PAT, KVM_X86_QUIRK_SLOT_ZAP_ALL } from '../../src/uapi/kvm_x86.ts';

const MiB = 1 << 20;
const RAM = 0;
const SLOT1 = 0x4000_0000;

interface Model {
  kvm: Kvm;
  vm: Vm;
  v: Vcpu;
  hva: number[];
}
type Acc = (v: Vcpu, gpa: number, kind: AccessKind) => AccessResult;

/** 4 MiB of 4K-backed RAM at 0 in slot 0, one vCPU; `more` adds what a case needs. */
function model(more: (m: Model) => void = () => {}, maxPhyAddr?: number): Model {
  const kvm = maxPhyAddr === undefined ? new Kvm() : new Kvm({ maxPhyAddr });
  const vm = kvm.createVm(0);
  const hva = [kvm.host.mmap(4 * MiB)];
  vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: RAM, memorySize: 4 * MiB, userspaceAddr: hva[0]! });
  const m = { kvm, vm, v: vm.createVcpu(0), hva };
  more(m);
  return m;
}

const fullAccess: Acc = (v, gpa, kind) => {
  const r = v.vm.mmu.vcpuAccess(v, gpa, kind, undefined);
  v.accessEnded(r.exit === 'none');
  return r;
};

/** What the fast path made while a script ran: accesses completed without a fault, and first touches. */
const made = { hits: 0, faults: 0 };
const realFast = X86Mmu.prototype.vcpuAccessFast;
X86Mmu.prototype.vcpuAccessFast = function (this: X86Mmu, vcpu, gpa, write, hit) {
  const before = vcpu.stats.pf_fixed;
  const ok = realFast.call(this, vcpu, gpa, write, hit);
  if (ok && vcpu.stats.pf_fixed !== before) made.faults++;
  else if (ok) made.hits++;
  return ok;
};
afterAll(() => {
  X86Mmu.prototype.vcpuAccessFast = realFast;
});

/**
 * Run `script` on a fast-path model and on a full-path model; they must end equal. Returns the
 * script's results and what the fast path made.
 */
function twin(
  more: (m: Model) => void,
  script: (m: Model, acc: Acc) => unknown[],
  maxPhyAddr?: number,
): { results: unknown[]; made: typeof made } {
  const a = model(more, maxPhyAddr);
  const b = model(more, maxPhyAddr);
  made.hits = made.faults = 0;
  const want = script(b, fullAccess);
  expect(made).toEqual({ hits: 0, faults: 0 });
  const got = script(a, (v, gpa, kind) => v.access(gpa, kind));
  expect(got).toEqual(want);
  expect(a.vm.getStats()).toEqual(b.vm.getStats());
  expect(a.vm.getModelStats()).toEqual(b.vm.getModelStats());
  expect(a.v.getStats()).toEqual(b.v.getStats());
  expect(stateHash([a.kvm, a.vm, a.v])).toBe(stateHash([b.kvm, b.vm, b.v]));
  return { results: got, made: { ...made } };
}

const exits = (rs: unknown[]): unknown[] => rs.map((r) => (r as AccessResult).exit ?? r);

describe('vcpu.access fast path = the full path, corner by corner', () => {
  it('first touches through existing tables, then hits (TLB and walk)', () => {
    const r = twin(
      () => {},
      (m, acc) => [
        ...[0, 1, 2, 3].map((p) => acc(m.v, RAM + p * 4096, 'write')), // 0 links the tables
        acc(m.v, RAM + 4 * 4096, 'read'),
        acc(m.v, RAM + 4096, 'write'), // TLB hit
        acc(m.v, RAM + 4 * 4096, 'write'), // TLB holds it read-only: the walk hits
      ],
    );
    expect(r.made).toEqual({ hits: 2, faults: 4 });
  });

  it('refaults after a notifier zap are counted as refaults (the first access serves the flush)', () => {
    const r = twin(
      () => {},
      (m, acc) => {
        const out: unknown[] = [0, 1, 2, 3].map((p) => acc(m.v, RAM + p * 4096, 'write'));
        m.kvm.host.migrate(m.hva[0]! + 4096, 2 * 4096);
        out.push(...[0, 1, 2].map((p) => acc(m.v, RAM + p * 4096, 'write')));
        out.push(m.vm.getModelStats().refaults);
        return out;
      },
    );
    expect(r.results.at(-1)).toBe(2);
    expect(r.made).toEqual({ hits: 0, faults: 3 + 2 });
  });

  it('a fault reclaims the tables freed under RCU, as kvm_tdp_mmu_map does first', () => {
    const pending: number[] = [];
    const r = twin(
      (m) => {
        m.hva.push(m.kvm.host.mmap(2 * MiB, { backing: '2m' }));
        m.vm.setUserMemoryRegion({
          slot: 1,
          guestPhysAddr: SLOT1,
          memorySize: 2 * MiB,
          userspaceAddr: m.hva[1]!,
        });
      },
      (m, acc) => {
        const log = (on: boolean): void =>
          void m.vm.setUserMemoryRegion({
            slot: 1,
            flags: on ? 1 : 0,
            guestPhysAddr: SLOT1,
            memorySize: 2 * MiB,
            userspaceAddr: m.hva[1]!,
          });
        const out = [acc(m.v, RAM, 'write')];
        log(true);
        out.push(acc(m.v, SLOT1, 'write')); // logging: a 4K leaf in a new table
        log(false); // the table becomes a 2M leaf again; the table goes to RCU
        out.push(acc(m.v, SLOT1, 'read')); // serves the flush request; the walk hits the 2M leaf
        pending.push((m.vm.mmu as X86Mmu).tdp.pool['pending'].length);
        out.push(acc(m.v, RAM + 4096, 'write')); // the first map since: reclaims
        pending.push((m.vm.mmu as X86Mmu).tdp.pool['pending'].length);
        return out;
      },
    );
    expect(exits(r.results)).toEqual(['none', 'none', 'none', 'none']);
    expect(pending).toEqual([1, 0, 1, 0]);
    expect(r.made).toEqual({ hits: 0, faults: 1 });
  });

  it('faults in the SMM address space leave the iterator in that address space', () => {
    const r = twin(
      (m) => {
        m.hva.push(m.kvm.host.mmap(MiB));
        m.vm.setUserMemoryRegion({
          slot: 0x10000,
          guestPhysAddr: RAM,
          memorySize: MiB,
          userspaceAddr: m.hva[1]!,
        });
      },
      (m, acc) => {
        m.v.smm = true;
        const out = [0, 1, 2].map((p) => acc(m.v, RAM + p * 4096, 'write')); // 0: SMM root, tables
        m.v.smm = false;
        out.push(acc(m.v, RAM + 4096, 'write'), acc(m.v, RAM + 5 * 4096, 'write')); // the normal root
        m.v.smm = true;
        out.push(acc(m.v, RAM + 3 * 4096, 'write'), acc(m.v, RAM + 4 * 4096, 'write')); // back: the last fast
        return out;
      },
    );
    expect(r.made).toEqual({ hits: 0, faults: 4 });
  });

  it('the leaf template follows the memory type (guest PAT no longer ignored: WB without IPAT)', () => {
    const r = twin(
      () => {},
      (m, acc) => {
        const out = [0, 1].map((p) => acc(m.v, RAM + p * 4096, 'write'));
        m.vm.enableCap({ cap: KVM_CAP.KVM_CAP_DISABLE_QUIRKS2, args: [KVM_X86_QUIRK_IGNORE_GUEST_PAT] });
        out.push(...[2, 3].map((p) => acc(m.v, RAM + p * 4096, 'read')));
        return out;
      },
    );
    expect(r.made).toEqual({ hits: 0, faults: 3 });
  });

  it('a write to a read-only slot exits as MMIO before any host lookup', () => {
    const r = twin(
      (m) => {
        m.hva.push(m.kvm.host.mmap(MiB));
        m.vm.setUserMemoryRegion({
          slot: 1,
          flags: 2,
          guestPhysAddr: SLOT1,
          memorySize: MiB,
          userspaceAddr: m.hva[1]!,
        });
      },
      (m, acc) => [
        acc(m.v, SLOT1, 'read'), // loads the root (full path) and links the tables
        acc(m.v, SLOT1 + 4096, 'read'),
        acc(m.v, RAM, 'write'), // links RAM's 4K table (fast path)
        acc(m.v, RAM + 4096, 'write'), // the host's last-used mapping is RAM's
        acc(m.v, SLOT1 + 2 * 4096, 'write'),
      ],
    );
    expect(exits(r.results)).toEqual(['none', 'none', 'none', 'none', 'mmio']);
    expect(r.made).toEqual({ hits: 0, faults: 3 });
  });

  it('a fault on a slot being deleted (INVALID) retries, inside the zap that yields mmu_lock', () => {
    const r = twin(
      (m) => {
        m.vm.enableCap({ cap: KVM_CAP.KVM_CAP_DISABLE_QUIRKS2, args: [KVM_X86_QUIRK_SLOT_ZAP_ALL] });
        m.hva.push(m.kvm.host.mmap(2 * MiB));
        m.vm.setUserMemoryRegion({
          slot: 1,
          guestPhysAddr: SLOT1,
          memorySize: 2 * MiB,
          userspaceAddr: m.hva[1]!,
        });
      },
      (m, acc) => {
        const out = [0, 1, 2, 3, 50].map((p) => acc(m.v, SLOT1 + p * 4096, 'write'));
        m.vm.onMmuLockDrop = () => {
          // page 50 is still mapped (serves the flush request); page 0 is zapped, page 4 never mapped,
          // and the slot is INVALID
          out.push(
            acc(m.v, SLOT1 + 50 * 4096, 'read'),
            acc(m.v, SLOT1, 'read'),
            acc(m.v, SLOT1 + 4 * 4096, 'write'),
          );
        };
        m.vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: SLOT1, memorySize: 0 });
        return out;
      },
    );
    expect(exits(r.results)).toEqual(['none', 'none', 'none', 'none', 'none', 'none', 'retry', 'retry']);
    expect(r.made).toEqual({ hits: 0, faults: 4 });
  });

  it('a guest_memfd-only slot (mmap-able guest_memfd) takes its pages from guest_memfd, not GUP', () => {
    const r = twin(
      (m) => {
        const fd = m.vm.createGuestMemfd({ size: 2 * MiB, flags: GUEST_MEMFD_FLAG_MMAP });
        m.hva.push(m.kvm.host.mmap(2 * MiB));
        m.vm.setUserMemoryRegion2({
          slot: 1,
          flags: KVM_MEM_GUEST_MEMFD,
          guestPhysAddr: SLOT1,
          memorySize: 2 * MiB,
          userspaceAddr: m.hva[1]!,
          guestMemfd: fd,
          guestMemfdOffset: 0,
        });
      },
      (m, acc) => [0, 1, 2].map((p) => acc(m.v, SLOT1 + p * 4096, 'write')),
    );
    expect(exits(r.results)).toEqual(['none', 'none', 'none']);
    expect(r.made).toEqual({ hits: 0, faults: 0 });
  });
  // gpa 8 TiB = gfn 2^31: below it the fast and bulk paths do int32 gfn arithmetic, from it on the full
  // path makes every access. 16 pages each side of the line, on a 4-level and a 5-level EPT.
  const LINE = 2 ** 43;
  const acrossTheLine = (m: Model): void => {
    m.hva.push(m.kvm.host.mmap(32 * 4096));
    m.vm.setUserMemoryRegion({
      slot: 1,
      guestPhysAddr: LINE - 16 * 4096,
      memorySize: 32 * 4096,
      userspaceAddr: m.hva[1]!,
    });
  };

  it('gfns from 2^31 on (gpa ≥ 8 TiB) take the full path, with a 4- and a 5-level root', () => {
    for (const maxPhyAddr of [46, 52]) {
      const r = twin(
        acrossTheLine,
        (m, acc) => {
          const out: unknown[] = [];
          for (let pass = 0; pass < 2; pass++)
            for (let p = -16; p < 16; p++) out.push(acc(m.v, LINE + p * 4096, 'write'));
          return out;
        },
        maxPhyAddr,
      );
      expect(r.results.every((x) => (x as AccessResult).exit === 'none')).toBe(true);
      // below the line: the first access links the tables, 15 first touches, then 16 TLB hits
      expect(r.made).toEqual({ hits: 16, faults: 15 });
    }
  });

  it('a batch across the 8 TiB line: the bulk run stops at it, the rest one by one, as the loop', () => {
    for (const maxPhyAddr of [46, 52]) {
      const a = model(acrossTheLine, maxPhyAddr);
      const b = model(acrossTheLine, maxPhyAddr);
      const out = { exit: new Uint8Array(32), pfn: new Float64Array(32), level: new Uint8Array(32) };
      // one access below the line first, so the bulk run has tables to fault into
      expect(a.v.access(LINE - 4096, 'write').exit).toBe('none');
      expect(fullAccess(b.v, LINE - 4096, 'write').exit).toBe('none');
      const got = a.v.accessRange(LINE - 16 * 4096, 32, 'write', { out });
      const want = Array.from({ length: 32 }, (_, i) => fullAccess(b.v, LINE + (i - 16) * 4096, 'write'));
      expect(got).toMatchObject({ count: 32, none: 32, exits: 0 });
      expect(Array.from(out.pfn)).toEqual(want.map((r) => (r.exit === 'none' ? r.pfn : -1)));
      expect(Array.from(out.level)).toEqual(want.map((r) => (r.exit === 'none' ? r.level : -1)));
      expect(a.vm.getStats()).toEqual(b.vm.getStats());
      expect(a.v.getStats()).toEqual(b.v.getStats());
      expect(stateHash([a.kvm, a.vm, a.v])).toBe(stateHash([b.kvm, b.vm, b.v]));
    }
  });
});
