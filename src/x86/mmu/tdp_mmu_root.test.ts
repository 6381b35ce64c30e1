import { describe, expect, it } from 'vitest';
import { asPfn } from '../../types/addr.ts';
import { kvmMmuPageInfo, tdpRootRole } from './mmu_internal.ts';
import { ACC_ALL, MT_MASK_WB_IPAT, makeSpte, newSptePair, tdpLeafParams } from './spte.ts';
import { TDP_MAP_FIXED, TDP_MAP_RETRY, kvmTdpMmuMap, tdpMmuZapLeafs } from './tdp_mmu.ts';
import {
  kvmMmuUninitTdpMmu,
  kvmTdpMmuAllocRoot,
  kvmTdpMmuGetRoot,
  kvmTdpMmuInvalidateRoots,
  kvmTdpMmuPutRoot,
  kvmTdpMmuUnmapGfnRange,
  kvmTdpMmuZapAll,
  kvmTdpMmuZapInvalidatedRoots,
  kvmTdpMmuZapLeafs,
} from './tdp_mmu_root.ts';
import {
  KVM_DIRECT_ROOTS,
  KVM_MIRROR_ROOTS,
  KVM_VALID_ROOTS,
  TdpMmu,
  type TdpExternalHooks,
} from './tdp_mmu_state.ts';

const s = newSptePair();
function map(mmu: TdpMmu, root: number, gfn: number, pfn = gfn): number {
  makeSpte(s, tdpLeafParams(1, asPfn(pfn), MT_MASK_WB_IPAT, true));
  return kvmTdpMmuMap(mmu, root, gfn, 1, s.lo, s.hi);
}
const direct0 = tdpRootRole({ asId: 0 });
const direct1 = tdpRootRole({ asId: 1 });
const mirror0 = tdpRootRole({ asId: 0, isMirror: true });

describe('root allocation and refcounts', () => {
  it('creates a root with refcount 2 and shares it per role word', () => {
    const mmu = new TdpMmu();
    const a = kvmTdpMmuAllocRoot(mmu, direct0);
    expect(mmu.pool.rootCount[a]).toBe(2);
    expect(kvmTdpMmuAllocRoot(mmu, direct0)).toBe(a);
    expect(mmu.pool.rootCount[a]).toBe(3);
    const b = kvmTdpMmuAllocRoot(mmu, direct1);
    expect(b).not.toBe(a);
    expect(mmu.roots).toEqual([b, a]); // newest first
    expect(mmu.rootsAllocated).toBe(2);
    expect(kvmMmuPageInfo(mmu.pool, b)).toMatchObject({
      gfn: 0,
      rootCount: 2,
      ptep: null,
      role: { level: 4, smm: 1, direct: true },
    });
  });

  it("bugs the VM when a valid root's last reference is put", () => {
    const bugs: string[] = [];
    const mmu = new TdpMmu({ env: { kvmBugOn: (w) => bugs.push(w) } });
    const a = kvmTdpMmuAllocRoot(mmu, direct0);
    kvmTdpMmuPutRoot(mmu, a);
    expect(bugs).toEqual([]);
    kvmTdpMmuPutRoot(mmu, a);
    expect(mmu.bugged).toBe(true);
    expect(bugs).toHaveLength(1);
    expect(mmu.roots).toEqual([]);
    expect(kvmTdpMmuGetRoot(mmu, a)).toBe(false);
  });

  it('frees an invalidated root when the TDP MMU and the vCPU have both put it', () => {
    const mmu = new TdpMmu();
    const a = kvmTdpMmuAllocRoot(mmu, direct0);
    for (let g = 0; g < 1024; g += 7) map(mmu, a, g);
    kvmTdpMmuInvalidateRoots(mmu, KVM_DIRECT_ROOTS);
    expect(kvmMmuPageInfo(mmu.pool, a)).toMatchObject({
      tdpMmuScheduledRootToZap: true,
      role: { invalid: true },
    });
    // A vCPU looking for a root now gets a new one: invalid roots are never reused.
    const b = kvmTdpMmuAllocRoot(mmu, direct0);
    expect(b).not.toBe(a);
    kvmTdpMmuZapInvalidatedRoots(mmu, true);
    expect(mmu.pool.rootCount[a]).toBe(1); // the vCPU's reference
    expect(mmu.pages[0]).toBe(0);
    kvmTdpMmuPutRoot(mmu, a);
    expect(mmu.bugged).toBe(false);
    expect(mmu.roots).toEqual([b]);
    expect(mmu.pool.live).toBe(1);
    // Zapping again finds nothing scheduled.
    kvmTdpMmuZapInvalidatedRoots(mmu, true);
    expect(mmu.pool.rootCount[b]).toBe(2);
  });
});

describe('root types', () => {
  it('leaves mirror roots alone when invalidating direct roots', () => {
    const mmu = new TdpMmu();
    const m = kvmTdpMmuAllocRoot(mmu, mirror0);
    const d = kvmTdpMmuAllocRoot(mmu, direct0);
    kvmTdpMmuInvalidateRoots(mmu, KVM_DIRECT_ROOTS);
    expect(kvmMmuPageInfo(mmu.pool, d).role.invalid).toBe(true);
    expect(kvmMmuPageInfo(mmu.pool, m).role.invalid).toBe(false);
  });

  it('unmaps in the filtered roots of one address space plus its invalid roots', () => {
    const mmu = new TdpMmu();
    const old = kvmTdpMmuAllocRoot(mmu, direct0);
    map(mmu, old, 0x10);
    kvmTdpMmuInvalidateRoots(mmu, KVM_DIRECT_ROOTS); // not zapped yet
    const cur = kvmTdpMmuAllocRoot(mmu, direct0);
    const smm = kvmTdpMmuAllocRoot(mmu, direct1);
    map(mmu, cur, 0x10);
    map(mmu, smm, 0x10);
    expect(mmu.pages[0]).toBe(3);
    expect(kvmTdpMmuUnmapGfnRange(mmu, 0, 0, 0x100, KVM_DIRECT_ROOTS, true, false)).toBe(true);
    expect(mmu.pages[0]).toBe(1); // only the SMM address space's leaf is left
    expect(kvmTdpMmuZapLeafs(mmu, 0, 0x100, false)).toBe(true);
    expect(mmu.pages[0]).toBe(0);
  });

  it('zap_all zaps direct and invalid roots but not mirror roots', () => {
    const mmu = new TdpMmu();
    const m = kvmTdpMmuAllocRoot(mmu, mirror0);
    const d = kvmTdpMmuAllocRoot(mmu, direct0);
    map(mmu, m, 1);
    map(mmu, d, 1);
    kvmTdpMmuZapAll(mmu);
    expect(mmu.pages[0]).toBe(1);
    expect(mmu.tdpMmuPages).toBe(3);
  });
});

describe('TDX external page table hooks', () => {
  function recorder(fail = ''): { calls: string[]; hooks: TdpExternalHooks } {
    const calls: string[] = [];
    const rec =
      (name: string) =>
      (gfn: number, level: number, x: number): number => {
        calls.push(`${name}(${gfn.toString(16)},${level},${name.endsWith('spt') ? 'sp' : x.toString(16)})`);
        return name === fail ? -5 : 0;
      };
    return {
      calls,
      hooks: {
        linkExternalSpt: rec('link_external_spt'),
        setExternalSpte: rec('set_external_spte'),
        removeExternalSpte: rec('remove_external_spte'),
        freeExternalSpt: rec('free_external_spt'),
      },
    };
  }

  it('calls the hooks at the kernel points: link, set, remove, free', () => {
    const { calls, hooks } = recorder();
    const mmu = new TdpMmu({ external: hooks });
    const m = kvmTdpMmuAllocRoot(mmu, mirror0);
    expect(map(mmu, m, 0x201, 0x777)).toBe(TDP_MAP_FIXED);
    expect(calls).toEqual([
      'link_external_spt(0,4,sp)',
      'link_external_spt(0,3,sp)',
      'link_external_spt(200,2,sp)',
      'set_external_spte(201,1,777)',
    ]);
    calls.length = 0;
    expect(tdpMmuZapLeafs(mmu, m, 0, 0x1000)).toBe(true);
    expect(calls).toEqual(['remove_external_spte(201,1,777)']);
    calls.length = 0;
    map(mmu, m, 0x202, 0x778);
    calls.length = 0;
    kvmMmuUninitTdpMmu(mmu); // teardown: invalidate all (mirror too), zap with mmu_lock for write
    expect(calls).toEqual([
      'remove_external_spte(202,1,778)',
      'free_external_spt(200,1,sp)',
      'free_external_spt(0,2,sp)',
      'free_external_spt(0,3,sp)',
    ]);
    expect(mmu.bugged).toBe(false);
    expect(mmu.pool.rootCount[m]).toBe(1); // the vCPU still holds it
  });

  it('restores the old SPTE and retries when the TDX module refuses a leaf', () => {
    const { hooks } = recorder('set_external_spte');
    const mmu = new TdpMmu({ external: hooks });
    const m = kvmTdpMmuAllocRoot(mmu, mirror0);
    expect(map(mmu, m, 0x5)).toBe(TDP_MAP_RETRY);
    expect(mmu.pages[0]).toBe(0);
  });

  it('bugs the VM on a shared-mode (fast) zap of a mirror root', () => {
    const mmu = new TdpMmu();
    const m = kvmTdpMmuAllocRoot(mmu, mirror0);
    map(mmu, m, 0x5);
    kvmTdpMmuInvalidateRoots(mmu, KVM_MIRROR_ROOTS);
    kvmTdpMmuZapInvalidatedRoots(mmu, true);
    expect(mmu.bugged).toBe(true);
  });
});

describe('VM teardown', () => {
  it('frees every table once the vCPUs have put their roots', () => {
    const mmu = new TdpMmu();
    const a = kvmTdpMmuAllocRoot(mmu, direct0);
    const b = kvmTdpMmuAllocRoot(mmu, direct1);
    for (let g = 0; g < 5000; g += 11) {
      map(mmu, a, g);
      map(mmu, b, g * 512);
    }
    kvmTdpMmuPutRoot(mmu, a);
    kvmTdpMmuPutRoot(mmu, b);
    kvmMmuUninitTdpMmu(mmu);
    expect(mmu.pool.live).toBe(0);
    expect(mmu.spAllocated).toBe(mmu.spFreed);
    expect(mmu.roots).toEqual([]);
    expect(mmu.warnings).toBe(0);
    expect(mmu.bugged).toBe(false);
    expect(KVM_VALID_ROOTS).toBe(6);
  });
});
