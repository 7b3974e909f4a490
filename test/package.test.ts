import { readdirSync, readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { nodeFlagsOf, serviceNodeFlags } from '../bench/service-flags.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
  bin: Record<string, string>;
  scripts: Record<string, string>;
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
};

const sourceFiles = (directory: string): string[] =>
  readdirSync(directory, { withFileTypes: true }).flatMap((entry) => {
    const path = join(directory, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return entry.name.endsWith('.ts') ? [path] : [];
  });

/** Packages a module loads when it runs: static imports and re-exports (not `import type`), bare imports, `import()`. */
const runtimeImports = (source: string): string[] => {
  const found = new Set<string>();
  const patterns = [
    /^\s*import\s+(?!type\s)[^'";]*?\sfrom\s+['"]([^'"]+)['"]/gm,
    /^\s*export\s+(?!type\s)[^'";]*?\sfrom\s+['"]([^'"]+)['"]/gm,
    /^\s*import\s+['"]([^'"]+)['"]/gm,
    /\bimport\(\s*['"]([^'"]+)['"]\s*\)/g,
  ];
  for (const pattern of patterns) for (const match of source.matchAll(pattern)) found.add(match[1]!);
  return [...found];
};

/** `@scope/name/sub` → `@scope/name`, `name/sub` → `name`. */
const packageOf = (specifier: string): string => {
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]!;
};

const builtins = new Set(builtinModules);
const isBuiltin = (specifier: string) => specifier.startsWith('node:') || builtins.has(packageOf(specifier));

/** What the production image runs (`npm ci --omit=dev` plus the build): no dev dependency may be needed there. */
describe('the production install', () => {
  it('nothing under src/ or db/ loads a development dependency at run time', () => {
    const offenders: string[] = [];
    for (const file of [...sourceFiles(join(root, 'src')), ...sourceFiles(join(root, 'db'))]) {
      for (const specifier of runtimeImports(readFileSync(file, 'utf8'))) {
        if (specifier.startsWith('.') || isBuiltin(specifier)) continue;
        if (!(packageOf(specifier) in manifest.dependencies)) offenders.push(`${relative(root, file)}: ${specifier}`);
      }
    }
    expect(offenders).toEqual([]);
  });

  it('the documented operator commands run the built CLI, not the TypeScript sources', () => {
    for (const name of ['start', 'sync', 'reconcile', 'migrate', 'cli']) {
      expect(manifest.scripts[name], name).toMatch(/^node (--[\w-]+(=\S+)? )*dist\/src\/(cli|server)\.js\b/);
    }
    expect(manifest.bin).toEqual({ 'logto-access-sync': 'dist/src/cli.js' });
    // The bin target is the build of src/cli.ts, which must start with a shebang to run as a command.
    expect(readFileSync(join(root, 'src', 'cli.ts'), 'utf8').startsWith('#!/usr/bin/env node\n')).toBe(true);
  });

  it('the image and npm start run the service with the same node flags, which the benches read from npm start', () => {
    const startFlags = nodeFlagsOf(manifest.scripts.start!);
    // The young generation sized for a stream of webhooks (README): without it the service scavenges every ~125 ms under load.
    expect(startFlags).toContain('--max-semi-space-size=64');
    expect(serviceNodeFlags()).toEqual(startFlags);
    const cmd = /^CMD (\[.*\])$/m.exec(readFileSync(join(root, 'Dockerfile'), 'utf8'))?.[1];
    expect(JSON.parse(cmd!) as string[]).toEqual(['node', ...startFlags, 'dist/src/server.js']);
    expect(nodeFlagsOf('node --a=1 --b dist/src/server.js --c')).toEqual(['--a=1', '--b']);
    expect(nodeFlagsOf('tsx --a bench/run.ts')).toEqual([]);
  });

  it('the test patterns recognise runtime imports and ignore type-only ones', () => {
    const sample = [
      "import type { A } from 'vitest';",
      "import { b, type C } from 'zod';",
      "export { d } from 'express';",
      "export type { E } from 'supertest';",
      "import 'dotenv/config';",
      "const f = await import('pg');",
    ].join('\n');
    expect(runtimeImports(sample).sort()).toEqual(['dotenv/config', 'express', 'pg', 'zod']);
  });
});
