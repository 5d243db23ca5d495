#!/usr/bin/env -S node --max-semi-space-size=1
// Entry for the installed `popgate` command. The sources are TypeScript run by
// Node's type stripping, which needs Node.js 24 or newer. A young generation of 1 MiB (V8's
// semi-space) stays resident: after a large mailbox listing the default one grows to many
// MiB whose pages the kernel faults in again and again, which halved single-client POP3
// RETR rates (docs/benchmarks.md).
const major = Number(process.versions.node.split('.')[0]);
if (major < 24) {
  console.error(`popgate needs Node.js 24 or newer (this is ${process.version}); run it through npm (npm run popgate -- ...) to use the pinned runtime.`);
  process.exit(2);
}
// Node strips the types of every source file as it loads it, with a compiler of its own (in
// WebAssembly) that then stays in memory. With the compile cache on, a process whose sources are
// unchanged since an earlier start takes the stripped code, compiled, from the cache instead: it
// never loads that compiler, which saves some 27 MB of memory in every process (the primary and
// each worker) and part of the start-up. The cache lives in NODE_COMPILE_CACHE if set, else in
// the system's temporary folder; NODE_DISABLE_COMPILE_CACHE=1 turns it off. A cache that cannot
// be written costs nothing but the saving.
const { enableCompileCache } = await import('node:module');
enableCompileCache?.();
await import('../src/cli/main.ts');
