/**
 * Reading a file a user named (a scenario, a memslot script, a trace, a result for the report) with a
 * bound: a directory is refused by name, and a file that never ends (`/dev/zero`, `/dev/urandom`) or is
 * larger than any input of its kind stops at `maxBytes` with an error, instead of reading until the
 * process hangs or aborts out of memory (readFileSync reads a character device until EOF). Pipes and
 * process substitutions (`<(zcat x)`) are read like files. Model-only file.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';

/** Scenario files and memslot scripts: far below this (the library's largest is ~10 KiB). */
export const MAX_SCENARIO_BYTES = 16 << 20;
/** Traces and result documents: the most text one JS string holds (V8: 2^29 - 24 characters). */
export const MAX_TEXT_BYTES = (1 << 29) - 24;

/** Why a named file could not be read: `message` is the reason alone (callers add the file name). */
export class InputFileError extends Error {
  override name = 'InputFileError';
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

const MIB = 1 << 20;
const size = (n: number): string => (n >= MIB ? `${Math.round(n / MIB)} MiB` : `${n} bytes`);

/** The bytes of `path`, at most `maxBytes`; InputFileError otherwise. */
export function readInputFile(path: string, maxBytes: number): Buffer {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'EIO';
    throw new InputFileError(code === 'EISDIR' ? 'is a directory' : `cannot read (${code})`, code);
  }
  try {
    const st = fstatSync(fd);
    if (st.isDirectory()) throw new InputFileError('is a directory', 'EISDIR');
    if (st.isFile() && st.size > maxBytes)
      throw new InputFileError(`is ${st.size} bytes, more than the limit of ${size(maxBytes)}`, 'EFBIG');
    // devices and pipes report no size: read in chunks until EOF or one byte past the limit
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const buf = Buffer.allocUnsafe(Math.min(1 << 20, maxBytes + 1 - total));
      const n = readChunk(fd, buf);
      if (n === 0) break;
      chunks.push(n === buf.length ? buf : buf.subarray(0, n));
      total += n;
      if (total > maxBytes)
        throw new InputFileError(`does not end within ${size(maxBytes)} (the limit for this input)`, 'EFBIG');
    }
    return Buffer.concat(chunks, total);
  } finally {
    closeSync(fd);
  }
}

function readChunk(fd: number, buf: Buffer): number {
  try {
    return readSync(fd, buf, 0, buf.length, null);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'EIO';
    throw new InputFileError(code === 'EISDIR' ? 'is a directory' : `cannot read (${code})`, code);
  }
}

/** readInputFile as UTF-8 text, without a leading byte-order mark (editors on Windows write one). */
export function readInputText(path: string, maxBytes: number): string {
  return withoutBom(readInputFile(path, maxBytes).toString('utf8'));
}

/** The text without its leading byte-order mark, if it has one. */
export const withoutBom = (text: string): string => (text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
