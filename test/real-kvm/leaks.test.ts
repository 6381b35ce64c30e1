/**
 * The real backend leaves no fd and no mapping behind: after close(), after failed calls, and at process
 * exit for anything a caller forgot (compares /proc/self/fd and /proc/self/maps before and after).
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { liveResourceCount } from '../../src/backends/kvm/resources.ts';
import { RealKvm } from '../../src/backends/kvm/real_kvm.ts';
import { REAL_KVM, announceSkip } from './env.ts';
import { workload } from './workload.ts';

announceSkip('leaks');

const fdCount = () => readdirSync('/proc/self/fd').length;
const mapLines = () => readFileSync('/proc/self/maps', 'utf8').split('\n').filter(Boolean);

function mapped(addr: number): boolean {
  return mapLines().some((l) => {
    const [lo, hi] = l.split(' ')[0]!.split('-').map((x) => parseInt(x, 16));
    return addr >= lo! && addr < hi!;
  });
}

describe.skipIf(!REAL_KVM.ok)('real /dev/kvm: no fd or mapping is leaked', () => {
  it('a full workload, closed with close(), leaves fd and maps counts unchanged', () => {
    workload({ close: true }); // warm-up so V8/koffi's own mappings are in place before counting
    const live0 = liveResourceCount();
    const f0 = fdCount();
    const m0 = mapLines().length;
    const { hvas } = workload({ close: true });
    expect(liveResourceCount()).toBe(live0);
    expect(fdCount()).toBe(f0);
    expect(mapLines().length).toBe(m0);
    for (const h of hvas) expect(mapped(h), `hva 0x${h.toString(16)}`).toBe(false);
  });

  it('`using` releases a VM and its vCPU at scope end', () => {
    const kvm = new RealKvm();
    const f0 = fdCount();
    {
      using vm = kvm.createVm(0);
      using vcpu = vm.createVcpu(0);
      vcpu.getStats();
      vm.getStats();
      expect(fdCount()).toBe(f0 + 4); // VM, vCPU, and their stats fds
    }
    expect(fdCount()).toBe(f0);
    kvm.close();
  });

  it('at process exit, everything still open is released by the exit hook', () => {
    const script = fileURLToPath(new URL('./fixtures/exit_cleanup.ts', import.meta.url));
    const tsx = fileURLToPath(new URL('../../node_modules/tsx/dist/cli.mjs', import.meta.url));
    const out = execFileSync(process.execPath, [tsx, script], { encoding: 'utf8' });
    const r = JSON.parse(out.trim().split('\n').pop()!);
    expect(r.liveBeforeExit).toBeGreaterThan(20);
    expect(r).toMatchObject({ liveAfter: 0, fdDelta: 0, mapsDelta: 0 });
  });
});
