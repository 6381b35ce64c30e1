/**
 * One YAML file read for the scenario parser and the explorer's configuration loader alike: the document,
 * and `where(offset)` giving `file:line:col` for an error at a source offset; or the first syntax error,
 * already in that form.
 */
import { LineCounter, parseDocument, type Document } from 'yaml';

export type YamlDoc =
  { ok: true; doc: Document.Parsed; where: (offset: number) => string } | { ok: false; error: string };

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
  return { ok: true, doc, where };
}
