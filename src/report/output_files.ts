/**
 * The files and directories the CLI writes (`--trace`, `--html`, `--svg`, `conformance --record/--mmu`):
 * checked before a run starts, so a path that cannot be written is an input error at once (exit 2, one
 * line naming the option and the path) instead of an internal error after the run, with its results
 * lost; and a write that still fails (a full disk, a file the kernel refuses) is the same one-line error.
 * Model-only file.
 */
import { mkdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

/** A path an output option cannot use; `message` is the line the CLI prints. */
export class OutputPathError extends Error {
  override name = 'OutputPathError';
}

/**
 * By name, not instanceof: the CLI bundle and the report's SVG module (loaded from dist/ beside it, vega
 * is not bundled) each hold a copy of the class.
 */
export const isOutputPathError = (e: unknown): e is OutputPathError =>
  e instanceof Error && e.name === 'OutputPathError';

const why = (e: unknown): string => (e as NodeJS.ErrnoException).code ?? String(e);

/** The type of what `path` names, or null when nothing is there. */
function kind(path: string): 'dir' | 'other' | null {
  try {
    return statSync(path).isDirectory() ? 'dir' : 'other';
  } catch (e) {
    // ENOTDIR: a file on the way (`out.json/x`); the ancestor walk names it
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    throw e;
  }
}

/** The nearest existing ancestor of `path` (itself excluded) must be a directory. */
function checkAncestor(opt: string, path: string, mustExist: boolean): void {
  let dir = dirname(resolve(path));
  if (mustExist) {
    const k = kind(dir);
    if (k === null) throw new OutputPathError(`${opt} ${path}: directory ${dir} does not exist`);
    if (k !== 'dir') throw new OutputPathError(`${opt} ${path}: ${dir} is not a directory`);
    return;
  }
  for (;;) {
    const k = kind(dir);
    if (k === 'dir') return;
    if (k === 'other') throw new OutputPathError(`${opt} ${path}: ${dir} is not a directory`);
    dir = dirname(dir);
  }
}

/** A file option (`--trace out.json`): not a directory, in a directory that exists. */
export function checkOutputFile(opt: string, path: string): void {
  if (path === '') throw new OutputPathError(`${opt}: expected a file name`);
  if (kind(path) === 'dir') throw new OutputPathError(`${opt} ${path}: is a directory`);
  checkAncestor(opt, path, true);
}

/** A directory option (`--svg dir`): a directory, or a path where one can be made. */
export function checkOutputDir(opt: string, path: string): void {
  if (path === '') throw new OutputPathError(`${opt}: expected a directory name`);
  const k = kind(path);
  if (k === 'other') throw new OutputPathError(`${opt} ${path}: is not a directory`);
  if (k === null) checkAncestor(opt, path, false);
}

/** writeFileSync, failing as OutputPathError naming the option. */
export function writeOutputFile(opt: string, path: string, data: string | Uint8Array): void {
  try {
    writeFileSync(path, data);
  } catch (e) {
    throw new OutputPathError(`${opt} ${path}: cannot write (${why(e)})`);
  }
}

/**
 * mkdir -p, failing as OutputPathError naming the option. One level at a time: Node's recursive mkdir
 * loops forever where mkdir answers ENOENT under an existing directory (procfs, e.g. /proc/sys/x).
 */
export function makeOutputDir(opt: string, path: string): void {
  const missing: string[] = [];
  for (let d = resolve(path); kind(d) === null && dirname(d) !== d; d = dirname(d)) missing.unshift(d);
  try {
    for (const d of missing) mkdirSync(d);
  } catch (e) {
    throw new OutputPathError(`${opt} ${path}: cannot make the directory (${why(e)})`);
  }
}
