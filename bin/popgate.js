#!/usr/bin/env node
// Entry for the installed `popgate` command. The sources are TypeScript run by
// Node's type stripping, which needs Node.js 24 or newer.
const major = Number(process.versions.node.split('.')[0]);
if (major < 24) {
  console.error(`popgate needs Node.js 24 or newer (this is ${process.version}); run it through npm (npm run popgate -- ...) to use the pinned runtime.`);
  process.exit(2);
}
await import('../src/cli/main.ts');
