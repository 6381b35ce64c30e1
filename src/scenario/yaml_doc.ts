/**
 * One YAML file read for the scenario parser and the explorer's configuration loader alike: the document,
 * and `where(offset)` giving `file:line:col` for an error at a source offset; or the first syntax error,
 * already in that form.
 */
import { LineCounter, parseDocument, type Document } from 'yaml';

export type YamlDoc =
  | { ok: true; doc: Document.Parsed; where: (offset: number) => string; value: unknown }
  | { ok: false; error: string };

export function parseYamlDoc(text: string, file: string): YamlDoc {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  const where = (offset: number): string => {
    const p = lc.linePos(offset);
    return `${file}:${p.line}:${p.col}`;
  };
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    return { ok: false, error: `${where(e.pos[0])}: YAML syntax: ${e.message.split('\n')[0]}` };
  }
  const value = yamlValue(doc);
  const bad = yamlValueError(value);
  if (bad !== null) return { ok: false, error: `${where(0)}: YAML: ${bad}` };
  return { ok: true, doc, where, value };
}

class YamlValueError extends Error {}

/**
 * The document as plain data, or why it has none: yaml refuses aliases that expand past its limit (a
 * "billion laughs" file) with a ReferenceError, and data nested past the stack with a RangeError.
 */
export function yamlValue(doc: Document.Parsed): unknown {
  try {
    return doc.toJS();
  } catch (e) {
    if (e instanceof ReferenceError || e instanceof RangeError) return new YamlValueError(e.message);
    throw e;
  }
}

/** yamlValue's failure, if it failed. */
export const yamlValueError = (v: unknown): string | null => (v instanceof YamlValueError ? v.message : null);
