import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, test } from 'node:test';
import { ROOT } from './helpers/process.ts';

// The layering docs/ARCHITECTURE.md describes, checked on the sources themselves: no import
// circles anywhere in src/; protocol code, policy and storage each stay on their side.

const SRC = join(ROOT, 'src');

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? sources(join(dir, entry.name)) : entry.name.endsWith('.ts') ? [join(dir, entry.name)] : [],
  );
}

/** Each file of src/ (relative, e.g. "pop3/session.ts") with the files of src/ it imports. */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of sources(SRC)) {
    const text = readFileSync(file, 'utf8');
    const targets = new Set<string>();
    // Static imports and re-exports (type-only ones too: they couple the files all the same),
    // and dynamic import() of relative paths.
    for (const match of text.matchAll(/(?:^|\n)\s*(?:import|export)\b[^'"]*?from\s+'(\.[^']+)'|import\('(\.[^']+)'\)/g)) {
      targets.add(relative(SRC, resolve(dirname(file), match[1] ?? match[2])));
    }
    graph.set(relative(SRC, file), [...targets]);
  }
  return graph;
}

/** Every circle of imports, each as the path that closes it. */
function circles(graph: Map<string, string[]>): string[][] {
  const found: string[][] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const path: string[] = [];
  const visit = (file: string) => {
    state.set(file, 'visiting');
    path.push(file);
    for (const next of graph.get(file) ?? []) {
      if (state.get(next) === 'visiting') found.push([...path.slice(path.indexOf(next)), next]);
      else if (!state.has(next)) visit(next);
    }
    path.pop();
    state.set(file, 'done');
  };
  for (const file of graph.keys()) if (!state.has(file)) visit(file);
  return found;
}

const folderOf = (file: string) => file.split('/')[0];

describe('the layering of src/', () => {
  const graph = importGraph();

  test('every import of src/ resolves to a file of src/', () => {
    const missing = [...graph].flatMap(([file, targets]) => targets.filter((t) => !graph.has(t)).map((t) => `${file} → ${t}`));
    assert.deepEqual(missing, []);
  });

  test('no import circle anywhere in src/', () => {
    assert.deepEqual(circles(graph).map((circle) => circle.join(' → ')), []);
  });

  test('the circle check finds a circle when there is one', () => {
    const sample = new Map([['a.ts', ['b.ts']], ['b.ts', ['c.ts']], ['c.ts', ['a.ts']], ['d.ts', ['a.ts']]]);
    assert.deepEqual(circles(sample), [['a.ts', 'b.ts', 'c.ts', 'a.ts']]);
  });

  test('the protocols do not import each other', () => {
    const crossing = [...graph].flatMap(([file, targets]) =>
      targets.filter((t) => ['pop3', 'smtp'].includes(folderOf(file)) && ['pop3', 'smtp'].includes(folderOf(t)) && folderOf(t) !== folderOf(file)).map((t) => `${file} → ${t}`),
    );
    assert.deepEqual(crossing, []);
  });

  test('policy, storage and the shared services import no protocol code', () => {
    const protocol = new Set(['pop3', 'smtp', 'cli', 'server']);
    const lower = ['policy', 'auth', 'accounts', 'mailstore', 'relay-auth', 'queue', 'acceptance', 'mail', 'net', 'fs', 'dns', 'dkim', 'delivery', 'sqlite', 'redis', 'postgres'];
    const leaks = [...graph].flatMap(([file, targets]) =>
      lower.includes(folderOf(file)) ? targets.filter((t) => protocol.has(folderOf(t))).map((t) => `${file} → ${t}`) : [],
    );
    assert.deepEqual(leaks, []);
  });
});
