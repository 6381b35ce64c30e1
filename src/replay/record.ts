/**
 * `zaplab record -- <vmm command…>`: the manual recipe as one command. Sets up a private tracefs instance
 * (trace_clock tai, the kvm/kvmmmu events the replay reads, set_event_pid + event-fork on the recording
 * shell so only the VMM's threads are traced), runs the VMM under `strace -f -ttt -e trace=ioctl` (and,
 * for QEMU, with `-trace kvm_set_user_memory -D qemu.trace -msg timestamp=on`), stops it after
 * `seconds` if it has not exited, then writes the instance's `trace` text and bundle.json (the traced host
 * as model options, probed from /dev/kvm when the real backend loads). `trace-cmd record` is not used:
 * it fails on hosts that cannot write /proc/sys/kernel/ftrace_enabled. Needs root. Model-only file.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { release } from 'node:os';
import type { BundleMeta } from './load.ts';

export const TRACEFS = '/sys/kernel/tracing';
export const RECORD_EVENTS = [
  'kvm:kvm_page_fault',
  'kvm:kvm_unmap_hva_range',
  'kvmmmu:kvm_mmu_set_spte',
  'kvmmmu:kvm_tdp_mmu_spte_changed',
  'kvmmmu:kvm_mmu_spte_requested',
  'kvmmmu:kvm_mmu_get_page',
  'kvmmmu:kvm_mmu_prepare_zap_page',
  'kvmmmu:kvm_mmu_zap_all_fast',
];

const has = (cmd: string): boolean =>
  spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;

/** Can this machine record? Mounts tracefs if it is not mounted (root only). */
export function recordAvailability(): { ok: true } | { ok: false; reason: string } {
  if (process.getuid?.() !== 0)
    return { ok: false, reason: 'recording needs root (tracefs, strace of the VMM)' };
  if (!has('strace')) return { ok: false, reason: 'strace is not installed (apt-get install -y strace)' };
  if (!existsSync(join(TRACEFS, 'instances'))) {
    spawnSync('mount', ['-t', 'tracefs', 'nodev', TRACEFS], { stdio: 'ignore' });
    if (!existsSync(join(TRACEFS, 'instances')))
      return { ok: false, reason: `tracefs is not mounted at ${TRACEFS} and mounting failed` };
  }
  if (!existsSync(join(TRACEFS, 'events', 'kvmmmu')))
    return { ok: false, reason: 'this kernel has no kvmmmu trace events (kvm not loaded?)' };
  return { ok: true };
}

export interface RecordOptions {
  argv: string[];
  out: string;
  /** stop the VMM (SIGTERM, then SIGKILL) after this many seconds if it is still running */
  seconds: number;
  /** the traced host as model options; default: probed from /dev/kvm through the real backend */
  host?: BundleMeta['host'];
  log?: (s: string) => void;
}

async function probedHost(): Promise<BundleMeta['host']> {
  try {
    const k = await import('../backends/kvm/index.ts');
    if (!k.realKvmAvailability().ok) return {};
    const real = new k.RealKvm();
    try {
      const mo = real.hostProfile().modelOptions;
      return { profile: mo.profile, overrides: { ...mo } };
    } finally {
      real.close();
    }
  } catch {
    return {}; // no koffi / no /dev/kvm: the replay's --profile decides
  }
}

function write(path: string, value: string): void {
  writeFileSync(path, value);
}

export async function record(o: RecordOptions): Promise<BundleMeta> {
  const avail = recordAvailability();
  if (!avail.ok) throw new Error(avail.reason);
  if (o.argv.length === 0)
    throw new Error('record: no VMM command given (zaplab record -- qemu-system-x86_64 …)');
  mkdirSync(o.out, { recursive: true });
  const inst = join(TRACEFS, 'instances', `zaplab-record-${process.pid}-${Date.now()}`);
  mkdirSync(inst);
  const files: BundleMeta['files'] = [{ file: 'strace.txt', format: 'strace' }];
  const argv = [...o.argv];
  try {
    const clocks = readFileSync(join(inst, 'trace_clock'), 'utf8');
    write(join(inst, 'trace_clock'), clocks.includes('tai') ? 'tai' : 'global');
    write(join(inst, 'buffer_size_kb'), '16384');
    const events = RECORD_EVENTS.filter((e) => existsSync(join(TRACEFS, 'events', ...e.split(':'))));
    write(join(inst, 'set_event'), events.join('\n') + '\n');
    write(join(inst, 'options', 'event-fork'), '1');
    if (basename(argv[0]!).startsWith('qemu-system')) {
      argv.push('-trace', 'kvm_set_user_memory', '-D', join(o.out, 'qemu.trace'), '-msg', 'timestamp=on');
      files.push({ file: 'qemu.trace', format: 'qemu' });
    }
    const started = new Date().toISOString();
    // the shell puts its own pid in set_event_pid, then becomes strace, which starts the VMM: with
    // event-fork every descendant thread is traced and nothing else is
    const script = `echo $$ > '${join(inst, 'set_event_pid')}' && exec strace -f -ttt -e trace=ioctl -o '${join(o.out, 'strace.txt')}' "$@"`;
    // its own process group, so the stop reaches the VMM itself: strace, signalled alone, detaches and
    // leaves the VMM running
    const child = spawn('sh', ['-c', script, 'sh', ...argv], {
      stdio: ['ignore', 'ignore', 'pipe'],
      detached: true,
    });
    const signal = (sig: NodeJS.Signals): void => {
      try {
        process.kill(-child.pid!, sig);
      } catch {
        /* the group has exited */
      }
    };
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => void (stderr = (stderr + d.toString()).slice(-4000)));
    const done = new Promise<number | null>((res) => child.on('exit', (c) => res(c)));
    const timer = setTimeout(() => {
      o.log?.(`record: stopping the VMM after ${o.seconds} s`);
      signal('SIGTERM');
      setTimeout(() => signal('SIGKILL'), 5000).unref();
    }, o.seconds * 1000);
    const code = await done;
    clearTimeout(timer);
    write(join(inst, 'tracing_on'), '0');
    writeFileSync(join(o.out, 'kernel.trace'), readFileSync(join(inst, 'trace')));
    files.push({ file: 'kernel.trace', format: 'ftrace' });
    // strace creates its output before it execs the VMM: a command that does not exist leaves an empty
    // strace.txt and strace's exit status 1. A failed exit with no ioctl traced is a VMM that did not run.
    const strace = join(o.out, 'strace.txt');
    if (code !== 0 && code !== null && (!existsSync(strace) || statSync(strace).size === 0))
      throw new Error(
        `record: the VMM did not start or exited before any ioctl (exit ${code}): ${stderr.trim().split('\n').at(-1) ?? ''}`,
      );
    const meta: BundleMeta = {
      zaplabBundle: 1,
      command: o.argv,
      kernel: release(),
      host: o.host ?? (await probedHost()),
      pids: [],
      files,
      started,
    };
    writeFileSync(join(o.out, 'bundle.json'), JSON.stringify(meta, null, 2) + '\n');
    return meta;
  } finally {
    try {
      write(join(inst, 'set_event'), '');
    } catch {
      /* the instance may be half set up */
    }
    rmdirSync(inst);
  }
}
