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
await import('../src/cli/main.ts');
