/**
 * docs/kernel-map.md is generated from the @kernel tags; this keeps it in step with the code and checks
 * every tag names a kernel source file and a C identifier.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { collectKernelTags, renderKernelMap } from '../../scripts/kernel_map.ts';

describe('docs/kernel-map.md', () => {
  const tags = collectKernelTags();

  it('is up to date with the @kernel tags (run npm run kernel-map)', () => {
    const committed = readFileSync(new URL('../../docs/kernel-map.md', import.meta.url), 'utf8');
    expect(committed).toBe(renderKernelMap(tags));
  });

  it('every tag points at a kernel source file and names a C identifier', () => {
    expect(tags.length).toBeGreaterThan(250);
    for (const t of tags) {
      expect(t.kernelPath, `${t.file}:${t.line}`).toMatch(
        /^(arch|virt|include|drivers|mm|fs|kernel|Documentation)\/[\w./-]+\.(c|h|rst)$/,
      );
      expect(t.kernelFn, `${t.file}:${t.line}`).toMatch(/^[A-Za-z_]\w*$/);
    }
  });
});
