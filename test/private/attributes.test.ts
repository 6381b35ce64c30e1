/**
 * Private/shared routing against the memory attributes: an access whose kind does not match its gfn's
 * attribute exits with KVM_EXIT_MEMORY_FAULT (gpa without the TDX shared bit, the private flag of the
 * access), and READONLY memslots are refused to VMs with protected state (SEV-ES, SNP, TDX).
 */
import { describe, expect, it } from 'vitest';
import { Kvm } from '../../src/index.ts';
import { KVM_MEM_READONLY } from '../../src/uapi/kvm.ts';
import { Checker } from '../../src/check/checker.ts';
import { PAGE, TDX_SHARED, VM, privateGuest } from './fixture.ts';

describe('a private/shared mismatch exits with KVM_EXIT_MEMORY_FAULT', () => {
  it('TDX: a shared-bit access to a PRIVATE gfn, and a private access to a shared one', () => {
    const g = privateGuest(VM.TDX, [{ slot: 0, gpa: 0, pages: 64 }]);
    const v = g.vcpus[0]!;
    expect(v.access(TDX_SHARED + 5 * PAGE + 12, 'read')).toEqual({
      exit: 'memory_fault',
      gpa: 5 * PAGE,
      size: PAGE,
      private: false,
    });
    g.vm.setMemoryAttributes({ address: 8 * PAGE, size: PAGE, attributes: 0 });
    expect(v.access(8 * PAGE, 'write')).toEqual({
      exit: 'memory_fault',
      gpa: 8 * PAGE,
      size: PAGE,
      private: true,
    });
    expect(v.access(TDX_SHARED + 8 * PAGE, 'write').exit).toBe('none');
    expect(g.vm.dead).toBe(false);
  });

  it.each([
    ['SW_PROTECTED', VM.SW_PROTECTED],
    ['SNP', VM.SNP],
  ])('%s: the C-bit/attribute of the access decides, not the gfn', (_n, type) => {
    const g = privateGuest(type, [{ slot: 0, gpa: 0, pages: 64 }]);
    const v = g.vcpus[0]!;
    expect(v.access(3 * PAGE, 'read', { private: false })).toEqual({
      exit: 'memory_fault',
      gpa: 3 * PAGE,
      size: PAGE,
      private: false,
    });
    expect(v.access(3 * PAGE, 'read', { private: true }).exit).toBe('none');
    expect(v.access(3 * PAGE, 'read').exit).toBe('none'); // default: follow the attribute
    g.vm.setMemoryAttributes({ address: 4 * PAGE, size: PAGE, attributes: 0 });
    expect(v.access(4 * PAGE, 'read', { private: true })).toEqual({
      exit: 'memory_fault',
      gpa: 4 * PAGE,
      size: PAGE,
      private: true,
    });
    expect(v.access(4 * PAGE, 'read').exit).toBe('none');
  });
});

describe('READONLY memslots and protected state', () => {
  it.each([
    ['DEFAULT', VM.DEFAULT, true],
    ['SW_PROTECTED', VM.SW_PROTECTED, true],
    ['SEV', VM.SEV, true],
    ['SEV_ES', VM.SEV_ES, false],
    ['SNP', VM.SNP, false],
    ['TDX', VM.TDX, false],
  ])('%s: KVM_MEM_READONLY accepted = %s', (_n, type, ok) => {
    const kvm = new Kvm();
    const vm = kvm.createVm(type);
    const set = () =>
      vm.setUserMemoryRegion({
        slot: 0,
        flags: KVM_MEM_READONLY,
        guestPhysAddr: 0,
        memorySize: 16 * PAGE,
        userspaceAddr: kvm.host.mmap(16 * PAGE),
      });
    if (ok) expect(set).not.toThrow();
    else expect(set).toThrow(/EINVAL/);
  });
});

describe('a DEFAULT VM has no private faults (issue #17): `private` changes nothing, on either MMU', () => {
  // Only SNP (npf_interception: the C-bit), TDX (vt_is_tdx_private_gpa) and SW_PROTECTED
  // (kvm_mmu_page_fault: the attribute) set PFERR_PRIVATE_ACCESS; a DEFAULT VM's fault is always shared.
  function run(tdpMmu: boolean, opts: { private?: boolean } | undefined) {
    const kvm = new Kvm({ tdpMmu });
    const vm = kvm.createVm(0);
    const hva = kvm.host.mmap(16 * PAGE);
    vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memorySize: 16 * PAGE, userspaceAddr: hva });
    const v = vm.createVcpu(0);
    const checker = new Checker(kvm, { audit: 'points' });
    checker.watch(vm);
    const first = v.access(3 * PAGE, 'write', opts);
    const again = v.access(3 * PAGE, 'write', opts);
    const batch = v.accessRange(4 * PAGE, 4, 'read', opts);
    checker.auditPoint('end');
    const pfn = kvm.host.hvaToPfn(hva + 3 * PAGE, false)!.pfn;
    return {
      first,
      again,
      batch,
      pfn,
      stats: v.getStats(),
      vmStats: vm.getStats(),
      violations: checker.violations,
    };
  }
  it.each([
    ['TDP MMU', true],
    ['shadow MMU', false],
  ])(
    '%s: the private access maps the host page the shared one does, with the same stats, checker clean',
    (_n, tdpMmu) => {
      const priv = run(tdpMmu, { private: true });
      expect(priv.first).toMatchObject({ exit: 'none', pfn: priv.pfn, level: 1 });
      expect(priv.again).toEqual(priv.first);
      expect(priv.batch).toMatchObject({ count: 4, none: 4, exits: 0 });
      expect(priv.violations).toEqual([]);
      const shared = run(tdpMmu, undefined);
      expect(priv).toEqual(shared);
    },
  );
});
