/**
 * The real CPL3 access harness (src/backends/kvm/guest_harness.ts) rebuilt on the model: its memslot
 * (id 32763 at 63 GiB, 4 MiB), page 0 GDT/TSS (supervisor), code at page 8, 16 access-list pages after it
 * (256 accesses per page), a page-table pool after the list, identity-mapped 4-level guest tables with
 * A/D clear. runAccesses replays what the program does: fetch the code, then per entry read the list
 * entry and perform the access; then OUT, which KVM emulates, reading the TSS by a software walk.
 */
import { Kvm, type Vm } from '../../src/kvm/kvm_main.ts';
import type { Vcpu } from '../../src/kvm/vcpu.ts';
import type { AccessKind, AccessResult } from '../../src/kvm/api_types.ts';
import { IdentityMapBuilder, PT_PRESENT_MASK, PT_WRITABLE_MASK } from '../../src/x86/mmu/guest_paging.ts';
import { shadowMmuOf, type ShadowMmu } from '../../src/x86/mmu/shadow_mmu.ts';
import { kvmMmuGvaToGpa } from '../../src/x86/mmu/paging_tmpl.ts';

const PAGE = 4096;
export const HARNESS = { slot: 32763, gpa: 0xf_c000_0000, size: 4 << 20, listPages: 16 } as const;
const CODE = HARNESS.gpa + 8 * PAGE;
const LIST = HARNESS.gpa + 9 * PAGE;

export class ModelHarness {
  readonly mmu: ShadowMmu;
  readonly map: IdentityMapBuilder;
  private installed = false;

  constructor(
    readonly kvm: Kvm,
    readonly vm: Vm,
    readonly vcpu: Vcpu,
  ) {
    this.mmu = shadowMmuOf(vm)!;
    this.map = new IdentityMapBuilder(
      this.mmu.gpt,
      LIST + HARNESS.listPages * PAGE,
      HARNESS.gpa + HARNESS.size,
    );
    for (let a = CODE; a < LIST + HARNESS.listPages * PAGE; a += PAGE) this.map.mapPage(a);
    this.map.mapPage(HARNESS.gpa, PT_PRESENT_MASK | PT_WRITABLE_MASK);
  }

  private install(): void {
    if (this.installed) return;
    const hva = this.kvm.host.mmap(HARNESS.size);
    this.vm.setUserMemoryRegion({
      slot: HARNESS.slot,
      flags: 0,
      guestPhysAddr: HARNESS.gpa,
      memorySize: HARNESS.size,
      userspaceAddr: hva,
    });
    this.vcpu.setCr3(this.map.cr3);
    this.installed = true;
  }

  /** One KVM_RUN of the program over `list` (gva == gpa); returns each access's result. */
  runAccesses(list: readonly { gpa: number; kind: AccessKind }[]): AccessResult[] {
    this.install();
    for (const a of list) this.map.mapPage(a.gpa);
    this.vcpu.access(CODE, 'exec');
    const out = list.map((a, i) => {
      this.vcpu.access(LIST + Math.floor(i / 256) * PAGE, 'read');
      return this.vcpu.access(a.gpa, a.kind);
    });
    // OUT at CPL3 #GPs and is emulated; the emulator reads the TSS I/O bitmap through the guest tables.
    kvmMmuGvaToGpa(this.mmu, this.vcpu, HARNESS.gpa + 0x800, false);
    return out;
  }

  /** A single access, as the real backend's vcpu.access (a one-entry run). */
  access(gpa: number, kind: AccessKind): AccessResult {
    return this.runAccesses([{ gpa, kind }])[0]!;
  }
}

export function pvmVm(): { kvm: Kvm; vm: Vm; vcpu: Vcpu; h: ModelHarness } {
  const kvm = new Kvm({ profile: 'pvm-6.18' });
  const vm = kvm.createVm(0);
  const vcpu = vm.createVcpu(0);
  return { kvm, vm, vcpu, h: new ModelHarness(kvm, vm, vcpu) };
}
