/**
 * The host's VFIO: DMA-remapping units, devices bound to vfio-pci (each in an IOMMU group), the group
 * and container files a VMM opens, and device DMA through the IOMMU. `kvm.vfio` is one per model host.
 *
 *   const unit = kvm.vfio.addIommu({ snoopControl: false });     // a DMAR unit without snoop control
 *   const gpu = kvm.vfio.addDevice({ name: 'gpu', iommu: unit }); // its own IOMMU group, group fd open
 *   const c = kvm.vfio.openContainer();                            // open("/dev/vfio/vfio")
 *   gpu.group.setContainer(c.fd);                                  // VFIO_GROUP_SET_CONTAINER
 *   c.setIommu(VFIO_TYPE1v2_IOMMU);                                // attaches the group to a domain
 *   c.mapDma({ iova, vaddr: hva, size, flags: READ | WRITE });     // pins and maps
 *   gpu.dma(iova, 'write');                                        // → { ok, pfn, coherent } or a fault
 *
 * Kernel counterpart: drivers/vfio/{vfio_main,group,container}.c (vfio_group_ioctl_set_container,
 * vfio_ioctl_set_iommu, vfio_container_ioctl_check_extension, vfio_file_enforced_coherent,
 * vfio_group_enforced_coherent), drivers/iommu/intel/iommu.c (intel_iommu_capable).
 * Simplifications: the group API only (no iommufd / cdev), one device per group unless asked, device
 * files and BAR mmaps are not modelled (a device is just a DMA initiator), closing files is not
 * modelled (detach with unsetContainer, release kvm-vfio devices explicitly).
 */
import type { HostMm } from '../host/host_mm.ts';
import type { ModelFile } from '../kvm/guest_memfd.ts';
import { KvmError, hex } from '../kvm/kvm_error.ts';
import { argBool, argInt, argOneOf, argOpts, formatValue } from '../kvm/args.ts';

const DMA_KINDS: readonly DmaKind[] = ['read', 'write'];
import type { DmaKind, DmaResult, IommuUnit, SnoopScope } from './iommu.ts';
import type { IommuDomain } from './iommu.ts';
import { VfioIommuType1, type VfioDmaMap, type VfioDmaUnmap } from './vfio_iommu_type1.ts';
import { VFIO_DMA_CC_IOMMU, VFIO_TYPE1v2_IOMMU, VFIO_UNMAP_ALL } from '../uapi/vfio.ts';

/** What VFIO needs of the model process: its memory and its fd table. */
export interface VfioHostProcess {
  readonly host: HostMm;
  installFd(make: (id: number) => ModelFile): number;
  lookupFd(fd: number): ModelFile | undefined;
}

/** A PCI device bound to vfio-pci: only its DMA is modelled. */
export class VfioDevice {
  constructor(
    readonly name: string,
    readonly unit: IommuUnit,
    readonly group: VfioGroup,
    private readonly host: HostMm,
  ) {}

  /**
   * The device reads or writes one page at `iova`. Without an IOMMU domain (the group is not in a
   * container with an IOMMU set) the DMA is blocked; otherwise the IOMMU translates it or faults.
   * A write bumps the target page's content version.
   */
  dma(iova: number, kind: DmaKind): DmaResult {
    argInt('dma', 'iova', iova);
    argOneOf('dma', 'kind', kind, DMA_KINDS);
    const d = this.group.domain;
    if (d === null) return { ok: false, fault: 'no-domain', iova };
    const r = d.translate(iova, kind);
    if (r.ok && kind === 'write') this.host.pfns.write(r.pfn);
    return r;
  }
}

/** An IOMMU group and its /dev/vfio/N file. */
export class VfioGroup {
  readonly devices: VfioDevice[] = [];
  container: VfioContainer | null = null;
  /** The IOMMU domain the group is attached to (set by the container's type1 backend). */
  domain: IommuDomain | null = null;

  constructor(
    readonly id: number,
    readonly fd: number,
    private readonly vfio: Vfio,
  ) {}

  /** VFIO_GROUP_SET_CONTAINER. @kernel drivers/vfio/group.c#vfio_group_ioctl_set_container */
  setContainer(containerFd: number): void {
    const sc = 'VFIO_GROUP_SET_CONTAINER';
    const c = this.vfio.lookupFile(containerFd, sc); // fdget: EBADF
    // vfio_group_has_iommu is checked before the fd's kind is looked at.
    if (this.container !== null)
      throw new KvmError('EINVAL', sc, `group ${this.id} is already in a container`);
    // Neither a container nor an iommufd (not modelled): "The FD passed is not recognized."
    if (!(c instanceof VfioContainer))
      throw new KvmError('EBADFD', sc, `fd ${hex(containerFd)} is not a VFIO container`);
    this.container = c;
    c.groups.push(this);
    c.iommu?.attachGroup(this); // a container that already has an IOMMU attaches new groups at once
  }

  /** VFIO_GROUP_UNSET_CONTAINER. @kernel drivers/vfio/container.c#vfio_group_detach_container */
  unsetContainer(): void {
    const c = this.container;
    if (c === null)
      throw new KvmError('EINVAL', 'VFIO_GROUP_UNSET_CONTAINER', `group ${this.id} has no container`);
    c.groups.splice(c.groups.indexOf(this), 1);
    c.iommu?.detachGroup(this, c.groups);
    this.container = null;
    if (c.groups.length === 0) c.iommu = null; // the last group takes the IOMMU driver with it
  }

  /**
   * Can KVM rely on this group's DMA being cache-coherent? v5.19+: every device's IOMMU unit supports
   * snoop control (IOMMU_CAP_ENFORCE_CACHE_COHERENCY). Before: what VFIO_DMA_CC_IOMMU said of the
   * container's domains, which the old Intel driver derived from every unit in the system.
   * @kernel drivers/vfio/group.c#vfio_group_enforced_coherent
   */
  enforcedCoherent(): boolean {
    if (this.vfio.snoopScope === 'system') return this.container?.checkExtension(VFIO_DMA_CC_IOMMU) === 1;
    return this.devices.every((d) => d.unit.snoopControl);
  }
}

/** A /dev/vfio/vfio container and its IOMMU backend. */
export class VfioContainer {
  readonly groups: VfioGroup[] = [];
  iommu: VfioIommuType1 | null = null;

  constructor(
    readonly fd: number,
    private readonly vfio: Vfio,
  ) {}

  /** VFIO_CHECK_EXTENSION on the container. @kernel drivers/vfio/container.c#vfio_container_ioctl_check_extension */
  checkExtension(ext: number): number {
    switch (ext) {
      case VFIO_TYPE1v2_IOMMU:
      case VFIO_UNMAP_ALL:
        return 1;
      case VFIO_DMA_CC_IOMMU:
        return this.iommu !== null && this.iommu.haveEnforceCacheCoherency() ? 1 : 0;
      default:
        return 0;
    }
  }

  /** VFIO_SET_IOMMU: choose the backend and attach every group. @kernel drivers/vfio/container.c#vfio_ioctl_set_iommu */
  setIommu(type: number): void {
    const sc = 'VFIO_SET_IOMMU';
    if (this.groups.length === 0) throw new KvmError('EINVAL', sc, 'the container has no group');
    if (this.iommu !== null) throw new KvmError('EINVAL', sc, 'the container already has an IOMMU driver');
    if (type !== VFIO_TYPE1v2_IOMMU)
      throw new KvmError('ENODEV', sc, `IOMMU type ${type} (only type1v2 is modelled)`);
    this.iommu = this.vfio.newType1();
    for (const g of this.groups) this.iommu.attachGroup(g);
  }

  /** VFIO_IOMMU_MAP_DMA */
  mapDma(map: VfioDmaMap): void {
    this.backend('VFIO_IOMMU_MAP_DMA').mapDma(map);
  }

  /** VFIO_IOMMU_UNMAP_DMA → the number of bytes unmapped (unmap.size on return). */
  unmapDma(unmap: VfioDmaUnmap): number {
    return this.backend('VFIO_IOMMU_UNMAP_DMA').unmapDma(unmap);
  }

  private backend(sc: string): VfioIommuType1 {
    // No IOMMU driver yet: the container ioctl falls through to -ENOTTY.
    if (this.iommu === null) throw new KvmError('ENOTTY', sc, 'VFIO_SET_IOMMU has not been done');
    return this.iommu;
  }
}

/** The VFIO subsystem and IOMMU hardware of one model host (`kvm.vfio`). */
export class Vfio {
  /** DMA-remapping units; unit 0 (with snoop control) exists from the start. */
  readonly units: IommuUnit[] = [{ id: 0, snoopControl: true }];
  /**
   * Snoop-control check of the host's Intel IOMMU driver: 'attached' (v5.19+) or 'system' (the
   * pre-v5.19-rc1 bug). Each new IOMMU domain reads it when it is created.
   */
  snoopScope: SnoopScope = 'attached';
  readonly groups: VfioGroup[] = [];
  private readonly files = new Map<number, VfioGroup | VfioContainer>();
  private domainIds = 0;

  constructor(private readonly proc: VfioHostProcess) {}

  /** A further DMA-remapping unit (e.g. the one dedicated to an integrated GPU, often without snoop control). */
  addIommu(opts: { snoopControl?: boolean } = {}): IommuUnit {
    const o = argOpts('addIommu', opts, ['snoopControl']);
    const u: IommuUnit = {
      id: this.units.length,
      snoopControl: argBool('addIommu', 'snoopControl', o['snoopControl'], true),
    };
    this.units.push(u);
    return u;
  }

  /** A device bound to vfio-pci, behind `iommu` (default unit 0), in a new IOMMU group unless `group` is given. */
  addDevice(opts: { name?: string; iommu?: IommuUnit; group?: VfioGroup } = {}): VfioDevice {
    const o = argOpts('addDevice', opts, ['name', 'iommu', 'group']) as typeof opts;
    if (o.name !== undefined && typeof o.name !== 'string')
      throw new TypeError(`addDevice: name must be a string (got ${formatValue(o.name)})`);
    const unit = o.iommu ?? this.units[0]!;
    if (!this.units.includes(unit)) throw new TypeError('addDevice: iommu is not a unit of this host');
    if (o.group !== undefined && !this.groups.includes(o.group))
      throw new TypeError(`addDevice: group must be a VFIO group of this host (got ${formatValue(o.group)})`);
    let g = o.group;
    if (g === undefined) {
      const fd = this.proc.installFd((id) => ({ kind: 'vfio', id }));
      g = new VfioGroup(this.groups.length, fd, this);
      this.groups.push(g);
      this.files.set(fd, g);
    } else if (g.container?.iommu)
      throw new TypeError('addDevice: the group is already attached to an IOMMU domain');
    const dev = new VfioDevice(o.name ?? `vfio${g.id}.${g.devices.length}`, unit, g, this.proc.host);
    g.devices.push(dev);
    return dev;
  }

  /** open("/dev/vfio/vfio"): a new container. */
  openContainer(): VfioContainer {
    const fd = this.proc.installFd((id) => ({ kind: 'vfio', id }));
    const c = new VfioContainer(fd, this);
    this.files.set(fd, c);
    return c;
  }

  /** The VFIO object behind fd; EBADF if the fd is not open, undefined if it is open but not a VFIO file. */
  lookupFile(fd: number, syscall: string): VfioGroup | VfioContainer | undefined {
    if (this.proc.lookupFd(fd) === undefined)
      throw new KvmError('EBADF', syscall, `fd ${hex(fd)} is not open`);
    return this.files.get(fd);
  }

  /** A group file (the model has no device cdev files); a container is not one. @kernel drivers/vfio/vfio_main.c#vfio_file_is_valid */
  fileIsValid(fd: number): boolean {
    return this.files.get(fd) instanceof VfioGroup;
  }

  /** @kernel drivers/vfio/vfio_main.c#vfio_file_enforced_coherent */
  fileEnforcedCoherent(fd: number): boolean {
    const f = this.files.get(fd);
    return f instanceof VfioGroup ? f.enforcedCoherent() : true;
  }

  /** A type1 backend bound to this host. */
  newType1(): VfioIommuType1 {
    const vfio = this;
    return new VfioIommuType1({
      host: this.proc.host,
      units: this.units,
      // read when a domain is created, so a later change applies to later domains
      get snoopScope() {
        return vfio.snoopScope;
      },
      newDomainId: () => this.domainIds++,
    });
  }
}
