/**
 * Scenario step kinds for device assignment and guest memory types: the VFIO group/container/IOMMU
 * setup a VMM does for an assigned device, MAP_DMA/UNMAP_DMA by region (IOVA = guest physical address,
 * as QEMU maps guest RAM), device DMA patterns, the kvm-vfio device (which is how KVM learns about
 * non-coherent DMA), and the guest's CR0.CD, MTRR and PAT writes that feed the EPT memory type.
 * Merged into STEP_SCHEMAS by schema.ts; see README "The CLI". Model-only file.
 */
import { z } from 'zod';
import { expectErrno, num } from './numbers.ts';

/** MTRR/PAT memory types by their SDM short names, or the raw 0–7 encoding. */
export const MEMTYPE_NAMES = { UC: 0, WC: 1, WT: 4, WP: 5, WB: 6, 'UC-': 7 } as const;
const memtype = z
  .union([z.enum(Object.keys(MEMTYPE_NAMES) as [keyof typeof MEMTYPE_NAMES]), z.number().int().min(0).max(7)])
  .transform((v): number => (typeof v === 'number' ? v : MEMTYPE_NAMES[v]));

const common = {
  label: z.string().optional().describe('the name the step has in reports (default: #n and its kind)'),
  vm: z.string().optional().describe('the VM the step acts on, by name (default: the first)'),
  expect: expectErrno,
};
const vcpus = z
  .union([z.literal('all'), z.array(num)])
  .optional()
  .describe('vCPU ids or "all" (default all)');

/** A u64 MSR value: hex string (up to 16 digits) or a safe integer. */
const u64 = z.union([z.number(), z.string()]).transform((v, ctx): bigint => {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return BigInt(v);
  if (typeof v === 'string' && /^0x[0-9a-f_]{1,20}$/i.test(v)) {
    const b = BigInt(v.replace(/_/g, ''));
    if (b < 2n ** 64n) return b;
  }
  ctx.addIssue({
    code: 'custom',
    message: `expected a u64 as hex ("0x0007040600070406") or a safe integer; got ${JSON.stringify(v)}`,
  });
  return z.NEVER;
});

/** A range of a declared region (offset/length default to the whole region). */
const regionRange = {
  region: z.string().describe('the region'),
  offset: num.optional().describe('bytes into the region (default 0)'),
  length: num.optional().describe('bytes (default: to the end of the region)'),
};

export const VFIO_STEP_SCHEMAS = {
  /** bind a PCI device to vfio-pci: its own IOMMU group, or `group` = a device whose group it joins */
  vfioDevice: z
    .strictObject({
      ...common,
      vfioDevice: z.string().min(1).describe('the device name later steps use'),
      iommu: z.string().optional().describe("the IOMMU unit (host.iommus name; default 'default')"),
      group: z.string().optional().describe("join this device's IOMMU group instead of a new one"),
    })
    .describe('bind a PCI device to vfio-pci (its group file opens)'),
  /** open /dev/vfio/vfio */
  vfioContainer: z
    .strictObject({
      ...common,
      vfioContainer: z.string().min(1).describe('the container name later steps use'),
    })
    .describe('open /dev/vfio/vfio'),
  /** VFIO_GROUP_SET_CONTAINER for the named device's group (or UNSET_CONTAINER with `unset`) */
  vfioGroup: z
    .strictObject({
      ...common,
      vfioGroup: z.string().describe('the device whose group it is'),
      container: z.string().optional().describe('VFIO_GROUP_SET_CONTAINER to this container'),
      unset: z.boolean().optional().describe('VFIO_GROUP_UNSET_CONTAINER instead'),
    })
    .describe("set (or unset) a device's group's container"),
  /** VFIO_SET_IOMMU(VFIO_TYPE1v2_IOMMU): attaches the container's groups to IOMMU domains */
  vfioIommu: z
    .strictObject({ ...common, vfioIommu: z.string().describe('the container') })
    .describe("VFIO_SET_IOMMU(VFIO_TYPE1v2_IOMMU): attaches the container's groups to IOMMU domains"),
  /** VFIO_IOMMU_MAP_DMA of a region's host mapping at IOVA = its gpa (+ offset) unless `iova` is given */
  mapDma: z
    .strictObject({
      ...common,
      mapDma: z
        .strictObject({
          container: z.string().describe('the container'),
          ...regionRange,
          iova: num.optional().describe('the I/O address (default: the region gpa + offset)'),
          readonly: z.boolean().optional().describe('map for device reads only (default false)'),
        })
        .describe('what to map'),
    })
    .describe("VFIO_IOMMU_MAP_DMA of a region's host mapping (pins the pages)"),
  /** VFIO_IOMMU_UNMAP_DMA of a region's IOVA range */
  unmapDma: z
    .strictObject({
      ...common,
      unmapDma: z
        .strictObject({ container: z.string().describe('the container'), ...regionRange })
        .describe('what to unmap'),
    })
    .describe("VFIO_IOMMU_UNMAP_DMA of a region's IOVA range"),
  /** device DMA into a region (IOVA = gpa), every stride or a seeded working set, per pass */
  dma: z
    .strictObject({
      ...common,
      dma: z
        .strictObject({
          device: z.string().describe('the device'),
          ...regionRange,
          stride: num.optional().describe('bytes between DMAs (default 4096)'),
          workingSet: num.optional().describe('this many random pages instead (seeded)'),
          kind: z.enum(['read', 'write']).optional().describe('default write'),
          passes: num.optional().describe('repeat the pattern (default 1)'),
        })
        .describe('the DMA pattern'),
    })
    .describe('device DMA into a region (IOVA = gpa)'),
  /** KVM_CREATE_DEVICE(KVM_DEV_TYPE_VFIO) once per VM, then KVM_DEV_VFIO_FILE_ADD (or _DEL) of the device's group */
  kvmVfio: z
    .strictObject({
      ...common,
      kvmVfio: z.string().describe('the device whose group file to add'),
      del: z.boolean().optional().describe('KVM_DEV_VFIO_FILE_DEL instead'),
    })
    .describe('the kvm-vfio device (created once per VM): KVM_DEV_VFIO_FILE_ADD (or _DEL)'),
  /** guest MOV to CR0 changing CD (NW follows CD unless given) on the listed vCPUs (default all) */
  cr0: z
    .strictObject({
      ...common,
      cr0: z
        .strictObject({
          cd: z.boolean().describe('CR0.CD'),
          nw: z.boolean().optional().describe('CR0.NW (default: follows cd)'),
          vcpus,
        })
        .describe('the new bits'),
    })
    .describe('guest MOV to CR0 changing CD'),
  /** guest WRMSRs of MTRRs: variable ranges (by base/size or a region's range) then MTRRdefType */
  mtrr: z
    .strictObject({
      ...common,
      mtrr: z
        .strictObject({
          vcpus,
          var: z
            .array(
              z
                .strictObject({
                  index: num.describe('variable MTRR 0–7'),
                  type: memtype.optional().describe('UC WC WT WP WB UC- or 0–7'),
                  base: num.optional().describe('range base (with size)'),
                  size: num.optional().describe('range size, a power of two'),
                  region: z.string().optional().describe("the region's gpa range instead of base/size"),
                  off: z.boolean().optional().describe('disable the range'),
                })
                .describe('one variable range'),
            )
            .optional()
            .describe('variable ranges to write'),
          defType: memtype.optional().describe('MTRRdefType default type'),
          enabled: z.boolean().optional().describe('MTRRdefType.E (default true)'),
          fixed: z.boolean().optional().describe('MTRRdefType.FE (default false)'),
        })
        .describe('the MSR writes'),
    })
    .describe('guest WRMSRs of MTRRs: variable ranges, then MTRRdefType'),
  /** guest WRMSR(IA32_PAT) */
  pat: z
    .strictObject({
      ...common,
      pat: z
        .strictObject({ value: u64.describe('the PAT MSR value (hex string or safe integer)'), vcpus })
        .describe('the write'),
    })
    .describe('guest WRMSR(IA32_PAT)'),
} as const;
