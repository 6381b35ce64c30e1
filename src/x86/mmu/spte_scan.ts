/**
 * Eight-entry scans of a page table's words, for the loops that step over the empty (or uniform) parts
 * of a table eight entries at a time: the batched leaf zap, handle_removed_pt's frozen-run scan and the
 * checker's table audit. Small enough for V8 to inline at each call site.
 *
 * Kernel counterpart: none — the kernel reads one SPTE at a time; this only skips entries the per-entry
 * loop would find nothing to do for.
 */

/** OR of the eight words arr[j], …, arr[j + 7]. */
export function or8(arr: Int32Array, j: number): number {
  return (
    arr[j]! | arr[j + 1]! | arr[j + 2]! | arr[j + 3]! | arr[j + 4]! | arr[j + 5]! | arr[j + 6]! | arr[j + 7]!
  );
}

/** OR of the eight words arr[j + k] ^ v: 0 exactly when all eight equal v. */
export function xorOr8(arr: Int32Array, j: number, v: number): number {
  return (
    (arr[j]! ^ v) |
    (arr[j + 1]! ^ v) |
    (arr[j + 2]! ^ v) |
    (arr[j + 3]! ^ v) |
    (arr[j + 4]! ^ v) |
    (arr[j + 5]! ^ v) |
    (arr[j + 6]! ^ v) |
    (arr[j + 7]! ^ v)
  );
}
