import assert from 'node:assert/strict';
import { test } from 'node:test';
import { virtualSize } from '../src/mailstore/maildir.ts';
import { MultilineEncoder } from '../src/pop3/transfer.ts';

// The encoder must give the same bytes however the file is cut into chunks.

function reference(text: string, bodyLines = Infinity): string {
  const normalized = text.replace(/\r?\n/g, '\n');
  const lines = normalized.split('\n');
  const unterminated = !normalized.endsWith('\n');
  if (!unterminated) lines.pop();
  const out: string[] = [];
  let inHeader = true;
  let left = bodyLines;
  for (const line of lines) {
    if (!inHeader) {
      if (left <= 0) break;
      left--;
    }
    out.push((line.startsWith('.') ? '.' : '') + line + '\r\n');
    if (inHeader && line === '') {
      inHeader = false;
      if (bodyLines === 0) break;
    }
  }
  return out.join('');
}

function encode(input: Buffer, cuts: number[], bodyLines = Infinity): string {
  const encoder = new MultilineEncoder(bodyLines);
  const out: Buffer[] = [];
  let start = 0;
  for (const cut of [...cuts, input.length]) {
    out.push(...encoder.push(input.subarray(start, cut)));
    start = cut;
    if (encoder.done) break;
  }
  out.push(...encoder.end());
  return Buffer.concat(out).toString('latin1');
}

let seed = 42;
function random(): number {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) / 2 ** 32;
}

function randomMessage(): string {
  const pieces = ['Subject: x', 'From: a@b.c', '', '.', '..', '.hidden', 'text', 'a.b', ' ', 'x'.repeat(50)];
  const ends = ['\r\n', '\n'];
  let text = '';
  const count = 1 + Math.floor(random() * 30);
  for (let i = 0; i < count; i++) text += pieces[Math.floor(random() * pieces.length)] + ends[Math.floor(random() * 2)];
  if (random() < 0.3) text += 'unterminated last line';
  return text;
}

test('CRLF, LF and mixed files all come out as CRLF with dot-stuffing, whatever the chunking', () => {
  for (let round = 0; round < 2000; round++) {
    const text = randomMessage();
    const input = Buffer.from(text, 'latin1');
    const cuts = [...new Set(Array.from({ length: Math.floor(random() * 6) }, () => Math.floor(random() * input.length)))].sort((a, b) => a - b);
    assert.equal(encode(input, cuts), reference(text), JSON.stringify({ text, cuts }));
  }
});

test('TOP line limits agree with the reference for every chunking', () => {
  for (let round = 0; round < 1000; round++) {
    const text = randomMessage();
    const input = Buffer.from(text, 'latin1');
    const lines = Math.floor(random() * 5);
    const cuts = [...new Set(Array.from({ length: Math.floor(random() * 6) }, () => Math.floor(random() * input.length)))].sort((a, b) => a - b);
    assert.equal(encode(input, cuts, lines), reference(text, lines), JSON.stringify({ text, cuts, lines }));
  }
});

test('virtualSize counts the octets RETR sends before byte-stuffing', () => {
  for (let round = 0; round < 1000; round++) {
    const text = randomMessage();
    const expected = Buffer.byteLength(reference(text).replace(/^\./gm, ''), 'latin1');
    assert.equal(virtualSize(Buffer.from(text, 'latin1'), -1, true), expected, JSON.stringify(text));
  }
});

test('a line that is only "." is stuffed to ".."', () => {
  assert.equal(encode(Buffer.from('A: b\r\n\r\n.\r\n..\r\n'), []), 'A: b\r\n\r\n..\r\n...\r\n');
});
