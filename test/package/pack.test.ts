/**
 * The package as a user gets it: `npm pack` (which runs `prepare`, the tsc build to dist/), the tarball
 * installed into a fresh project, then the public API from plain Node ESM and from CommonJS `require`
 * (the bundled dist/zaplab.cjs, so any Node ≥ 20, with or without require(esm)), the CLI through `npx`, the
 * shipped .d.ts through a consumer's tsc, and the tarball's file list (dist, docs, recordings; no src,
 * no tests). Slow-ish (a build and an install): one file, one fresh project for every check.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { libraryNames, resolveScenario } from '../../src/scenario/library_files.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
let dir = '';
let files: string[] = [];

const run = (cmd: string, args: string[], cwd = dir): string =>
  execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 120_000 });

// The same small workload from ESM and CJS: one slot, one write fault, one rejected call.
const WORKLOAD = `
const kvm = new Kvm();
const vm = kvm.createVm(0);
const hva = kvm.host.mmap(2 << 20);
vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0x100000000, memorySize: 2 << 20, userspaceAddr: hva });
const vcpu = vm.createVcpu(0);
const r = vcpu.access(0x100001000, 'write');
let code = '';
try { vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x100000000, memorySize: 0x1000, userspaceAddr: hva }); }
catch (e) { code = e instanceof KvmError ? e.code : 'not a KvmError'; }
console.log(JSON.stringify({ exit: r.exit, level: r.level, pfFixed: vcpu.getStats().pf_fixed, code }));
`;
const EXPECTED = { exit: 'none', level: 1, pfFixed: 1, code: 'EEXIST' };

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'zaplab-pack-'));
  const packed = JSON.parse(run('npm', ['pack', '--json', '--pack-destination', dir], root)) as {
    filename: string;
    files: { path: string }[];
  }[];
  files = packed[0]!.files.map((f) => f.path);
  writeFileSync(
    join(dir, 'package.json'),
    JSON.stringify({ name: 'consumer', version: '1.0.0', private: true }),
  );
  // The dependencies come from npm's cache (filled by `npm ci`); the registry only if one is missing.
  run('npm', [
    'install',
    '--prefer-offline',
    '--no-audit',
    '--no-fund',
    '--omit=optional',
    `./${packed[0]!.filename}`,
  ]);
}, 180_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('the packed tarball', () => {
  it('ships dist/ (ESM, .d.ts, source maps, the scenario library), docs and recordings; no sources or tests', () => {
    expect(files).toContain('dist/index.js');
    expect(files).toContain('dist/index.d.ts');
    expect(files).toContain('dist/index.js.map');
    expect(files).toContain('dist/cli/main.js');
    expect(files).toContain('dist/bin/zaplab.js'); // the bin: the CLI bundled (scripts/bundle_cli.mjs)
    expect(files).toContain('dist/bin/compare_worker.js');
    expect(files).toContain('dist/zaplab.cjs');
    for (const n of libraryNames()) expect(files).toContain(`dist/scenario/library/${n}.yaml`);
    expect(files).toContain('docs/invariants.md');
    expect(files).toContain('test/recorded/abi-pvm-6.18.json');
    expect(files.filter((f) => f.startsWith('src/') || /\.test\.(ts|js)$/.test(f))).toEqual([]);
    expect(files.filter((f) => f.startsWith('test/') && !f.startsWith('test/recorded/'))).toEqual([]);
    expect(files).not.toContain('dist/.tsbuildinfo');
    // No import specifier in the compiled code still names a .ts file (tsc's rewrite has gaps).
    const js = files.filter((f) => f.endsWith('.js'));
    const bad = js.filter((f) =>
      /(from\s*|import\(\s*)['"]\.{1,2}\/[^'"]*\.ts['"]/.test(
        readFileSync(join(dir, 'node_modules/zaplab', f), 'utf8'),
      ),
    );
    expect(bad).toEqual([]);
  });

  it("import { Kvm } from 'zaplab' works from plain Node ESM", () => {
    const out = run(process.execPath, [
      '--input-type=module',
      '-e',
      `import { Kvm, KvmError } from 'zaplab';${WORKLOAD}`,
    ]);
    expect(JSON.parse(out)).toEqual(EXPECTED);
  });

  it("require('zaplab') works from CommonJS, through the bundled dist/zaplab.cjs", () => {
    writeFileSync(join(dir, 'use.cjs'), `const { Kvm, KvmError } = require('zaplab');${WORKLOAD}`);
    expect(JSON.parse(run(process.execPath, ['use.cjs']))).toEqual(EXPECTED);
    const resolved = run(process.execPath, ['-p', "require.resolve('zaplab')"]).trim();
    expect(resolved).toBe(join(dir, 'node_modules/zaplab/dist/zaplab.cjs'));
  });

  it('npx zaplab: --help, list (every library scenario) and show run the compiled CLI', () => {
    expect(run('npx', ['--no-install', 'zaplab', '--help'])).toMatch(
      /Usage: zaplab[\s\S]*compare[\s\S]*check/,
    );
    const listed = run('npx', ['--no-install', 'zaplab', 'list'])
      .trim()
      .split('\n')
      .map((l) => l.split(/\s+/)[0]);
    expect(listed).toEqual(libraryNames());
    const shown = run(join(dir, 'node_modules/.bin/zaplab'), ['show', 'firmware-boot']); // what npx runs
    expect(shown).toBe(readFileSync(resolveScenario('firmware-boot')!, 'utf8'));
  });

  it('zaplab list and show load no model code (each command imports what it needs when it runs)', () => {
    // A resolve hook logs every module the CLI loads; `list` and `show` must not reach the model, the
    // scenario runner or parser, the checker, the report code, the conformance cases or the replay engine.
    writeFileSync(
      join(dir, 'hooks.mjs'),
      `import { appendFileSync } from 'node:fs';
export async function resolve(s, c, next) {
  const r = await next(s, c);
  if (r.url.startsWith('file:')) appendFileSync(process.env.ZAPLAB_LOADLOG, r.url + '\\n');
  return r;
}`,
    );
    writeFileSync(
      join(dir, 'register.mjs'),
      `import { register } from 'node:module'; register('./hooks.mjs', import.meta.url);`,
    );
    const heavy =
      /\/dist\/(kvm|x86|host|iommu|check|report|conformance|backends|replay\/replay|sweep|explore)\/|\/dist\/scenario\/(runner|parse|steps)|\/node_modules\/(yaml|zod|cli-table3|cli-progress)\//;
    for (const args of [['list'], ['show', 'tdx-boot'], ['--help']]) {
      const log = join(dir, `load-${args[0]}.log`);
      execFileSync(
        process.execPath,
        ['--import', './register.mjs', 'node_modules/zaplab/dist/cli/main.js', ...args],
        {
          cwd: dir,
          env: { ...process.env, ZAPLAB_LOADLOG: log },
          stdio: 'ignore',
        },
      );
      const loaded = readFileSync(log, 'utf8').trim().split('\n');
      expect(loaded.some((u) => u.endsWith('/dist/cli/main.js'))).toBe(true);
      // (the design table behind --design's choices reads the host profiles: data plus the option
      // validators they are checked with, no model code)
      // (and the help text's number formatting, report/en_us.js: 15 lines, no ICU)
      const profileData = /\/dist\/(kvm\/(host_profile|kvm_options|args|kvm_error)|report\/en_us)\.js$/;
      expect(loaded.filter((u) => heavy.test(u) && !profileData.test(u))).toEqual([]);
      // the bin, the bundle: the modules inside the chunks it loads (esbuild heads each with its path)
      const binLog = join(dir, `load-bin-${args[0]}.log`);
      execFileSync(
        process.execPath,
        ['--import', './register.mjs', 'node_modules/zaplab/dist/bin/zaplab.js', ...args],
        { cwd: dir, env: { ...process.env, ZAPLAB_LOADLOG: binLog }, stdio: 'ignore' },
      );
      const chunks = [...new Set(readFileSync(binLog, 'utf8').trim().split('\n'))];
      expect(chunks.every((u) => u.includes('/node_modules/zaplab/dist/bin/'))).toBe(true);
      const inside = chunks.flatMap((u) =>
        [...readFileSync(fileURLToPath(u), 'utf8').matchAll(/^\/\/ ((?:dist|node_modules)\/\S+)$/gm)].map(
          (m) => `/${m[1]!}`,
        ),
      );
      expect(inside).toContain('/dist/cli/main.js');
      expect(inside.filter((u) => heavy.test(u) && !profileData.test(u))).toEqual([]);
    }
  });

  it('the bin (the bundled CLI) compares and checks as dist/cli/main.js does, its worker threads included', () => {
    for (const args of [
      ['compare', 'vsm-permission-split', '-p', 'splits=3', '-w', '1', '--json'],
      ['check', 'vfio-2019', '-p', 'reboots=1', '-w', '2'],
    ]) {
      const cli = (main: string): string => {
        try {
          return run(process.execPath, [main, ...args]);
        } catch (e) {
          // check exits 1 on violations (vfio-2019 reproduces the 2019 regression): its output still counts
          return (e as { status: number; stdout: string }).status === 1
            ? (e as { stdout: string }).stdout
            : `failed: ${String(e)}`;
        }
      };
      const bundled = cli('node_modules/zaplab/dist/bin/zaplab.js');
      expect(bundled).toBe(cli('node_modules/zaplab/dist/cli/main.js'));
      expect(bundled.length).toBeGreaterThan(1000);
    }
  });

  it("the shipped .d.ts types a consumer's TypeScript (nodenext)", () => {
    writeFileSync(
      join(dir, 'consumer.mts'),
      `import { Kvm, type AccessResult } from 'zaplab';
const vm = new Kvm().createVm(0);
export const r: AccessResult = vm.createVcpu(0).access(0x1000, 'read');
// @ts-expect-error not an access kind: only fails if the types reached the consumer
vm.createVcpu(1).access(0x1000, 'fetch');
`,
    );
    const args = ['--noEmit', '--strict', '--skipLibCheck', '--module', 'nodenext', '--target', 'es2022'];
    const types = ['--lib', 'es2023', '--types', 'node', '--typeRoots', join(root, 'node_modules/@types')];
    expect(run(process.execPath, [tsc, ...args, ...types, 'consumer.mts'])).toBe('');
  });
});
