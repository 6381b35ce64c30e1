/** Types of bench/shadow_user.mjs (a plain ESM script, as a user writes one). */
export interface TouchFigures {
  /** faults/s over the first 512 MiB (the cold JIT's share is large here) */
  first: number;
  /** faults/s over all 4 GiB */
  all: number;
}
export function firstTouch(
  Kvm: typeof import('../src/index.ts').Kvm,
  pages?: number,
  head?: number,
): TouchFigures;
