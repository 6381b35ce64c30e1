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
function model(more: (m: Model) => void = () => {}): Model {
  const kvm = new Kvm();
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
): { results: unknown[]; made: typeof made } {
  const a = model(more);
  const b = model(more);
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
        acc(m.v, SLOT1, 'read'), // links the tables
        acc(m.v, SLOT1 + 4096, 'read'),
        acc(m.v, RAM, 'write'),
        acc(m.v, RAM + 4096, 'write'), // the host's last-used mapping is RAM's
        acc(m.v, SLOT1 + 2 * 4096, 'write'),
      ],
    );
    expect(exits(r.results)).toEqual(['none', 'none', 'none', 'none', 'mmio']);
    expect(r.made).toEqual({ hits: 0, faults: 2 });
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
});
