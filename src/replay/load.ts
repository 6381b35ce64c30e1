/**
 * Loading replay inputs: trace files (plain or .gz) with their format detected from the first lines or
 * given (`qemu`, `strace`, `ftrace`), or a bundle directory written by `zaplab record` (bundle.json names
 * its files, the traced host profile and the VMM's pids). Files are only read, never written.
 * Model-only file.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { InputFileError, MAX_TEXT_BYTES, readInputFile, withoutBom } from '../scenario/input_file.ts';
import { gunzipSync } from 'node:zlib';
import { basename, join } from 'node:path';
import { looksLikeQemuTrace, readQemuTrace } from './qemu_trace.ts';
import { looksLikeStrace, readStrace } from './strace.ts';
import { looksLikeFtrace, readFtrace } from './ftrace.ts';
import type { Parsed, ReadOptions } from './events.ts';
import type { Scenario } from '../scenario/schema.ts';
import { resolveHostConfig } from '../kvm/host_profile.ts';
import { kvmOptionsFor } from '../scenario/designs.ts';

export type Format = 'qemu' | 'strace' | 'ftrace';
export const FORMATS: readonly Format[] = ['qemu', 'strace', 'ftrace'];

/** What `zaplab record` writes as bundle.json. */
export interface BundleMeta {
  zaplabBundle: 1;
  command: string[];
  kernel: string;
  host: NonNullable<Scenario['host']>;
  pids: number[];
  files: { file: string; format: Format }[];
  started: string;
}

/**
 * A trace file's text (gunzipped if .gz), bounded: a file that never ends is an error, not a hang. Line
 * ends are LF and there is no byte-order mark: a trace saved with CRLF (copied through Windows) or a BOM
 * reads as the same lines, where the readers would take the CR as part of a line's last field and
 * report every line malformed.
 */
export function readText(path: string): string {
  return plainLines(gunzipIfGz(path, readInputFile(path, MAX_TEXT_BYTES)).toString('utf8'));
}

/** CRLF → LF (only when the text has a CR: no copy otherwise), and no leading BOM. */
export function plainLines(text: string): string {
  const t = withoutBom(text);
  return t.includes('\r\n') ? t.replace(/\r\n/g, '\n') : t;
}

function gunzipIfGz(path: string, buf: Buffer): Buffer {
  if (!path.endsWith('.gz')) return buf;
  try {
    return gunzipSync(buf, { maxOutputLength: MAX_TEXT_BYTES });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new InputFileError(
      code === 'ERR_BUFFER_TOO_LARGE'
        ? `unpacks to more than the limit of ${MAX_TEXT_BYTES} bytes`
        : `is not gzip data (${e instanceof Error ? e.message : String(e)})`,
      code ?? 'EINVAL',
    );
  }
}

export function detectFormat(text: string): Format | null {
  const head = text.slice(0, 65536);
  if (looksLikeFtrace(head)) return 'ftrace';
  if (looksLikeStrace(head)) return 'strace';
  if (looksLikeQemuTrace(head)) return 'qemu';
  return null;
}

export function parseText(text: string, name: string, format: Format, opts: ReadOptions): Parsed {
  switch (format) {
    case 'qemu':
      return readQemuTrace(text, name, opts);
    case 'strace':
      return readStrace(text, name, opts);
    case 'ftrace':
      return readFtrace(text, name, opts);
  }
}

export interface Loaded {
  streams: Parsed[];
  bundle?: BundleMeta;
}

/** Read inputs: files (format per file from `formats`, else detected) or one bundle directory. */
export function loadInputs(paths: string[], formats: (Format | undefined)[], opts: ReadOptions): Loaded {
  if (paths.length === 1 && existsSync(paths[0]!) && statSync(paths[0]!).isDirectory())
    return loadBundle(paths[0]!, opts);
  const streams = paths.map((p, i) => {
    let text: string;
    try {
      text = readText(p);
    } catch (e) {
      if (!(e instanceof InputFileError)) throw e;
      throw new Error(`${p}: ${e.message}`);
    }
    const f = formats[i] ?? detectFormat(text);
    if (f === null)
      throw new Error(
        `${p}: not a QEMU trace, strace -ttt output or kernel trace text (give --format ${FORMATS.join('|')})`,
      );
    return parseText(text, basename(p), f, opts);
  });
  return { streams };
}

function loadBundle(dir: string, opts: ReadOptions): Loaded {
  const metaPath = join(dir, 'bundle.json');
  let meta: BundleMeta;
  try {
    meta = JSON.parse(readFileSync(metaPath, 'utf8')) as BundleMeta;
  } catch (e) {
    throw new Error(`${metaPath}: not a zaplab bundle (${e instanceof Error ? e.message : String(e)})`);
  }
  checkBundle(meta, metaPath);
  const pids = opts.pids ?? (meta.pids?.length ? new Set(meta.pids) : undefined);
  const streams = meta.files.map((f) => {
    const path = join(dir, f.file);
    let text: string;
    try {
      text = readText(path);
    } catch (e) {
      if (!(e instanceof InputFileError)) throw e;
      throw new Error(`${path}: ${e.message} (named in ${metaPath})`);
    }
    return parseText(text, f.file, f.format, { ...opts, ...(pids ? { pids } : {}) });
  });
  return { streams, bundle: { ...meta, command: meta.command ?? [] } };
}

/** The scenario host keys a bundle's `host` may have (schema.ts's host; its values: resolveHostConfig). */
const HOST_KEYS = new Set([
  'profile',
  'kernel',
  'tdp',
  'tdpMmu',
  'honorGuestMtrrs',
  'cdToggleZap',
  'snoopScope',
  'iommus',
  'overrides',
  'bugs',
]);

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * bundle.json's shape, as `zaplab record` writes it (an edited or foreign file is named field by field,
 * not met later as a TypeError); the host's values are checked as new Kvm() checks them.
 */
function checkBundle(meta: unknown, metaPath: string): asserts meta is BundleMeta {
  function bad(what: string): never {
    throw new Error(`${metaPath}: ${what}`);
  }
  if (!isObject(meta) || meta['zaplabBundle'] !== 1 || !Array.isArray(meta['files']))
    bad('not a zaplab bundle (zaplabBundle: 1, files: […])');
  const m = meta as Record<string, unknown> & { files: unknown[] };
  m.files.forEach((f, i) => {
    if (!isObject(f) || typeof f['file'] !== 'string' || f['file'] === '')
      bad(`files[${i}]: expected { file: "<name in the bundle>", format: ${FORMATS.join('|')} }`);
    if (!(FORMATS as readonly unknown[]).includes(f['format']))
      bad(`files[${i}].format: expected one of ${FORMATS.join(', ')} (got ${JSON.stringify(f['format'])})`);
  });
  const strings = m['command'];
  if (strings !== undefined && !(Array.isArray(strings) && strings.every((a) => typeof a === 'string')))
    bad('command: expected a list of strings (the VMM command line)');
  const pids = m['pids'];
  if (pids !== undefined && !(Array.isArray(pids) && pids.every((p) => Number.isSafeInteger(p) && p >= 0)))
    bad('pids: expected a list of process ids (non-negative integers)');
  const host = m['host'];
  if (host === undefined) return;
  if (!isObject(host)) bad('host: expected a mapping (profile, kernel, tdp, tdpMmu, …)');
  const unknown = Object.keys(host as object).filter((k) => !HOST_KEYS.has(k));
  if (unknown.length) bad(`host: unknown key ${unknown[0]} (allowed: ${[...HOST_KEYS].join(', ')})`);
  try {
    resolveHostConfig(kvmOptionsFor({ host } as Scenario));
  } catch (e) {
    // new Kvm()'s option checks throw TypeErrors that name the option
    if (!(e instanceof TypeError)) throw e;
    bad(`host: ${e.message}`);
  }
}
