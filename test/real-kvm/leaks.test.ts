/**
 * The real backend leaves no fd and no mapping behind: after close(), after failed calls, and at process
 * exit for anything a caller forgot (compares /proc/self/fd and /proc/self/maps before and after).
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { liveResourceCount, recordMappings } from '../../src/backends/kvm/resources.ts';
import { RealKvm } from '../../src/backends/kvm/real_kvm.ts';
import { HOST, NO_GMEM_WHY, REAL_KVM, announceSkip, skipUnless } from './env.ts';
import { compareFds, compareMaps, fdTable, mapLines } from './maps.ts';
import { workload } from './workload.ts';

announceSkip('leaks');

describe.skipIf(!REAL_KVM.ok)('real /dev/kvm: no fd or mapping is leaked', () => {
  it('a full workload, closed with close(), leaves fd and maps counts unchanged', () => {
    workload({ close: true }); // warm-up so koffi/V8's own fds and mappings are in place before counting
    const live0 = liveResourceCount();
    const log = recordMappings(true);
    const f0 = fdTable();
    const m0 = mapLines();
    workload({ close: true });
    const m = compareMaps(m0, mapLines(), log);
    recordMappings(false);
    expect(liveResourceCount()).toBe(live0);
    expect(compareFds(f0, fdTable()).ours).toEqual([]); // no fd on /dev/kvm, a KVM object or our memfds
    expect(log.length).toBeGreaterThanOrEqual(8); // host memory, kvm_run pages, harness, scratch
    expect(m.ours).toEqual([]);
    expect(m.adjusted).toBe(m.before);
  });

  it('`using` releases a VM and its vCPU at scope end', () => {
    const kvm = new RealKvm();
    const f0 = fdTable();
    {
      using vm = kvm.createVm(0);
      using vcpu = vm.createVcpu(0);
      vcpu.getStats();
      vm.getStats();
      // VM, vCPU, and their stats fds (by target, so another thread's fds cannot skew the count)
      const opened = compareFds(f0, fdTable())
        .added.filter((l) => l.includes('kvm'))
        .map((l) => l.replace(/^\d+ -> /, ''));
      expect(opened.sort()).toEqual([
        'anon_inode:kvm-vcpu-stats:0',
        'anon_inode:kvm-vcpu:0',
        'anon_inode:kvm-vm',
        'anon_inode:kvm-vm-stats',
      ]);
    }
    expect(compareFds(f0, fdTable()).ours).toEqual(compareFds(f0, f0).ours); // /dev/kvm only
    kvm.close();
  });

  it.skipIf(skipUnless(HOST?.guestMemfd === true, 'leaks', NO_GMEM_WHY))(
    'closing a VM closes the guest_memfds it created (they would keep the VM alive)',
    () => {
      using kvm = new RealKvm();
      const vm = kvm.createVm(0);
      const g = vm.createGuestMemfd({ size: 4096 });
      expect(kvm.host.isOpenFd(g)).toBe(true);
      vm.close();
      expect(kvm.host.isOpenFd(g)).toBe(false);
      expect(kvm.host.ownsFd(g)).toBe(false);
    },
  );

  it('at process exit, everything still open is released by the exit hook', () => {
    const script = fileURLToPath(new URL('./fixtures/exit_cleanup.ts', import.meta.url));
    const tsx = fileURLToPath(new URL('../../node_modules/tsx/dist/cli.mjs', import.meta.url));
    const out = execFileSync(process.execPath, [tsx, script], { encoding: 'utf8' });
    const r = JSON.parse(out.trim().split('\n').pop()!);
    expect(r.liveBeforeExit).toBeGreaterThan(20);
    // a leak is an fd still pointing at /dev/kvm, a KVM object or our memfds; the fd count itself is
    // not compared, since tsx and V8 open and close their own fds meanwhile (CI saw one go: -1)
    expect(r).toMatchObject({ liveAfter: 0, ours: [], fds: { ours: [] } });
    expect(r.mappedByBackend).toBeGreaterThanOrEqual(8);
    expect(r.adjusted).toBe(r.before);
  });
});
