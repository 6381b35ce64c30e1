/**
 * /proc/self/fd and /proc/self/maps snapshots for the leak tests. V8 (256 KiB heap pages) and glibc
 * malloc (64 MiB arenas) map memory of their own while a workload runs, so the maps comparison sets
 * aside lines that overlap nothing the backend mapped (resources.ts#recordMappings).
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

/** fd number → what it points at ("anon_inode:kvm-vm", "/dev/kvm", "pipe:[123]", …). */
export function fdTable(): Map<number, string> {
  const t = new Map<number, string>();
  for (const name of readdirSync('/proc/self/fd')) {
    try {
      const target = readlinkSync(`/proc/self/fd/${name}`);
      if (!/^\/proc\/\d+\/fd$/.test(target)) t.set(Number(name), target); // readdir's own fd
    } catch {
      // the fd readdir itself used, closed by the time we read its link
    }
  }
  return t;
}

/** What the real backend opens: /dev/kvm, VM/vCPU/stats anon inodes, guest_memfds, its memfds. */
const OURS = /^(\/dev\/kvm$|anon_inode:(kvm|\[?kvm)|\/memfd:(zaplab|guest_memfd))/;

/**
 * Compare two fd tables. `ours` lists fds that point at /dev/kvm, KVM objects or the backend's memfds
 * (the backend opens nothing else, so a leak of its own shows here); `added` and `removed` list every
 * other change too, for diagnosis: tsx's and V8's own fds come and go, and are not a leak.
 */
export function compareFds(before: Map<number, string>, after: Map<number, string>) {
  const added: string[] = [];
  for (const [fd, target] of after) if (before.get(fd) !== target) added.push(`${fd} -> ${target}`);
  let removed = 0;
  for (const [fd, target] of before) if (after.get(fd) !== target) removed++;
  const ours = [...after].filter(([, t]) => OURS.test(t)).map(([fd, t]) => `${fd} -> ${t}`);
  return { added, removed, ours };
}
export const mapLines = (): string[] => readFileSync('/proc/self/maps', 'utf8').split('\n').filter(Boolean);

function range(line: string): [number, number] {
  const [lo, hi] = line
    .split(' ')[0]!
    .split('-')
    .map((x) => parseInt(x, 16));
  return [lo!, hi!];
}

/** Whether a maps line overlaps any [addr, len) in the log. */
export function overlapsLog(line: string, log: readonly [number, number][]): boolean {
  const [lo, hi] = range(line);
  return log.some(([a, n]) => a < hi && lo < a + n);
}

/**
 * Compare two maps snapshots: the line count after, minus lines others added meanwhile, plus lines
 * others removed, must equal the count before; `ours` lists lines still overlapping backend mappings.
 */
export function compareMaps(before: string[], after: string[], log: readonly [number, number][]) {
  const b = new Set(before);
  const a = new Set(after);
  const added = after.filter((l) => !b.has(l));
  const removed = before.filter((l) => !a.has(l));
  const foreignAdded = added.filter((l) => !overlapsLog(l, log));
  return {
    before: before.length,
    after: after.length,
    adjusted: after.length - foreignAdded.length + removed.length,
    ours: after.filter((l) => overlapsLog(l, log)),
  };
}
