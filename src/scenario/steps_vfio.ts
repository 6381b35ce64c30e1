/**
 * Executing the device-assignment and memory-type steps (schema_vfio.ts) through the public API: VFIO
 * group/container/IOMMU setup on `kvm.vfio`, MAP/UNMAP_DMA by region, device DMA patterns, the kvm-vfio
 * device, and guest CR0.CD / MTRR / PAT writes. Derived counts: VFIO ioctls, pages mapped, DMA by
 * outcome (coherent or not, IOMMU faults), and non-coherent DMA writes that land on a page the guest
 * maps with a stale EPT memory type — the 2019 symptom (the GPU writes past the CPU cache of a page
 * the guest still treats as WB). Model-only file.
 */
import {
  KvmError,
  auditSpteMemtypes,
  uapiVfio,
  type Vcpu,
  type VfioContainer,
  type VfioDevice,
  type IommuUnit,
  type KvmVfioDevice,
} from '../index.ts';
import type { Step } from './schema.ts';
import { VFIO_STEP_KINDS } from './step_kinds.ts';
import { callFailed, type ExecCtx, type RegionState, type VmCtx } from './steps.ts';

const PAGE = 4096;
const MSR_IA32_CR_PAT = 0x277;
const MTRR_TYPE_UNCACHABLE = 0;

/** The host-wide VFIO objects a scenario names (one model host per run). */
export interface VfioCtx {
  units: Map<string, IommuUnit>;
  devices: Map<string, VfioDevice>;
  containers: Map<string, VfioContainer>;
  /** the kvm-vfio device of each VM, created on its first kvmVfio step */
  kvmDevices: Map<VmCtx, KvmVfioDevice>;
}

export function newVfioCtx(): VfioCtx {
  return { units: new Map(), devices: new Map(), containers: new Map(), kvmDevices: new Map() };
}

type VfioStep = Extract<
  Step,
  | { vfioDevice: unknown }
  | { vfioContainer: unknown }
  | { vfioGroup: unknown }
  | { vfioIommu: unknown }
  | { mapDma: unknown }
  | { unmapDma: unknown }
  | { dma: unknown }
  | { kvmVfio: unknown }
  | { cr0: unknown }
  | { mtrr: unknown }
  | { pat: unknown }
>;

export function isVfioStep(s: Step): s is VfioStep {
  return VFIO_STEP_KINDS.some((k) => k in s);
}

const bump = (x: ExecCtx, k: string, n = 1): void => {
  x.derived[k] = (x.derived[k] ?? 0) + n;
};

/** An ioctl-shaped call: a KvmError is recorded as a rejected call, anything else is a model bug. */
function call(x: ExecCtx, what: string, f: () => void): boolean {
  try {
    f();
    bump(x, `ioctl_${what}`);
    return true;
  } catch (e) {
    if (!(e instanceof KvmError)) throw e;
    callFailed(x, e);
    return false;
  }
}

/** A guest instruction that may #GP: 1 is recorded like a rejected call. */
function guestOp(x: ExecCtx, what: string, v: Vcpu, f: () => number): void {
  if (f() === 0) return bump(x, `guest_${what}`);
  bump(x, 'guest_gp');
  x.errors.push(`${x.label}: #GP on vCPU ${v.vcpuId} (${what})`);
}

function range(
  r: RegionState,
  s: { offset?: number | undefined; length?: number | undefined },
): { start: number; len: number } {
  const start = s.offset ?? 0;
  return { start, len: s.length ?? r.decl.size - start };
}

function vcpusOf(c: VmCtx, ids: 'all' | number[] | undefined): Vcpu[] {
  return ids === undefined || ids === 'all' ? c.vcpus : ids.map((i) => c.vcpus[i]!);
}

export function execVfioStep(x: ExecCtx, c: VmCtx, s: VfioStep): void {
  const v = x.vfio;
  const vfio = x.kvm.vfio;
  const reg = (name: string): RegionState => c.regions.get(name)!;
  if ('vfioDevice' in s) {
    const group = s.group === undefined ? undefined : v.devices.get(s.group)?.group;
    const iommu = s.iommu === undefined || s.iommu === 'default' ? undefined : v.units.get(s.iommu);
    v.devices.set(
      s.vfioDevice,
      vfio.addDevice({ name: s.vfioDevice, ...(iommu ? { iommu } : {}), ...(group ? { group } : {}) }),
    );
    return;
  }
  if ('vfioContainer' in s) return void v.containers.set(s.vfioContainer, vfio.openContainer());
  if ('vfioGroup' in s) {
    const g = device(x, s.vfioGroup).group;
    if (s.unset) return void call(x, 'vfio_unset_container', () => g.unsetContainer());
    return void call(x, 'vfio_set_container', () => g.setContainer(container(x, s.container!).fd));
  }
  if ('vfioIommu' in s)
    return void call(x, 'vfio_set_iommu', () =>
      container(x, s.vfioIommu).setIommu(uapiVfio.VFIO_TYPE1v2_IOMMU),
    );
  if ('mapDma' in s) {
    const m = s.mapDma;
    const r = reg(m.region);
    const { start, len } = range(r, m);
    const flags = uapiVfio.VFIO_DMA_MAP_FLAG_READ | (m.readonly ? 0 : uapiVfio.VFIO_DMA_MAP_FLAG_WRITE);
    const iova = m.iova ?? r.gpa + start;
    if (
      call(x, 'vfio_map_dma', () =>
        container(x, m.container).mapDma({ iova, vaddr: r.hva + start, size: len, flags }),
      )
    )
      bump(x, 'iommu_pages_mapped', len / PAGE);
    return;
  }
  if ('unmapDma' in s) {
    const u = s.unmapDma;
    const r = reg(u.region);
    const { start, len } = range(r, u);
    let bytes = 0;
    if (
      call(
        x,
        'vfio_unmap_dma',
        () => (bytes = container(x, u.container).unmapDma({ iova: r.gpa + start, size: len })),
      )
    )
      bump(x, 'iommu_pages_unmapped', bytes / PAGE);
    return;
  }
  if ('dma' in s) return deviceDma(x, c, s.dma);
  if ('kvmVfio' in s) {
    let dev = v.kvmDevices.get(c);
    if (
      dev === undefined &&
      !call(x, 'kvm_create_device', () => (dev = c.vm.createDevice({ type: uapiVfio.KVM_DEV_TYPE_VFIO })))
    )
      return;
    v.kvmDevices.set(c, dev!);
    const fd = device(x, s.kvmVfio).group.fd;
    return void call(x, s.del ? 'kvm_vfio_file_del' : 'kvm_vfio_file_add', () =>
      s.del ? dev!.fileDel(fd) : dev!.fileAdd(fd),
    );
  }
  if ('cr0' in s) {
    for (const cpu of vcpusOf(c, s.cr0.vcpus)) {
      const arg = s.cr0.nw === undefined ? { cd: s.cr0.cd } : { cd: s.cr0.cd, nw: s.cr0.nw };
      guestOp(x, 'cr0_writes', cpu, () => cpu.setCr0(arg));
    }
    return;
  }
  if ('mtrr' in s) {
    const m = s.mtrr;
    for (const cpu of vcpusOf(c, m.vcpus)) {
      for (const r of m.var ?? []) {
        const rr = r.region === undefined ? null : reg(r.region);
        const spec = r.off
          ? null
          : { base: rr ? rr.gpa : r.base!, size: rr ? rr.decl.size : r.size!, type: r.type! };
        guestOp(x, 'mtrr_writes', cpu, () => cpu.setMtrrVar(r.index, spec));
      }
      if (m.defType !== undefined || m.enabled !== undefined || m.fixed !== undefined) {
        const o = {
          ...(m.enabled !== undefined ? { enabled: m.enabled } : {}),
          ...(m.fixed !== undefined ? { fixed: m.fixed } : {}),
        };
        guestOp(x, 'mtrr_writes', cpu, () => cpu.setMtrrDefType(m.defType ?? MTRR_TYPE_UNCACHABLE, o));
      }
    }
    return;
  }
  if ('pat' in s)
    for (const cpu of vcpusOf(c, s.pat.vcpus))
      guestOp(x, 'pat_writes', cpu, () => cpu.setMsr(MSR_IA32_CR_PAT, s.pat.value));
}

function device(x: ExecCtx, name: string): VfioDevice {
  const d = x.vfio.devices.get(name);
  if (d === undefined)
    throw new KvmError('ENODEV', 'scenario', `VFIO device '${name}' is used before its vfioDevice step`);
  return d;
}

function container(x: ExecCtx, name: string): VfioContainer {
  const c = x.vfio.containers.get(name);
  if (c === undefined)
    throw new KvmError('EBADF', 'scenario', `VFIO container '${name}' is used before its vfioContainer step`);
  return c;
}

type DmaPattern = Extract<Step, { dma: unknown }>['dma'];

/**
 * Device DMA at IOVA = gpa. A non-coherent write to a page whose SPTE memtype is stale is counted:
 * the guest reads it through a cache the device bypassed. The stale set is taken once per step (the
 * DMA itself changes no SPTE).
 */
function deviceDma(x: ExecCtx, c: VmCtx, p: DmaPattern): void {
  const r = c.regions.get(p.region)!;
  const { start, len } = range(r, p);
  const stride = p.stride ?? PAGE;
  const n = Math.max(0, Math.ceil(len / stride));
  let offs = Array.from({ length: n }, (_, i) => start + i * stride);
  if (p.workingSet !== undefined && p.workingSet < n) {
    const rand = x.seeded(`dma:${p.region}:${start}:${len}:${stride}:${p.workingSet}`);
    for (let i = 0; i < p.workingSet; i++) {
      const j = i + Math.floor(rand() * (n - i));
      [offs[i], offs[j]] = [offs[j]!, offs[i]!];
    }
    offs = offs.slice(0, p.workingSet);
  }
  const kind = p.kind ?? 'write';
  const dev = device(x, p.device);
  // stale leafs by level: a huge leaf is found by its gfn rounded down to the leaf's span
  let stale: Set<number>[] | null = null;
  if (kind === 'write' && c.vcpus.length > 0) {
    stale = [new Set(), new Set(), new Set()];
    for (const e of auditSpteMemtypes(c.vm).entries) stale[e.level - 1]?.add(e.gfn);
  }
  const isStale = (gfn: number): boolean =>
    stale !== null && stale.some((set, i) => set.size > 0 && set.has(gfn - (gfn % 512 ** i)));
  for (let pass = 0; pass < (p.passes ?? 1); pass++) {
    for (const off of offs) {
      const gpa = r.gpa + off;
      const res = dev.dma(gpa, kind);
      bump(x, 'dma_ops');
      if (!res.ok) {
        bump(x, `dma_fault_${res.fault}`);
        continue;
      }
      if (res.iotlb === 'miss') bump(x, 'iotlb_misses');
      if (res.coherent) continue;
      bump(x, 'dma_noncoherent');
      if (isStale(Math.floor(gpa / PAGE))) bump(x, 'dma_into_stale_memtype');
    }
  }
}
