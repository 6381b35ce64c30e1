/**
 * The package as a user gets it: `npm pack` (which runs `prepare`, the tsc build to dist/), the tarball
 * installed into a fresh project, then the public API from plain Node ESM and from CommonJS `require`
 * (the bundled dist/zaplab.cjs, so any Node ≥ 20, with or without require(esm)), the CLI through `npx`, the
 * shipped .d.ts through a consumer's tsc, and the tarball's file list (dist, docs, recordings; no src,
 * no tests). Slow-ish (a build and an install): one file, one fresh project for every check.
 */
import { isAscii } from 'node:buffer';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as nodeModule from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { libraryNames, resolveScenario } from '../../src/scenario/library_files.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
/** Node ≥ 22.1: the bin loads its bundle with Node's own compile cache (src/cli/code_cache.ts) */
const NODE_CACHE = 'enableCompileCache' in nodeModule;
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

/** The bundle's modules (dist/… and node_modules/… paths) the bin initialises for `args` (V8 coverage). */
function binInits(args: string[]): string[] {
  const cov = mkdtempSync(join(dir, 'cov-'));
  execFileSync(process.execPath, ['node_modules/zaplab/dist/bin/zaplab.js', ...args], {
    cwd: dir,
    env: { ...process.env, NODE_V8_COVERAGE: cov },
    stdio: 'ignore',
  });
  const inits: string[] = [];
  for (const f of readdirSync(cov)) {
    const { result } = JSON.parse(readFileSync(join(cov, f), 'utf8')) as {
      result: { url: string; functions: { functionName: string; ranges: { count: number }[] }[] }[];
    };
    // (the bundle's script is named by the path the build's code cache was made at: V8 keeps the cache's)
    for (const script of result.filter((r) => r.url.endsWith('/dist/bin/zaplab.cjs')))
      for (const fn of script.functions)
        if (/^(dist|node_modules)\//.test(fn.functionName) && fn.ranges[0]!.count > 0)
          inits.push(fn.functionName);
  }
  return inits;
}

describe('the packed tarball', () => {
  it('ships dist/ (ESM, .d.ts, source maps, the scenario library), docs and recordings; no sources or tests', () => {
    expect(files).toContain('dist/index.js');
    expect(files).toContain('dist/index.d.ts');
    expect(files).toContain('dist/index.js.map');
    expect(files).toContain('dist/cli/main.js');
    expect(files).toContain('dist/bin/zaplab.js'); // the bin: loads the CLI bundle (scripts/bundle_cli.mjs)
    expect(files).toContain('dist/bin/zaplab.cjs');
    expect(files).toContain('dist/bin/zaplab.cjs.cache'); // its V8 code cache (src/cli/code_cache.ts)
    expect(files).toContain('dist/bin/load.cjs'); // (the same as CommonJS, which the bin and workers load)
    expect(files).toContain('dist/cli/code_cache.js');
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
    // zod's `z` is bundled as a namespace import (scripts/bundle_cli.mjs): the schemas the CLI names and
    // the English messages, not all of zod's locales (which made its chunk 755 kB)
    const locales = files
      .filter((f) => f.startsWith('dist/bin/') && f.endsWith('.map'))
      .flatMap(
        (f) =>
          (JSON.parse(readFileSync(join(dir, 'node_modules/zaplab', f), 'utf8')) as { sources: string[] })
            .sources,
      )
      .filter((s) => s.includes('/zod/v4/locales/'))
      .map((s) => s.slice(s.lastIndexOf('/') + 1))
      .filter((s) => s !== 'index.js'); // (their index: re-exports only)
    expect(locales).toEqual(['en.js']);
    // the CLI bundle is ASCII (V8 keeps it as one-byte text; scripts/bundle_cli.mjs escapes the rest)
    expect(isAscii(readFileSync(join(dir, 'node_modules/zaplab/dist/bin/zaplab.cjs')))).toBe(true);
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
      // (and the help text's number formatting, report/en_us.js: 15 lines, no ICU; and the output-path
      // checks every command with an output option runs first, report/output_files.js: node:fs only)
      const profileData =
        /\/dist\/(kvm\/(host_profile|kvm_options|args|kvm_error)|report\/(en_us|output_files))\.js$/;
      expect(loaded.filter((u) => heavy.test(u) && !profileData.test(u))).toEqual([]);
      // the bin, the bundle: the modules it initialises (esbuild wraps each module of the bundle in a
      // function named by its path, called when the module is first imported; V8's coverage counts calls)
      const inits = binInits(args);
      expect(inits).toContain('dist/cli/main.js');
      expect(inits.filter((u) => heavy.test(`/${u}`) && !profileData.test(`/${u}`))).toEqual([]);
    }
    // (and the check can fail: a compare initialises the model, the runner and the report code)
    const compareInits = binInits(['compare', 'smram-toggle', '-p', 'toggles=1', '-w', '0']);
    expect(compareInits).toContain('dist/kvm/kvm_main.js');
    expect(compareInits).toContain('dist/scenario/runner.js');
    expect(compareInits).toContain('dist/report/text.js');
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

  it('the bin loads its bundle with the shipped code cache, and without it (stale, corrupt, missing) gives the same output', () => {
    const pkg = join(dir, 'node_modules/zaplab/dist');
    const cacheUse = (): string =>
      run(process.execPath, [
        '--input-type=module',
        '-e',
        `import { loadBundle } from ${JSON.stringify(join(pkg, 'cli/code_cache.js'))};
console.log(loadBundle(${JSON.stringify(join(pkg, 'bin/zaplab.cjs'))}).cache);`,
      ]).trim();
    // (the tarball's cache was made by this Node, at `npm pack`'s prepare)
    expect(cacheUse()).toBe(NODE_CACHE ? 'node-cache' : 'used');
    const args = ['compare', 'vsm-permission-split', '-p', 'splits=3', '-w', '1', '--json'];
    const expected = run(process.execPath, ['node_modules/zaplab/dist/cli/main.js', ...args]);
    expect(run(process.execPath, ['node_modules/zaplab/dist/bin/zaplab.js', ...args])).toBe(expected);
    // the bundle's import() of a module outside it, with the cache: a sweep in this thread loads its task
    // file by URL, its SVGs come from dist/report/svg.js (vega)
    const sweep = (main: string, svg: string): string =>
      run(process.execPath, [main, 'sweep', 'smram-toggle', '-p', 'toggles=1,2', '-w', '0', '--svg', svg])
        .split('\n')
        .filter((l) => !/^sweep: .* in [\d.]+ s/.test(l)) // (its elapsed time)
        .join('\n');
    expect(sweep('node_modules/zaplab/dist/bin/zaplab.js', 'svg-bin')).toBe(
      sweep('node_modules/zaplab/dist/cli/main.js', 'svg-main'),
    );
    const svgs = readdirSync(join(dir, 'svg-bin')).sort();
    expect(svgs).toContain('zapped-vs-toggles.svg');
    expect(svgs).toEqual(readdirSync(join(dir, 'svg-main')).sort());
    for (const f of svgs)
      expect(readFileSync(join(dir, 'svg-bin', f), 'utf8')).toBe(
        readFileSync(join(dir, 'svg-main', f), 'utf8'),
      );
    const cache = join(pkg, 'bin/zaplab.cjs.cache');
    const good = readFileSync(cache);
    copyFileSync(cache, join(dir, 'good.cache'));
    const nl = good.indexOf(10);
    const damaged: [string, Buffer][] = [
      [
        'a flipped byte in the bytecode',
        Buffer.from(good).fill(good[nl + 5000]! ^ 0x5a, nl + 5000, nl + 5001),
      ],
      ['truncated', good.subarray(0, good.length >> 1)],
      [
        'another source',
        Buffer.from(good.toString('latin1').replace(/"source":"[^"]*"/, '"source":"crc32:0"'), 'latin1'),
      ],
      ['not a cache', Buffer.from('garbage\n')],
    ];
    for (const [why, bytes] of damaged) {
      writeFileSync(cache, bytes);
      if (!NODE_CACHE) expect(cacheUse(), why).toBe('stale');
      expect(run(process.execPath, ['node_modules/zaplab/dist/bin/zaplab.js', ...args]), why).toBe(expected);
    }
    rmSync(cache);
    if (!NODE_CACHE) expect(cacheUse()).toBe('missing');
    expect(run(process.execPath, ['node_modules/zaplab/dist/bin/zaplab.js', ...args])).toBe(expected);
    copyFileSync(join(dir, 'good.cache'), cache);
    expect(cacheUse()).toBe(NODE_CACHE ? 'node-cache' : 'used');
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
