/**
 * Address brands are compile-time types (DESIGN.md Conventions): a Gpa where a Gfn is wanted, a Pfn used
 * as an Hva, a plain number or the result of arithmetic where a brand is wanted must not compile.
 *
 * The fixture test/types/fixtures/brand_misuse.ts marks each misuse with `@ts-expect-error`. This test
 * type-checks it with the TypeScript compiler API under the repo's tsconfig options and requires zero
 * diagnostics: an unused `@ts-expect-error` (a brand that stopped working) is itself a diagnostic.
 * A second compile with the directives neutralised proves that each marked line fails on its own, and
 * that no unmarked line does.
 */
import { describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import fs from 'node:fs';
import ts from 'typescript';

const root = fileURLToPath(new URL('../../', import.meta.url));
const fixture = path.join(root, 'test/types/fixtures/brand_misuse.ts');
const DIRECTIVE = '// @ts-expect-error';

function repoOptions(): ts.CompilerOptions {
  const configPath = path.join(root, 'tsconfig.json');
  const read = ts.readConfigFile(configPath, (p) => ts.sys.readFile(p));
  if (read.error) throw new Error(ts.flattenDiagnosticMessageText(read.error.messageText, '\n'));
  const parsed = ts.parseJsonConfigFileContent(read.config, ts.sys, root);
  if (parsed.errors.length) {
    throw new Error(
      parsed.errors.map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n')).join('\n'),
    );
  }
  return { ...parsed.options, noEmit: true };
}

function format(diags: readonly ts.Diagnostic[]): string {
  return ts.formatDiagnostics(diags, {
    getCanonicalFileName: (f) => f,
    getCurrentDirectory: () => root,
    getNewLine: () => '\n',
  });
}

/** Type-check the fixture, optionally with its text replaced; returns diagnostics in the fixture. */
function check(
  options: ts.CompilerOptions,
  text?: string,
  old?: ts.Program,
): { diags: ts.Diagnostic[]; program: ts.Program } {
  const host = ts.createCompilerHost(options, true);
  if (text !== undefined) {
    const getSourceFile = host.getSourceFile.bind(host);
    host.getSourceFile = (name, lang, onError, fresh) =>
      path.resolve(name) === fixture
        ? ts.createSourceFile(name, text, lang, true)
        : getSourceFile(name, lang, onError, fresh);
  }
  const program = ts.createProgram({
    rootNames: [fixture],
    options,
    host,
    ...(old ? { oldProgram: old } : {}),
  });
  const diags = [...ts.getPreEmitDiagnostics(program)];
  return { diags, program };
}

describe('address brands (src/types/addr.ts)', () => {
  const options = repoOptions();
  const source = fs.readFileSync(fixture, 'utf8');
  const lines = source.split('\n');
  // 0-based line numbers of the statements each directive covers (the line after the directive).
  const marked = lines.flatMap((l, i) => (l.trim().startsWith(DIRECTIVE) ? [i + 1] : []));
  let first: ts.Program | undefined;

  it('the fixture has misuse lines to check', () => {
    expect(marked.length).toBeGreaterThanOrEqual(10);
  });

  it('the fixture type-checks with zero diagnostics under the repo tsconfig (every @ts-expect-error is used)', () => {
    const { diags, program } = check(options);
    first = program;
    expect(format(diags)).toBe('');
  });

  it('with the directives removed, exactly the marked lines fail, each with a type error', () => {
    // Same length and line count: the directive becomes a plain comment.
    const stripped = source.replaceAll(DIRECTIVE, '// @ts-expect-nothing');
    const { diags } = check(options, stripped, first);
    const byLine = new Map<number, ts.Diagnostic[]>();
    for (const d of diags) {
      expect(d.file && path.resolve(d.file.fileName), format([d])).toBe(fixture);
      const { line } = d.file!.getLineAndCharacterOfPosition(d.start!);
      byLine.set(line, [...(byLine.get(line) ?? []), d]);
    }
    const failing = [...byLine.keys()].sort((x, y) => x - y);
    expect(failing).toEqual(marked);
    // Assignability errors, not something unrelated such as a missing import.
    const assignability = new Set([2322, 2345, 2741]);
    for (const d of diags) expect(assignability.has(d.code), format([d])).toBe(true);
  });
});
