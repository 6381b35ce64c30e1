/** Types of bench/access_user.mjs (a plain ESM script, as a user writes one). */
export interface AccessFigures {
  accessFirstTouch: number;
  accessHits: number;
  rangeFirstTouch: number;
  rangeHits: number;
  rangeTlbHits: number;
}
export function measure(Kvm: typeof import('../src/index.ts').Kvm, reps?: number): AccessFigures;
export function map1TiB(Kvm: typeof import('../src/index.ts').Kvm): { seconds: number; peakRssMiB: number };
