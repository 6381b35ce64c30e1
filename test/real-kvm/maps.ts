/**
 * /proc/self/fd and /proc/self/maps snapshots for the leak tests. V8 (256 KiB heap pages) and glibc
 * malloc (64 MiB arenas) map memory of their own while a workload runs, so the maps comparison sets
 * aside lines that overlap nothing the backend mapped (resources.ts#recordMappings).
 */
import { readdirSync, readFileSync } from 'node:fs';

export const fdCount = (): number => readdirSync('/proc/self/fd').length;
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
