/**
 * The scenario parser's checks after the document's shape (parse.ts): the unrolled step count against
 * the limit, the memory layout (region sizes and alignment, what the model's host can map, duplicate
 * names and slot ids, overlapping initially-present regions) and the cross-references (VMs, regions,
 * vCPUs, VFIO devices and containers, IOMMU units). Each failure is a ScenarioError at a data path, which
 * parse.ts turns into `file:line:col: where: what`. Model-only file.
 */
import { MAX_FRAMES_PER_MAPPING } from '../host/host_mm.ts';
import type { Scenario, Step, VmDecl } from './schema.ts';
import { countSteps } from './step_kinds.ts';
import { enUS } from '../report/en_us.ts';

/** Bytes per frame of each backing, and the most one region may have (the host mappings start at 1 TiB and end at 2^47). */
const FRAME_BYTES = { '4k': 4096, '2m': 2 ** 21, '1g': 2 ** 30, thp: 2 ** 21 } as const;
const MAX_REGION_BYTES = 2 ** 47 - 2 ** 40;

/** A data path (keys and indexes) into the scenario document. */
export type Path = (string | number)[];

/** A check that failed at a data path (the key itself when atKey: an unknown key). */
export class ScenarioError extends Error {
  constructor(
    readonly path: Path,
    message: string,
    readonly atKey = false,
  ) {
    super(message);
  }
}

export function fail(path: Path, message: string, atKey = false): never {
  throw new ScenarioError(path, message, atKey);
}

/**
 * The passes of a step's access or DMA pattern (each the whole pattern again, as a repeat of the step
 * would be): what the step limit counts, so `passes: 1e11` is refused like `repeat: 1e11`, not run.
 */
function passesOf(s: Step): number {
  const p =
    'access' in s
      ? s.access.passes
      : 'dma' in s
        ? s.dma.passes
        : 'delete' in s
          ? Math.max(s.whileInvalid?.passes ?? 1, s.whileLockDropped?.passes ?? 1)
          : undefined;
  return Math.max(1, p ?? 1);
}

/** Leaf steps a list unrolls to, each pass of a pattern counted as a step (Infinity past 2^53). */
function countWork(list: Step[]): number {
  let n = 0;
  for (const s of list) n += 'repeat' in s ? s.repeat * countWork(s.steps) : passesOf(s);
  return n;
}

/** Refuse a timeline past the limit, pointing at the top-level step that contributes most. */
export function checkStepCount(timeline: Step[], maxSteps: number): void {
  const total = countWork(timeline);
  if (total <= maxSteps) return;
  let worst = 0;
  timeline.forEach((s, i) => {
    if (countWork([s]) > countWork([timeline[worst]!])) worst = i;
  });
  const n = countWork([timeline[worst]!]);
  const passes = total === countSteps(timeline) ? '' : ', each pass of a pattern counted as a step';
  fail(
    ['timeline', worst],
    `the timeline unrolls to ${fmtCount(total)} steps (this step: ${fmtCount(n)}${passes}), more than the limit of ${fmtCount(maxSteps)}; raise it with --max-steps if you mean it`,
  );
}

const hex = (n: number): string => `0x${n.toString(16)}`;

/**
 * A host event's range is whole pages inside its region, as the host's mm calls require (a range of
 * 0 or a part of a page is a RangeError at run time; a range past the region would hit the next
 * region's mapping); thpCollapse needs a THP-backed region. Checked here, where the value is.
 */
function checkHostRange(s: Extract<Step, { host: unknown }>, vm: VmDecl, at: Path): void {
  const h = s.host;
  const r = vm.regions.find((x) => x.name === h.region)!;
  const p: Path = [...at, 'host'];
  const off = h.offset ?? 0;
  if (off % 4096 !== 0) fail([...p, 'offset'], `offset must be 4K-aligned (got ${hex(off)})`);
  if (off >= r.size)
    fail([...p, 'offset'], `offset ${hex(off)} is past the end of region '${r.name}' (size ${hex(r.size)})`);
  if (h.length !== undefined) {
    if (h.length === 0 || h.length % 4096 !== 0)
      fail([...p, 'length'], `length must be a non-zero multiple of 4K (got ${hex(h.length)})`);
    if (off + h.length > r.size)
      fail(
        [...p, 'length'],
        `offset ${hex(off)} + length ${hex(h.length)} runs past the end of region '${r.name}' (size ${hex(r.size)})`,
      );
  }
  if (h.with !== undefined && (h.with % 4096 !== 0 || h.with >= r.size))
    fail([...p, 'with'], `with must be a 4K-aligned offset inside region '${r.name}' (got ${hex(h.with)})`);
  if (h.event === 'thpCollapse' && r.backing !== 'thp')
    fail([...p, 'event'], `thpCollapse needs a THP-backed region ('${r.name}' is ${r.backing ?? '4k'})`);
  if (s.racingFault !== undefined && s.racingFault.offset >= r.size)
    fail(
      [...at, 'racingFault', 'offset'],
      `offset ${hex(s.racingFault.offset)} is past the end of region '${r.name}' (size ${hex(r.size)})`,
    );
  const n = vm.vcpus ?? 1;
  if ((s.racingFault?.vcpu ?? 0) >= n)
    fail([...at, 'racingFault', 'vcpu'], `vCPU ${s.racingFault!.vcpu} does not exist (the VM has ${n})`);
}

/** A pattern's stride must move: 0 would touch its first address forever. */
function checkStride(stride: number | undefined, p: Path): void {
  if (stride === 0) fail(p, 'stride must be at least 1 byte (got 0)');
}

const fmtCount = (n: number): string => (Number.isFinite(n) && n < 1e15 ? enUS(n) : n.toExponential(2));

/** Duplicate names and slot ids, and overlapping initially-present regions, are layout errors. */
export function checkLayout(sc: Scenario): void {
  sc.vms.forEach((vm, v) => {
    const seen = new Map<string, number>();
    const slots = new Map<string, string>();
    vm.regions.forEach((r, i) => {
      const at: Path = ['vms', v, 'regions', i];
      if (seen.has(r.name)) fail([...at, 'name'], `duplicate region name '${r.name}'`);
      seen.set(r.name, i);
      if (r.size === 0 || r.size % 4096 !== 0)
        fail([...at, 'size'], `size must be a non-zero multiple of 4K (got 0x${r.size.toString(16)})`);
      if (r.gpa % 4096 !== 0) fail([...at, 'gpa'], `gpa must be 4K-aligned (got 0x${r.gpa.toString(16)})`);
      const frames = r.size / FRAME_BYTES[r.backing ?? '4k'];
      if (r.size > MAX_REGION_BYTES || frames > MAX_FRAMES_PER_MAPPING)
        fail(
          [...at, 'size'],
          `size 0x${r.size.toString(16)} is more than the model's host can map at ${r.backing ?? '4k'} backing (at most 0x${Math.min(MAX_REGION_BYTES, MAX_FRAMES_PER_MAPPING * FRAME_BYTES[r.backing ?? '4k']).toString(16)} bytes; a 2m, 1g or thp backing maps more)`,
        );
      if (r.slot !== undefined) {
        const key = `${r.as ?? 0}:${r.slot}`;
        if (slots.has(key))
          fail([...at, 'slot'], `slot ${r.slot} already used by region '${slots.get(key)}'`);
        slots.set(key, r.name);
      }
      if (r.present === false) return;
      for (let j = 0; j < i; j++) {
        const o = vm.regions[j]!;
        if (o.present === false || (o.as ?? 0) !== (r.as ?? 0)) continue;
        if (r.gpa < o.gpa + o.size && o.gpa < r.gpa + r.size) {
          fail(
            at,
            `overlapping memory layout: '${r.name}' [0x${r.gpa.toString(16)}, 0x${(r.gpa + r.size).toString(16)}) overlaps '${o.name}' [0x${o.gpa.toString(16)}, 0x${(o.gpa + o.size).toString(16)}) (mark one 'present: false' if the timeline swaps them)`,
          );
        }
      }
    });
  });
}

interface Names {
  devices: Set<string>;
  containers: Set<string>;
  iommus: Set<string>;
}

/** VFIO devices and containers are declared by timeline steps (anywhere), IOMMU units under host. */
export function declaredNames(sc: Scenario): Names {
  const n: Names = {
    devices: new Set(),
    containers: new Set(),
    iommus: new Set(['default', ...(sc.host?.iommus ?? []).map((u) => u.name)]),
  };
  const walk = (list: Step[]): void => {
    for (const s of list) {
      if ('repeat' in s) walk(s.steps);
      if ('vfioDevice' in s) n.devices.add(s.vfioDevice);
      if ('vfioContainer' in s) n.containers.add(s.vfioContainer);
    }
  };
  walk(sc.timeline);
  return n;
}

/** Steps must name existing VMs, regions, vCPUs, VFIO devices and containers, IOMMU units. */
export function checkRefs(sc: Scenario, list: Step[], base: Path, names: Names): void {
  list.forEach((s, i) => {
    const at: Path = [...base, i];
    const vm = s.vm === undefined ? sc.vms[0]! : sc.vms.find((v) => v.name === s.vm);
    if (!vm)
      fail(
        [...at, 'vm'],
        `unknown VM '${s.vm}' (declared: ${sc.vms.map((v) => v.name ?? '(unnamed)').join(', ')})`,
      );
    const region = (name: string | undefined, p: Path): void => {
      if (name !== undefined && !vm.regions.some((r) => r.name === name))
        fail(p, `unknown region '${name}' (declared: ${vm.regions.map((r) => r.name).join(', ')})`);
    };
    if ('repeat' in s) return checkRefs(sc, s.steps, [...at, 'steps'], names);
    const known = (set: Set<string>, what: string, name: string | undefined, p: Path): void => {
      if (name !== undefined && !set.has(name))
        fail(p, `unknown ${what} '${name}' (declared: ${[...set].join(', ') || 'none'})`);
    };
    const vcpuIds = (ids: 'all' | number[] | undefined, p: Path): void => {
      if (!Array.isArray(ids)) return;
      const n = vm.vcpus ?? 1;
      ids.forEach((id, k) => {
        if (id >= n) fail([...p, k], `vCPU ${id} does not exist (the VM has ${n})`);
      });
    };
    if ('vfioDevice' in s) {
      known(names.iommus, 'IOMMU unit', s.iommu, [...at, 'iommu']);
      known(names.devices, 'VFIO device', s.group, [...at, 'group']);
    }
    if ('vfioGroup' in s) {
      known(names.devices, 'VFIO device', s.vfioGroup, [...at, 'vfioGroup']);
      known(names.containers, 'VFIO container', s.container, [...at, 'container']);
      if (s.unset !== true && s.container === undefined)
        fail(at, "vfioGroup needs 'container' (or 'unset: true')");
    }
    if ('vfioIommu' in s) known(names.containers, 'VFIO container', s.vfioIommu, [...at, 'vfioIommu']);
    if ('kvmVfio' in s) known(names.devices, 'VFIO device', s.kvmVfio, [...at, 'kvmVfio']);
    if ('mapDma' in s) {
      known(names.containers, 'VFIO container', s.mapDma.container, [...at, 'mapDma', 'container']);
      region(s.mapDma.region, [...at, 'mapDma', 'region']);
    }
    if ('unmapDma' in s) {
      known(names.containers, 'VFIO container', s.unmapDma.container, [...at, 'unmapDma', 'container']);
      region(s.unmapDma.region, [...at, 'unmapDma', 'region']);
    }
    if ('dma' in s) {
      known(names.devices, 'VFIO device', s.dma.device, [...at, 'dma', 'device']);
      region(s.dma.region, [...at, 'dma', 'region']);
    }
    if ('cr0' in s) vcpuIds(s.cr0.vcpus, [...at, 'cr0', 'vcpus']);
    if ('pat' in s) vcpuIds(s.pat.vcpus, [...at, 'pat', 'vcpus']);
    if ('mtrr' in s) {
      vcpuIds(s.mtrr.vcpus, [...at, 'mtrr', 'vcpus']);
      s.mtrr.var?.forEach((r, k) => {
        const p = [...at, 'mtrr', 'var', k];
        region(r.region, [...p, 'region']);
        if (r.index >= 8) fail([...p, 'index'], `variable MTRR ${r.index} does not exist (KVM has 8)`);
        const hasRange = r.region !== undefined || (r.base !== undefined && r.size !== undefined);
        if (r.off !== true && (!hasRange || r.type === undefined))
          fail(p, "a variable MTRR needs 'type' and either 'region' or 'base' and 'size' (or 'off: true')");
      });
    }
    if ('guestPaging' in s) {
      const g = s.guestPaging;
      region(g.tables, [...at, 'guestPaging', 'tables']);
      g.map.forEach((r, k) => region(r, [...at, 'guestPaging', 'map', k]));
      vcpuIds(g.vcpus, [...at, 'guestPaging', 'vcpus']);
      const shadowPaging =
        sc.host?.tdp === false || (sc.host?.profile === 'pvm-6.18' && sc.host.tdp !== true);
      if (!shadowPaging)
        fail(
          [...at, 'guestPaging'],
          'guest page tables need shadow paging (host: { tdp: false } or profile pvm-6.18)',
        );
    }
    if ('access' in s) checkStride(s.access.stride, [...at, 'access', 'stride']);
    if ('accept' in s) checkStride(s.accept.stride, [...at, 'accept', 'stride']);
    if ('dma' in s) checkStride(s.dma.stride, [...at, 'dma', 'stride']);
    if ('delete' in s) {
      checkStride(s.whileInvalid?.stride, [...at, 'whileInvalid', 'stride']);
      checkStride(s.whileLockDropped?.stride, [...at, 'whileLockDropped', 'stride']);
    }
    if ('create' in s) region(s.create, [...at, 'create']);
    if ('delete' in s) region(s.delete, [...at, 'delete']);
    if ('delete' in s && s.whileInvalid) region(s.whileInvalid.region, [...at, 'whileInvalid', 'region']);
    if ('move' in s) region(s.move, [...at, 'move']);
    if ('flags' in s) region(s.flags, [...at, 'flags']);
    if ('dirtyLog' in s) region(s.dirtyLog, [...at, 'dirtyLog']);
    if ('memslot' in s) region(s.memslot.region, [...at, 'memslot', 'region']);
    if ('host' in s) {
      region(s.host.region, [...at, 'host', 'region']);
      checkHostRange(s, vm, at);
    }
    if ('attributes' in s) region(s.attributes.region, [...at, 'attributes', 'region']);
    if ('accept' in s) {
      region(s.accept.region, [...at, 'accept', 'region']);
      vcpuIds(s.accept.vcpus, [...at, 'accept', 'vcpus']);
    }
    if ('punchHole' in s) {
      region(s.punchHole.region, [...at, 'punchHole', 'region']);
      if (!vm.regions.find((r) => r.name === s.punchHole.region)!.private)
        fail(
          [...at, 'punchHole', 'region'],
          `region '${s.punchHole.region}' has no guest_memfd (declare it private: true)`,
        );
    }
    if ('access' in s) {
      region(s.access.region, [...at, 'access', 'region']);
      const n = vm.vcpus ?? 1;
      const ids = s.access.vcpus;
      if (Array.isArray(ids)) {
        ids.forEach((id, k) => {
          if (id >= n) fail([...at, 'access', 'vcpus', k], `vCPU ${id} does not exist (the VM has ${n})`);
        });
      }
    }
  });
}
