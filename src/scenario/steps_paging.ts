/**
 * The `guestPaging` scenario step, for shadow-paging hosts: the VMM writes identity-mapped 4-level
 * guest page tables (gva = gpa) for the listed regions into the pages of a table region, as a VMM or a
 * KVM selftest does before the guest runs (KVM is not told: vm.writeGuestPte), then each vCPU loads the
 * root as CR3 (vcpu.setCr3). Guest accesses then name guest virtual addresses, equal to the gpas of
 * the mapped regions. Model-only file, through the public API.
 */
import { KvmError, type Vm } from '../index.ts';
import { IdentityMapBuilder } from '../x86/mmu/guest_paging.ts';
import type { Step } from './schema.ts';
import type { ExecCtx, VmCtx } from './steps.ts';

const PAGE = 4096;

export type GuestPagingStep = Extract<Step, { guestPaging: unknown }>;

/** The VM's guest memory as the builder's table storage (gfn, index). */
function tablesOf(vm: Vm): {
  read(gfn: number, i: number): number;
  write(gfn: number, i: number, g: number): void;
} {
  return {
    read: (gfn, i) => vm.readGuestPte(gfn * PAGE, i),
    write: (gfn, i, g) => vm.writeGuestPte(gfn * PAGE, i, g),
  };
}

export function execGuestPaging(x: ExecCtx, c: VmCtx, s: GuestPagingStep): void {
  const g = s.guestPaging;
  const pool = c.regions.get(g.tables)!;
  try {
    const b = new IdentityMapBuilder(tablesOf(c.vm), pool.gpa, pool.gpa + pool.decl.size);
    for (const name of g.map) {
      const r = c.regions.get(name)!;
      for (let off = 0; off < r.decl.size; off += PAGE) b.mapPage(r.gpa + off);
    }
    const ids = g.vcpus === undefined || g.vcpus === 'all' ? c.vcpus.map((_, i) => i) : g.vcpus;
    for (const i of ids) c.vcpus[i]!.setCr3(b.cr3);
  } catch (e) {
    // A table pool too small, a VM without shadow paging: the step fails with the reason.
    if (!(e instanceof RangeError || e instanceof TypeError || e instanceof KvmError)) throw e;
    x.errors.push(`${x.label}: guestPaging: ${e.message}`);
  }
}
