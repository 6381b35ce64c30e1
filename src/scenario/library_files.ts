/**
 * The scenario library's files (src/scenario/library/*.yaml; dist/scenario/library/ when compiled, copied
 * there by scripts/copy_assets.mjs): list, resolve by name or path, read the description line. Kept apart
 * from the parser so `zaplab list` and `show` load no YAML or schema code. Model-only file.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

export const LIBRARY_DIR = fileURLToPath(new URL('./library/', import.meta.url));

export function libraryNames(): string[] {
  return readdirSync(LIBRARY_DIR)
    .filter((f) => f.endsWith('.yaml'))
    .map((f) => f.slice(0, -5))
    .sort();
}

/** A library name or a file path → the file path, or null. */
export function resolveScenario(nameOrPath: string): string | null {
  if (existsSync(nameOrPath) && !libraryNames().includes(nameOrPath)) return nameOrPath;
  const p = join(LIBRARY_DIR, `${nameOrPath}.yaml`);
  return existsSync(p) ? p : existsSync(nameOrPath) ? nameOrPath : null;
}

/** The header comment's first line after the name, for `list`. */
export function describeFile(file: string): string {
  const text = readFileSync(file, 'utf8');
  const m = /^description:\s*(.+)$/m.exec(text);
  return m ? m[1]!.trim() : '';
}
