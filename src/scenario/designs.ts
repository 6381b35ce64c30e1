/**
 * The policy × ABI designs a scenario is compared under: the three ways proposed in 2024 for KVM to
 * choose between zap-all (kvm_mmu_zap_all_fast) and a precise zap on memslot DELETE/MOVE, with the
 * variants userspace controls (the quirk on or off; the RFC flag set or not). See mmu-zap.md §1.2, §6.6.
 * Model-only file (no kernel counterpart).
 */
import type { KvmOptions, ZapDesign } from '../index.ts';
import { resolveHostConfig } from '../kvm/host_profile.ts';
import type { Scenario } from './schema.ts';
import { VM_TYPE_NAMES } from '../uapi/kvm_x86.ts';

export interface DesignSpec {
  /** Short stable name used in tables, JSON and --design. */
  id: string;
  zapDesign: ZapDesign;
  /** KVM_ENABLE_CAP(KVM_CAP_DISABLE_QUIRKS2, KVM_X86_QUIRK_SLOT_ZAP_ALL) right after KVM_CREATE_VM */
  disableSlotZapAll: boolean;
  /** every slot the scenario creates carries KVM_MEM_ZAP_LEAFS_ONLY */
  leafsOnlyFlag: boolean;
  describe: string;
}

export const DESIGNS: readonly DesignSpec[] = [
  {
    id: 'quirk',
    zapDesign: 'quirk',
    disableSlotZapAll: false,
    leafsOnlyFlag: false,
    describe: '6.12+ upstream, KVM_X86_QUIRK_SLOT_ZAP_ALL enabled (default)',
  },
  {
    id: 'quirk-off',
    zapDesign: 'quirk',
    disableSlotZapAll: true,
    leafsOnlyFlag: false,
    describe: '6.12+ upstream, SLOT_ZAP_ALL disabled by DISABLE_QUIRKS2',
  },
  {
    id: 'vm-type',
    zapDesign: 'vm-type',
    disableSlotZapAll: false,
    leafsOnlyFlag: false,
    describe: 'keyed on VM type: DEFAULT zaps all, new types zap the slot',
  },
  {
    id: 'slot-flag',
    zapDesign: 'slot-flag',
    disableSlotZapAll: false,
    leafsOnlyFlag: false,
    describe: 'May 2024 RFC, slots without KVM_MEM_ZAP_LEAFS_ONLY',
  },
  {
    id: 'slot-flag+leafs',
    zapDesign: 'slot-flag',
    disableSlotZapAll: false,
    leafsOnlyFlag: true,
    describe: 'May 2024 RFC, every slot with KVM_MEM_ZAP_LEAFS_ONLY',
  },
];

export function vmTypeNumber(t: string | number | undefined): number {
  if (t === undefined) return 0;
  return typeof t === 'number' ? t : VM_TYPE_NAMES.indexOf(t as (typeof VM_TYPE_NAMES)[number]);
}

/**
 * The designs that are distinct and legal for the scenario's VM types and host:
 * quirk-off only differs for DEFAULT VMs (6.12+ ignores the quirk for the new types); the RFC made the
 * flag mandatory on TDX guest_memfd slots, so 'slot-flag' without it cannot build a TD; the flag only
 * exists with the TDP MMU.
 */
/** The scenario's host section as Kvm options: overrides, then the named keys, then bug switches. */
export function kvmOptionsFor(sc: Scenario): KvmOptions {
  const h = sc.host ?? {};
  const opts: Record<string, unknown> = { ...(h.overrides ?? {}) };
  for (const k of ['profile', 'kernel', 'tdp', 'tdpMmu', 'honorGuestMtrrs', 'cdToggleZap'] as const)
    if (h[k] !== undefined) opts[k] = h[k];
  if (h.bugs?.length) opts['bugs'] = h.bugs;
  return opts as KvmOptions;
}

export function designsFor(sc: Scenario): { allowed: DesignSpec[]; skipped: { id: string; why: string }[] } {
  const types = sc.vms.map((v) => vmTypeNumber(v.type));
  let tdpMmu = true; // options the host rejects are reported when the run builds it
  try {
    tdpMmu = resolveHostConfig(kvmOptionsFor(sc)).tdpMmu;
  } catch {
    /* the runner reports the bad option */
  }
  const tdxPrivate = sc.vms.some((v) => vmTypeNumber(v.type) === 5 && v.regions.some((r) => r.private));
  const allowed: DesignSpec[] = [];
  const skipped: { id: string; why: string }[] = [];
  for (const d of DESIGNS) {
    let why: string | null = null;
    if (d.disableSlotZapAll && !types.includes(0))
      why = 'the quirk only applies to DEFAULT VMs (same as quirk)';
    else if (d.zapDesign === 'slot-flag' && !d.leafsOnlyFlag && tdxPrivate)
      why = 'the RFC requires the flag on TDX guest_memfd slots';
    else if (d.leafsOnlyFlag && !tdpMmu) why = 'KVM_MEM_ZAP_LEAFS_ONLY needs the TDP MMU';
    if (why === null) allowed.push(d);
    else skipped.push({ id: d.id, why });
  }
  return { allowed, skipped };
}

export function designById(id: string): DesignSpec | undefined {
  return DESIGNS.find((d) => d.id === id);
}
