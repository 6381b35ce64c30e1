/**
 * The scenario library (src/scenario/library/*.yaml): list, resolve by name or path, load with params.
 * Each file's header comment documents where its numbers come from. Model-only file.
 */
import { InputFileError, MAX_SCENARIO_BYTES, readInputText } from './input_file.ts';
import { parseScenario, type ParseOptions, type ParseResult } from './parse.ts';
import { libraryNames, resolveScenario } from './library_files.ts';

export { LIBRARY_DIR, describeFile, libraryNames, resolveScenario } from './library_files.ts';

export function loadScenario(
  nameOrPath: string,
  params: Record<string, string> = {},
  opts: ParseOptions = {},
): ParseResult & { file?: string } {
  const file = resolveScenario(nameOrPath);
  if (file === null) {
    return {
      ok: false,
      error: `${nameOrPath}: no such scenario file or library name (library: ${libraryNames().join(', ')})`,
    };
  }
  let text: string;
  try {
    text = readInputText(file, MAX_SCENARIO_BYTES);
  } catch (e) {
    if (!(e instanceof InputFileError)) throw e;
    const why = e.code === 'EISDIR' ? 'is a directory, not a scenario file' : e.message;
    return { ok: false, error: `${file}:1:1: ${why}` };
  }
  return { ...parseScenario(text, file, params, opts), file };
}
