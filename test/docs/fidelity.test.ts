/**
 * docs/fidelity.md holds one row per modelled kernel function: every `@kernel path#function` tag in src/
 * must have a row naming that function and its kernel file, with a status. The private-memory section is
 * filled by its own reading (issue #12, fid-a); until it holds a table, the tags of that area are listed
 * here by file and function so none can slip out of both.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { collectKernelTags } from '../../scripts/kernel_map.ts';

const doc = readFileSync(new URL('../../docs/fidelity.md', import.meta.url), 'utf8');
const PRIVATE_HEADING = '## Private memory: TDX, SEV-SNP, guest_memfd, memory attributes';
const STATUSES = /^(matches|differs|not modelled|not re-read|fid-a)/;

/** `| \`fn\` | path | version | model | status | notes |` rows, keyed `path#fn`. */
function rows(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const m = /^\| `([A-Za-z_]\w*)` \| ([\w./-]+) \|(.*)\|$/.exec(line);
    if (m)
      out.set(
        `${m[2]}#${m[1]}`,
        m[3]!.split('|').map((c) => c.trim()),
      );
  }
  return out;
}

const PRIVATE_FILES = new Set([
  'arch/x86/kvm/vmx/tdx.c',
  'arch/x86/kvm/vmx/tdx.h',
  'arch/x86/kvm/svm/sev.c',
  'arch/x86/kvm/svm/svm.c',
  'arch/x86/virt/svm/sev.c',
  'virt/kvm/guest_memfd.c',
  'fs/open.c',
]);
const PRIVATE_FNS = new Set([
  'kvm_supported_mem_attributes',
  'kvm_vm_ioctl_set_mem_attributes',
  'kvm_vm_set_mem_attributes',
  'kvm_handle_gfn_range',
  'kvm_pre_set_memory_attributes',
  'kvm_arch_pre_set_memory_attributes',
  'kvm_arch_post_set_memory_attributes',
  'kvm_mmu_init_memslot_memory_attributes',
  'hugepage_set_mixed',
  'hugepage_clear_mixed',
  'hugepage_test_mixed',
  'hugepage_has_attrs',
  'kvm_arch_guest_memory_reclaimed',
  'is_mirror_sp',
  'remove_external_spte',
  'set_external_spte_present',
]);
const isPrivate = (path: string, fn: string) => PRIVATE_FILES.has(path) || PRIVATE_FNS.has(fn);

describe('docs/fidelity.md', () => {
  const tags = collectKernelTags();
  const privateStart = doc.indexOf(PRIVATE_HEADING);
  const table = rows(doc);
  const privateFilled = privateStart >= 0 && rows(doc.slice(privateStart)).size > 0;

  it('has the private-memory section', () => {
    expect(privateStart).toBeGreaterThan(0);
  });

  it('has a row with a status for every @kernel tag in src/', () => {
    const missing: string[] = [];
    for (const t of tags) {
      if (!privateFilled && isPrivate(t.kernelPath, t.kernelFn)) continue;
      const r = table.get(`${t.kernelPath}#${t.kernelFn}`);
      if (r === undefined) missing.push(`${t.kernelPath}#${t.kernelFn} (${t.file}:${t.line})`);
      else expect(r[2], `${t.kernelPath}#${t.kernelFn}`).toMatch(STATUSES);
    }
    expect(missing).toEqual([]);
  });

  it('every differs row points at a simplification or a fix', () => {
    for (const [k, r] of table) {
      if (!r[2]!.startsWith('differs')) continue;
      expect(r[2], k).toMatch(/simplifications\.md/);
    }
  });
});
