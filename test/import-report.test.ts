import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { formatBytes, ImportReport, ProgressBar } from '../src/import/report.ts';

// What an operator sees of an import: a progress bar only on a terminal, and the summary.

/** A stream that says it is a terminal of `columns` columns and keeps what is written to it. */
function terminal(columns: number, isTTY = true): { stream: NodeJS.WriteStream; written: () => string } {
  const stream = Object.assign(new PassThrough(), { isTTY, columns }) as unknown as NodeJS.WriteStream;
  let text = '';
  stream.on('data', (chunk) => (text += chunk));
  return { stream, written: () => text };
}

test('on a terminal the bar is redrawn in place, within the width, reaches 100% and is cleared at the end', async () => {
  const { stream, written } = terminal(100);
  const bar = new ProgressBar(stream);
  bar.start(3);
  bar.label('alice@example.test');
  for (let i = 0; i < 3; i++) bar.step(2048);
  bar.finish();
  await new Promise((resolve) => setImmediate(resolve));
  const draws = written().split('\r\x1b[K').filter(Boolean);
  assert.ok(draws.length >= 2, `drawn at the start and at the end: ${JSON.stringify(written())}`);
  assert.match(draws[0], /^\[\.{30}\] {3}0% 0\/3 messages 0 B/);
  assert.match(draws.at(-1)!, /^\[#{30}\] 100% 3\/3 messages 6\.0 KiB alice@example\.test$/);
  for (const draw of draws) assert.ok(draw.length < 100, `fits the terminal: ${JSON.stringify(draw)}`);
  assert.ok(written().endsWith('\r\x1b[K'), 'cleared, so the summary starts on a clean line');
  assert.doesNotMatch(written(), /\n/, 'never a new line');

  // A narrow terminal: cut short of the last column, so the line never wraps.
  const narrow = terminal(40);
  const short = new ProgressBar(narrow.stream);
  short.start(1);
  short.label('alice@example.test');
  short.step(1);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(narrow.written().split('\r\x1b[K').at(-1), '[##############################] 100% 1', '39 columns of 40');
});

test('a total that grows as sources are reached; nothing at all when not on a terminal', async () => {
  const { stream, written } = terminal(200);
  const bar = new ProgressBar(stream);
  bar.start(0);
  bar.grow(4);
  for (let i = 0; i < 4; i++) bar.step(10);
  await new Promise((resolve) => setImmediate(resolve));
  assert.match(written().split('\r\x1b[K').at(-1)!, /100% 4\/4 messages 40 B/);

  const piped = terminal(200, false);
  const quiet = new ProgressBar(piped.stream);
  quiet.start(2);
  quiet.step(1);
  quiet.step(1);
  quiet.finish();
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(piped.written(), '', 'a log file gets the summary only');
});

test('the summary: users, messages, bytes, hard links, time and rate, notes, and each skipped thing with its reason', () => {
  const report = new ImportReport();
  report.usersCreated = 2;
  report.usersExisting = 1;
  report.messagesImported = 300;
  report.messagesAlready = 5;
  report.messagesLinked = 299;
  report.bytes = 3 * 1024 * 1024;
  report.notes.push('bob@example.test: 1 message(s) Dovecot had not listed yet (no client has seen them) get new UIDLs');
  report.skip('carol@example.test', 'user', '/vmail/dovecot-uidlist is damaged');
  assert.deepEqual(report.lines(false, 2), [
    'users: 2 created, 1 already there',
    'messages: 300 imported (3.0 MiB, 299 as hard links), 5 imported before in 2.0 s, 150 messages/s',
    'note: bob@example.test: 1 message(s) Dovecot had not listed yet (no client has seen them) get new UIDLs',
    'skipped: 1',
    '  carol@example.test: user: /vmail/dovecot-uidlist is damaged',
  ]);
  assert.deepEqual(report.lines(true, 2).slice(0, 2), ['users: 2 would be created, 1 already there', 'messages: 300 would be imported (3.0 MiB, 299 as hard links), 5 imported before']);
  assert.deepEqual([0, 1023, 1024, 5 * 1024 ** 3].map(formatBytes), ['0 B', '1023 B', '1.0 KiB', '5.00 GiB']);
});
