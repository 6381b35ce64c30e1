/**
 * A vCPU on the real /dev/kvm: KVM_RUN over the mmap'd struct kvm_run, register state, binary stats,
 * and guest accesses (access / runAccesses) driven through the CPL3 harness of guest_harness.ts.
 *
 * Kernel counterpart: virt/kvm/kvm_main.c#kvm_vcpu_ioctl and arch/x86/kvm/x86.c#kvm_arch_vcpu_ioctl_run,
 * seen from userspace. What an access reports is what userspace can observe: the exit KVM_RUN returned
 * while the guest performed that access (KVM_EXIT_MMIO, KVM_EXIT_MEMORY_FAULT, an emulation failure or a
 * triple fault), or nothing. For 'none' the pfn comes from /proc/self/pagemap (the host page KVM maps for
 * the slot's hva; -1 when unknown, e.g. guest_memfd-backed slots), the level is 1 because the harness
 * maps every target with a 4 KiB guest PTE (shadow paging never maps larger than the guest does), and
 * memtype is 6 (WB), which is what KVM uses for ordinary RAM; none of the three is read from an SPTE.
 */
import type { AccessKind, AccessResult } from '../../kvm/api_types.ts';
import { KvmError, hex } from '../../kvm/kvm_error.ts';
import { KVM_EXIT, KVM_IOCTL, KVM_MEMORY_EXIT_FLAG_PRIVATE } from '../../uapi/kvm.ts';
import { BinaryStatsFd, openBinaryStatsFd } from './binary_stats.ts';
import { JMP_R11, type GuestHarness } from './guest_harness.ts';
import {
  cpuidMaxPhyAddr,
  decodeRegs,
  KVM_EXIT_IO_OUT,
  KVM_REGS_SIZE,
  KVM_SET_CPUID2,
  KVM_SREGS_SIZE,
  RUN,
  type RegName,
} from './kvm_structs.ts';
import { check, getLibc, MAP_SHARED, PROT_READ, PROT_WRITE } from './libc.ts';
import type { RealVm } from './real_vm.ts';
import { ownFd, ownMapping, release, type Resource } from './resources.ts';

export interface GuestAccess {
  gpa: number;
  kind: AccessKind;
  /** byte stored by a write (default 0) */
  value?: number;
}

export interface RunAccessesResult {
  results: AccessResult[];
  /** Stat changes over the whole batch (after − before), every scalar stat. */
  vmStats: Record<string, number>;
  vcpuStats: Record<string, number>;
  /** KVM_RUN calls made (1 + one per MMIO/fault exit + restarts) */
  runs: number;
  /** wall time of the KVM_RUN loop, ns */
  ns: number;
}

const MEMTYPE_WB = 6;
/**
 * spinWhile's loop and its bytes at page offset 0x800 (started), 0x801 (go), 0x802 (count): mov byte
 * [started],1; spin: inc byte [count]; cmp byte [go],0; je spin; jmp r11 (back to the harness).
 */
const SPIN_STARTED = 0x800;
const SPIN_LOOP = new Uint8Array([
  ...[0xc6, 0x05, ...le32(SPIN_STARTED - 7), 0x01],
  ...[0xfe, 0x05, ...le32(SPIN_STARTED + 2 - 13) /* spin: inc byte [rip→count] */],
  ...[0x80, 0x3d, ...le32(SPIN_STARTED + 1 - 20), 0x00],
  ...[0x74, 0xf1],
  ...JMP_R11,
]);
function le32(v: number): number[] {
  return [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];
}
/** kvmRun(true)'s result for a KVM_RUN that failed with a bare EFAULT. */
export const RUN_EFAULT = -14;
const MAX_RUNS_PER_ACCESS = 8;

export class RealVcpu {
  private closed = false;
  private readonly fdRes: Resource;
  private readonly runRes: Resource;
  private readonly runAddr: number;
  private readonly run: DataView;
  private stats: { bsf: BinaryStatsFd; res: Resource } | null = null;
  private harnessReady = false;

  constructor(
    readonly vm: RealVm,
    readonly id: number,
    readonly fd: number,
  ) {
    this.fdRes = ownFd(fd, `vcpu ${id}`);
    const c = getLibc();
    const size = vm.vcpuMmapSize;
    const addr = c.mmap(0, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (addr === -1) {
      const e = c.errno();
      release(this.fdRes); // a failed create leaks nothing
      throw new KvmError(e, 'mmap', `struct kvm_run of vcpu ${id} (${hex(size)} bytes)`);
    }
    this.runAddr = addr;
    this.runRes = ownMapping(addr, size, `kvm_run ${id}`);
    this.run = new DataView(c.view(addr, size));
    if (vm.opts.cpuid) {
      try {
        const cpuid = vm.supportedCpuid();
        this.ioctlBuf('KVM_SET_CPUID2', KVM_SET_CPUID2, cpuid);
        this.guestMaxPhyAddr = cpuidMaxPhyAddr(cpuid);
      } catch (e) {
        this.close();
        throw e;
      }
    }
  }

  /** The guest's MAXPHYADDR (36 unless created with the `cpuid` option). */
  guestMaxPhyAddr = 36;

  private live(name: string): number {
    if (this.closed) throw new KvmError('EBADF', name, `vcpu ${this.id} has been closed`);
    return this.fd;
  }

  private ioctlBuf(name: string, req: number, buf: Uint8Array): void {
    check(getLibc().ioctlBuf(this.live(name), req, buf), name, () => `vcpu ${this.id}`);
  }

  getRegs(): Record<RegName, number> {
    const b = new Uint8Array(KVM_REGS_SIZE);
    this.ioctlBuf('KVM_GET_REGS', KVM_IOCTL.KVM_GET_REGS, b);
    return decodeRegs(b);
  }
  setRegsRaw(b: Uint8Array): void {
    this.ioctlBuf('KVM_SET_REGS', KVM_IOCTL.KVM_SET_REGS, b);
  }
  getSregsRaw(): Uint8Array {
    const b = new Uint8Array(KVM_SREGS_SIZE);
    this.ioctlBuf('KVM_GET_SREGS', KVM_IOCTL.KVM_GET_SREGS, b);
    return b;
  }
  setSregsRaw(b: Uint8Array): void {
    this.ioctlBuf('KVM_SET_SREGS', KVM_IOCTL.KVM_SET_SREGS, b);
  }

  /**
   * One KVM_RUN (retried on EINTR). Returns the exit reason; a KVM_RUN that fails with EFAULT and
   * exit_reason KVM_EXIT_MEMORY_FAULT is returned as that exit, as userspace must treat it. A bare
   * EFAULT (no memory-fault info: e.g. a slot whose hva is not mapped, kvm_handle_error_pfn) is
   * returned as RUN_EFAULT when `efaultAsExit` is set, so the access harness can report it per access.
   */
  kvmRun(efaultAsExit = false): number {
    const c = getLibc();
    const fd = this.live('KVM_RUN');
    for (;;) {
      const r = c.ioctlInt(fd, KVM_IOCTL.KVM_RUN, 0);
      const reason = this.run.getUint32(RUN.exitReason, true);
      if (r !== -1) return reason;
      const e = c.errno();
      if (e === 4 /* EINTR */ || e === 11 /* EAGAIN */) continue;
      if (e === 14 /* EFAULT */ && reason === KVM_EXIT.KVM_EXIT_MEMORY_FAULT) return reason;
      if (e === 14 && efaultAsExit) return RUN_EFAULT;
      throw new KvmError(e, 'KVM_RUN', `vcpu ${this.id} exit_reason ${reason}`);
    }
  }

  /** The mmap'd struct kvm_run (read-only use; valid until close()). */
  get kvmRunView(): DataView {
    this.live('kvm_run');
    return this.run;
  }

  /** vCPU binary stats as { name: value } (scalar stats only). */
  getStats(): Record<string, number> {
    return this.statsFd().read();
  }
  getStatsFd(): BinaryStatsFd {
    return this.statsFd();
  }
  private statsFd(): BinaryStatsFd {
    this.stats ??= openBinaryStatsFd(this.live('KVM_GET_STATS_FD'), `vcpu ${this.id}`);
    return this.stats.bsf;
  }

  /** One guest access at CPL3; see runAccesses. */
  access(gpa: number, kind: AccessKind): AccessResult {
    return this.runAccesses([{ gpa, kind }]).results[0]!;
  }

  /**
   * Run the accesses in order in one guest program (split into batches of the harness list capacity),
   * and report each access's exit and the stat deltas of the whole run.
   */
  runAccesses(list: readonly GuestAccess[]): RunAccessesResult {
    const h = this.prepareHarness();
    const norm = list.map((a, i) => normalizeAccess(a, i, h));
    for (const a of norm) {
      h.mapPage(a.gpa);
      if (a.kind === 'exec') this.placeExecStub(a.gpa);
    }
    const vm0 = this.vm.getStats();
    const vc0 = this.getStats();
    const results: AccessResult[] = [];
    let runs = 0;
    const t0 = process.hrtime.bigint();
    // An empty list still runs the program once (it just reports the end): a way to fault in the harness.
    const batches = norm.length === 0 ? [norm] : chunk(norm, h.capacity);
    for (const batch of batches) {
      const r = this.runBatch(h, batch);
      runs += r.runs;
      results.push(...r.results);
    }
    const ns = Number(process.hrtime.bigint() - t0);
    return {
      results,
      vmStats: delta(vm0, this.vm.getStats()),
      vcpuStats: delta(vc0, this.getStats()),
      runs,
      ns,
    };
  }

  private prepareHarness(): GuestHarness {
    const h = this.vm.harness();
    if (!this.harnessReady) {
      const s = this.getSregsRaw();
      h.patchSregs(s);
      this.setSregsRaw(s);
      this.harnessReady = true;
    }
    return h;
  }

  /** Exec targets need code: write `jmp r11` at the target through the slot's host mapping. */
  private placeExecStub(gpa: number): void {
    const s = this.vm.slotForGpa(gpa);
    // No slot: the fetch still happens and reports what KVM does (MMIO → emulation failure).
    if (!s) return;
    if (s.guestMemfd !== null)
      throw new RangeError(
        `exec target ${hex(gpa)} is in a guest_memfd slot: the host cannot place code there`,
      );
    if (gpa % 4096 > 4096 - JMP_R11.length)
      throw new RangeError(`exec target ${hex(gpa)} must leave 3 bytes before the page end`);
    this.vm.host.write(s.userspaceAddr + (gpa - s.guestPhysAddr), JMP_R11);
  }

  private runBatch(
    h: GuestHarness,
    batch: readonly Required<GuestAccess>[],
  ): { results: AccessResult[]; runs: number } {
    h.writeList(batch);
    const out: (AccessResult | null)[] = batch.map(() => null);
    this.setRegsRaw(h.regs(0, batch.length));
    let runs = 0;
    const limit = MAX_RUNS_PER_ACCESS * batch.length + 16;
    for (;;) {
      if (++runs > limit) throw new Error(`guest access harness made no progress after ${limit} KVM_RUNs`);
      const reason = this.kvmRun(true);
      const d = this.run;
      if (reason === KVM_EXIT.KVM_EXIT_IO) {
        const port = d.getUint16(RUN.ioPort, true);
        if (port === h.cfg.port && d.getUint8(RUN.ioDirection) === KVM_EXIT_IO_OUT) break;
        throw new Error(`unexpected KVM_EXIT_IO on port ${hex(port)} at rip ${hex(this.getRegs().rip)}`);
      }
      const idx = this.currentIndex(batch.length, reason);
      const gpa = batch[idx]!.gpa;
      if (reason === KVM_EXIT.KVM_EXIT_MMIO) {
        const write = d.getUint8(RUN.mmioIsWrite) !== 0;
        if (!write) for (let i = 0; i < 8; i++) d.setUint8(RUN.mmioData + i, 0); // reads of MMIO return 0
        out[idx] ??= { exit: 'mmio', gpa: Number(d.getBigUint64(RUN.mmioPhysAddr, true)), write };
        continue; // the next KVM_RUN completes the emulated instruction
      }
      if (reason === KVM_EXIT.KVM_EXIT_MEMORY_FAULT) {
        const flags = d.getBigUint64(RUN.memFaultFlags, true);
        out[idx] = {
          exit: 'memory_fault',
          gpa: Number(d.getBigUint64(RUN.memFaultGpa, true)),
          size: Number(d.getBigUint64(RUN.memFaultSize, true)),
          private: (flags & BigInt(KVM_MEMORY_EXIT_FLAG_PRIVATE)) !== 0n,
        };
      } else if (reason === RUN_EFAULT) {
        out[idx] = {
          exit: 'internal_error',
          gpa,
          reason: "KVM_RUN failed with EFAULT (the slot's hva is not backed)",
        };
      } else if (reason === KVM_EXIT.KVM_EXIT_INTERNAL_ERROR || reason === KVM_EXIT.KVM_EXIT_SHUTDOWN) {
        const why =
          reason === KVM_EXIT.KVM_EXIT_SHUTDOWN
            ? 'KVM_EXIT_SHUTDOWN (triple fault)'
            : `KVM_EXIT_INTERNAL_ERROR suberror ${d.getUint32(RUN.internalSuberror, true)}`;
        out[idx] = { exit: 'internal_error', gpa, reason: why };
      } else {
        throw new Error(`unexpected exit reason ${reason} at access ${idx} (gpa ${hex(gpa)})`);
      }
      // The access cannot complete: reload the CPL3 state and resume the program at the next entry.
      this.harnessReady = false;
      this.prepareHarness();
      this.setRegsRaw(h.regs(idx + 1, batch.length));
    }
    return { results: out.map((r, i) => r ?? this.noExit(batch[i]!.gpa)), runs };
  }

  /**
   * Keep this vCPU in the guest while `during` runs on this thread: a CPL3 spin loop written at `gpa` (a
   * page of a RAM slot, overwritten) is entered as an exec access of the harness, with KVM_RUN on a koffi
   * worker thread. The loop first stores 1 at gpa + 0x800 (so this thread knows it runs), then bumps the
   * byte at gpa + 0x802 until the byte at gpa + 0x801 is non-zero, which is written after `during` (also
   * when it throws; the error is rethrown once KVM_RUN is back); then it returns to the harness, whose
   * end report makes KVM_RUN return. The vCPU is in the guest while the counter moves, unless the host
   * preempts its thread, which the caller has to allow for.
   */
  async spinWhile(gpa: number, during: () => Promise<void> | void): Promise<void> {
    const s = this.vm.slotForGpa(gpa);
    if (!s || s.guestMemfd !== null || gpa % 4096)
      throw new RangeError(`spinWhile: ${hex(gpa)} must be a page of a slot backed by host memory`);
    const hva = s.userspaceAddr + (gpa - s.guestPhysAddr);
    const flags = this.vm.host.view(hva + SPIN_STARTED, 3);
    flags.set([0, 0, 0]);
    this.vm.host.write(hva, SPIN_LOOP);
    const h = this.prepareHarness();
    h.mapPage(gpa);
    h.writeList([{ gpa, kind: 'exec', value: 0 }]);
    this.setRegsRaw(h.regs(0, 1));
    const c = getLibc();
    const fd = this.live('KVM_RUN');
    let run = c.ioctlIntAsync(fd, KVM_IOCTL.KVM_RUN, 0);
    let failure: { e: unknown } | null = null;
    try {
      for (let i = 0; flags[0] === 0; i++) {
        if (i > 2_000) throw new Error('spinWhile: the guest loop did not start within ~2 s');
        await new Promise((r) => setTimeout(r, 1));
      }
      await during();
    } catch (e) {
      failure = { e };
    }
    flags[1] = 1;
    for (let runs = 1; ; runs++) {
      const r = await run;
      const reason = this.run.getUint32(RUN.exitReason, true);
      if (
        r !== -1 &&
        reason === KVM_EXIT.KVM_EXIT_IO &&
        this.run.getUint16(RUN.ioPort, true) === h.cfg.port
      ) {
        if (failure !== null) throw failure.e;
        return;
      }
      // -1: interrupted (EINTR) — the loop is still there; go back in. Anything else is not the loop.
      if (r !== -1 || runs > 100) throw new Error(`spinWhile: KVM_RUN returned ${r}, exit reason ${reason}`);
      run = c.ioctlIntAsync(fd, KVM_IOCTL.KVM_RUN, 0);
    }
  }

  /** The list index the program was at (rbx) when KVM_RUN exited. */
  private currentIndex(n: number, reason: number): number {
    const rbx = this.getRegs().rbx;
    if (!Number.isInteger(rbx) || rbx < 0 || rbx >= n)
      throw new Error(`exit ${reason} outside the access list (rbx ${hex(rbx)})`);
    return rbx;
  }

  private noExit(gpa: number): AccessResult {
    const s = this.vm.slotForGpa(gpa);
    const pfn =
      s && s.guestMemfd === null ? this.vm.host.pagemapPfn(s.userspaceAddr + (gpa - s.guestPhysAddr)) : null;
    return { exit: 'none', pfn: pfn ?? -1, level: 1, memtype: MEMTYPE_WB };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.stats) release(this.stats.res);
    release(this.runRes);
    release(this.fdRes);
    this.vm.vcpuClosed(this.id);
  }
  [Symbol.dispose](): void {
    this.close();
  }
}

function normalizeAccess(a: GuestAccess, i: number, h: GuestHarness): Required<GuestAccess> {
  if (typeof a !== 'object' || a === null) throw new TypeError(`access ${i} must be an object`);
  const { gpa, kind } = a;
  if (!Number.isSafeInteger(gpa) || gpa < 0 || gpa >= 2 ** 47)
    throw new RangeError(`access ${i}: gpa ${String(gpa)} out of range`);
  if (kind !== 'read' && kind !== 'write' && kind !== 'exec')
    throw new TypeError(`access ${i}: kind must be read|write|exec`);
  if (h.contains(gpa))
    throw new RangeError(
      `access ${i}: gpa ${hex(gpa)} is inside the harness slot; move the harness (harness.gpa)`,
    );
  const value = a.value ?? 0;
  if (!Number.isInteger(value) || value < 0 || value > 255)
    throw new RangeError(`access ${i}: value must be a byte`);
  return { gpa, kind, value };
}

function delta(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of Object.keys(b)) out[k] = b[k]! - (a[k] ?? 0);
  return out;
}

function chunk<T>(xs: readonly T[], n: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += n) out.push(xs.slice(i, i + n));
  return out;
}
