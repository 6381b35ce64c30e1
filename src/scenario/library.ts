/**
 * The scenario library (src/scenario/library/*.yaml): list, resolve by name or path, load with params.
 * Each file's header comment documents where its numbers come from. Model-only file.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { parseScenario, type ParseResult } from './parse.ts';

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

export function loadScenario(nameOrPath: string, params: Record<string, string> = {}): ParseResult & { file?: string } {
  const file = resolveScenario(nameOrPath);
  if (file === null) {
    return { ok: false, error: `${nameOrPath}: no such scenario file or library name (library: ${libraryNames().join(', ')})` };
  }
  return { ...parseScenario(readFileSync(file, 'utf8'), file, params), file };
}

/** The header comment's first line after the name, for `list`. */
export function describeFile(file: string): string {
  const text = readFileSync(file, 'utf8');
  const m = /^description:\s*(.+)$/m.exec(text);
  return m ? m[1]!.trim() : '';
}
