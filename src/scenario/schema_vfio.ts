/**
 * Scenario step kinds for device assignment and guest memory types: the VFIO group/container/IOMMU
 * setup a VMM does for an assigned device, MAP_DMA/UNMAP_DMA by region (IOVA = guest physical address,
 * as QEMU maps guest RAM), device DMA patterns, the kvm-vfio device (which is how KVM learns about
 * non-coherent DMA), and the guest's CR0.CD, MTRR and PAT writes that feed the EPT memory type.
 * Merged into STEP_SCHEMAS by schema.ts; see README "The CLI". Model-only file.
 */
import { z } from 'zod';
import { num } from './numbers.ts';

/** MTRR/PAT memory types by their SDM short names, or the raw 0–7 encoding. */
export const MEMTYPE_NAMES = { UC: 0, WC: 1, WT: 4, WP: 5, WB: 6, 'UC-': 7 } as const;
const memtype = z
  .union([z.enum(Object.keys(MEMTYPE_NAMES) as [keyof typeof MEMTYPE_NAMES]), z.number().int().min(0).max(7)])
  .transform((v): number => (typeof v === 'number' ? v : MEMTYPE_NAMES[v]));

const common = { label: z.string().optional(), vm: z.string().optional() };
const vcpus = z.union([z.literal('all'), z.array(num)]).optional();

/** A u64 MSR value: hex string (up to 16 digits) or a safe integer. */
const u64 = z.union([z.number(), z.string()]).transform((v, ctx): bigint => {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return BigInt(v);
  if (typeof v === 'string' && /^0x[0-9a-f_]{1,20}$/i.test(v)) {
    const b = BigInt(v.replace(/_/g, ''));
    if (b < 2n ** 64n) return b;
  }
  ctx.addIssue({ code: 'custom', message: `expected a u64 as hex ("0x0007040600070406") or a safe integer; got ${JSON.stringify(v)}` });
  return z.NEVER;
});

/** A range of a declared region (offset/length default to the whole region). */
const regionRange = { region: z.string(), offset: num.optional(), length: num.optional() };

export const VFIO_STEP_SCHEMAS = {
  /** bind a PCI device to vfio-pci: its own IOMMU group, or `group` = a device whose group it joins */
  vfioDevice: z.strictObject({ ...common, vfioDevice: z.string().min(1), iommu: z.string().optional(), group: z.string().optional() }),
  /** open /dev/vfio/vfio */
  vfioContainer: z.strictObject({ ...common, vfioContainer: z.string().min(1) }),
  /** VFIO_GROUP_SET_CONTAINER for the named device's group (or UNSET_CONTAINER with `unset`) */
  vfioGroup: z.strictObject({ ...common, vfioGroup: z.string(), container: z.string().optional(), unset: z.boolean().optional() }),
  /** VFIO_SET_IOMMU(VFIO_TYPE1v2_IOMMU): attaches the container's groups to IOMMU domains */
  vfioIommu: z.strictObject({ ...common, vfioIommu: z.string() }),
  /** VFIO_IOMMU_MAP_DMA of a region's host mapping at IOVA = its gpa (+ offset) unless `iova` is given */
  mapDma: z.strictObject({ ...common, mapDma: z.strictObject({ container: z.string(), ...regionRange, iova: num.optional(), readonly: z.boolean().optional() }) }),
  /** VFIO_IOMMU_UNMAP_DMA of a region's IOVA range */
  unmapDma: z.strictObject({ ...common, unmapDma: z.strictObject({ container: z.string(), ...regionRange }) }),
  /** device DMA into a region (IOVA = gpa), every stride or a seeded working set, per pass */
  dma: z.strictObject({
    ...common,
    dma: z.strictObject({
      device: z.string(),
      ...regionRange,
      stride: num.optional(),
      workingSet: num.optional(),
      kind: z.enum(['read', 'write']).optional(),
      passes: num.optional(),
    }),
  }),
  /** KVM_CREATE_DEVICE(KVM_DEV_TYPE_VFIO) once per VM, then KVM_DEV_VFIO_FILE_ADD (or _DEL) of the device's group */
  kvmVfio: z.strictObject({ ...common, kvmVfio: z.string(), del: z.boolean().optional() }),
  /** guest MOV to CR0 changing CD (NW follows CD unless given) on the listed vCPUs (default all) */
  cr0: z.strictObject({ ...common, cr0: z.strictObject({ cd: z.boolean(), nw: z.boolean().optional(), vcpus }) }),
  /** guest WRMSRs of MTRRs: variable ranges (by base/size or a region's range) then MTRRdefType */
  mtrr: z.strictObject({
    ...common,
    mtrr: z.strictObject({
      vcpus,
      var: z
        .array(
          z.strictObject({
            index: num,
            type: memtype.optional(),
            base: num.optional(),
            size: num.optional(),
            region: z.string().optional(),
            /** disable the range */
            off: z.boolean().optional(),
          }),
        )
        .optional(),
      defType: memtype.optional(),
      enabled: z.boolean().optional(),
      fixed: z.boolean().optional(),
    }),
  }),
  /** guest WRMSR(IA32_PAT) */
  pat: z.strictObject({ ...common, pat: z.strictObject({ value: u64, vcpus }) }),
} as const;
