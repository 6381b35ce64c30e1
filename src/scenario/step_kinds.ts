/**
 * What the runner needs to know about steps without loading the zod schema (schema.ts) or the YAML
 * parser: the step kinds, in the schema's order, and how many leaf steps a list unrolls to. The runner
 * and its worker threads (compare_parallel.ts) then start without zod and yaml. A test keeps the list
 * equal to the schema's STEP_KINDS. Model-only file.
 */
import type { Step, StepKind } from './schema.ts';

/** The VFIO and memory-type steps (steps_vfio.ts runs them), in the schema's order. */
export const VFIO_STEP_KINDS: readonly StepKind[] = [
  'vfioDevice',
  'vfioContainer',
  'vfioGroup',
  'vfioIommu',
  'mapDma',
  'unmapDma',
  'dma',
  'kvmVfio',
  'cr0',
  'mtrr',
  'pat',
];

export const STEP_KIND_NAMES: readonly StepKind[] = [
  'create',
  'delete',
  'move',
  'flags',
  'memslot',
  'access',
  'host',
  'dirtyLog',
  'attributes',
  'accept',
  'punchHole',
  'enableCap',
  'guestPaging',
  'audit',
  ...VFIO_STEP_KINDS,
  'repeat',
];

/** Leaf steps a list unrolls to (repeats multiplied out; Infinity past 2^53). */
export function countSteps(list: Step[]): number {
  let n = 0;
  for (const s of list) n += 'repeat' in s ? s.repeat * countSteps(s.steps) : 1;
  return n;
}
