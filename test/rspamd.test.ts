import assert from 'node:assert/strict';
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import { createServer, type Server, type Socket } from 'node:net';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { RspamdClient, type RspamdRequest, type RspamdVerdict } from '../src/filter/rspamd.ts';
import { silentLogger } from '../src/log/logger.ts';
import { missingEngine, RSPAMD_TEST_SETTINGS_ID, startRspamd, type RunningRspamd } from './helpers/engines.ts';

// The rspamd client against the real rspamd (Debian's package, started by startRspamd with
// its network checks off: see test/helpers/engines.ts), and against servers that misbehave
// in the ways a real one can: never answering, answering garbage or too much, closing kept-
// alive connections. A check never throws and never outlasts its timeout.

const GTUBE = 'XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X';

/**
 * A plain, well-formed message. `test` sets the X-Popgate-Test header the test rspamd reads:
 * "echo" puts the envelope rspamd parsed into the reply text, an action name forces it.
 */
function message(options: { test?: string; body?: string } = {}): Buffer {
  // A current date: rspamd scores a Date in the past or future.
  const date = new Date().toUTCString().replace('GMT', '+0000');
  const lines = [
    'From: Alice <alice@example.org>',
    'To: bob@example.com',
    'Subject: Lunch',
    `Date: ${date}`,
    `Message-ID: <${Math.random().toString(36).slice(2)}@example.org>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    ...(options.test ? [`X-Popgate-Test: ${options.test}`] : []),
    '',
    options.body ?? 'Hi Bob,\r\n\r\nShall we have lunch on Friday at noon?\r\n\r\nAlice',
    '',
  ];
  return Buffer.from(lines.join('\r\n'));
}

const ENVELOPE: Omit<RspamdRequest, 'message'> = {
  ip: '192.0.2.10',
  helo: 'mx.example.org',
  from: 'alice@example.org',
  recipients: ['bob@example.com'],
  hostname: 'mail.example.org',
};

function accepted(verdict: RspamdVerdict): Extract<RspamdVerdict, { ok: true }> {
  assert.ok(verdict.ok, `expected an answer, got: ${JSON.stringify(verdict)}`);
  return verdict;
}

function refused(verdict: RspamdVerdict): string {
  assert.ok(!verdict.ok, `expected a failure, got: ${JSON.stringify(verdict)}`);
  return verdict.reason;
}

/** The envelope as rspamd parsed it, from an "echo" answer (see RSPAMD_TEST_RULES). */
function echoed(verdict: RspamdVerdict): Record<string, unknown> {
  const { message: text } = accepted(verdict);
  assert.ok(text, 'the echo rule gave no reply text');
  return JSON.parse(text);
}

/** A logger whose lines are kept, to see what the client said. */
function recordingLogger() {
  const lines: { level: number; msg: string; reason?: string }[] = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n')) if (line) lines.push(JSON.parse(line));
      done();
    },
  });
  return { log: pino({ level: 'debug' }, stream), lines };
}

async function timed<T>(operation: () => Promise<T>): Promise<{ result: T; ms: number }> {
  const started = Date.now();
  const result = await operation();
  return { result, ms: Date.now() - started };
}

describe('the rspamd client against the real rspamd', { skip: missingEngine('rspamd'), timeout: 120_000 }, () => {
  let rspamd: RunningRspamd;
  let client: RspamdClient;

  before(async () => {
    rspamd = await startRspamd();
    client = new RspamdClient({ url: rspamd.url, timeoutMs: 10_000 }, silentLogger());
  });

  after(async () => {
    client?.close();
    await rspamd?.destroy();
  });

  test("GTUBE is rejected, with rspamd's reply text", async () => {
    const verdict = accepted(await client.check({ ...ENVELOPE, message: message({ body: `Test message.\r\n\r\n${GTUBE}` }) }));
    assert.equal(verdict.action, 'reject');
    assert.deepEqual(verdict.symbols, ['GTUBE']);
    assert.equal(verdict.message, 'Gtube pattern');
    assert.ok(verdict.score >= verdict.required, `score ${verdict.score} below ${verdict.required}`);
  });

  test('a clean message gets no action: with the network checks off, no content rule scores it', async () => {
    const verdict = accepted(await client.check({ ...ENVELOPE, message: message() }));
    assert.equal(verdict.action, 'no action');
    assert.equal(verdict.score, 0);
    assert.equal(verdict.required, 15, "Debian's reject threshold");
    // Symbols of score 0 that describe the message, in name order.
    assert.ok(verdict.symbols.includes('TO_MATCH_ENVRCPT_ALL'), verdict.symbols.join());
    assert.deepEqual([...verdict.symbols].sort(), verdict.symbols);
    // milter_headers (extended_spam_headers in the test configuration): headers to add, and
    // the same names (and an upstream X-Spam flag) to remove first.
    const added = new Map(verdict.addHeaders.map(({ name, value }) => [name, value]));
    assert.equal(added.get('X-Rspamd-Action'), 'no action');
    assert.match(added.get('X-Spamd-Result') ?? '', /^default: False \[0\.00 \/ 15\.00\];\r\n\t/);
    assert.ok(verdict.removeHeaders.includes('X-Spam'), verdict.removeHeaders.join());
    assert.equal(verdict.subject, undefined);
  });

  test('the IP, HELO, hostname, sender, every recipient, the user and the queue id reach rspamd', async () => {
    const recipients = ['bob@example.com', 'carol@example.com', 'dave@example.net'];
    const verdict = await client.check({ ...ENVELOPE, recipients, user: 'alice', queueId: 'Q7f3a9', message: message({ test: 'echo' }) });
    assert.deepEqual(echoed(verdict), {
      ip: '192.0.2.10',
      helo: 'mx.example.org',
      hostname: 'mail.example.org',
      from: 'alice@example.org',
      rcpt: recipients,
      user: 'alice',
      queue_id: 'Q7f3a9',
    });
    // rspamd's own log line of the scan says the same (not only the test rule).
    const line = await logged(() => rspamd.output().split('\n').find((entry) => entry.includes('qid: <Q7f3a9>') && entry.includes('rspamd_task_write_log')));
    assert.ok(line, 'no log line for the scan');
    assert.match(line, /ip: 192\.0\.2\.10, user: alice, from: <alice@example\.org>/);
    assert.match(line, /rcpts: <bob@example\.com,carol@example\.com,dave@example\.net>/);
  });

  test('an IPv6 client and the null sender', async () => {
    const envelope = echoed(await client.check({ ...ENVELOPE, ip: '2001:db8::25', from: '', message: message({ test: 'echo' }) }));
    assert.equal(envelope.ip, '2001:db8::25');
    // "<>" is rspamd's null sender: an empty address, not a missing one.
    assert.equal(envelope.from, '');
  });

  test('an internationalized domain goes as A-labels; a UTF-8 local part as its UTF-8 bytes', async () => {
    const verdict = await client.check({
      ...ENVELOPE,
      from: 'alice@bücher.example',
      recipients: ['bob@example.com', 'zoë@example.com'],
      queueId: 'Qutf8',
      message: message({ test: 'echo' }),
    });
    const envelope = echoed(verdict);
    assert.equal(envelope.from, 'alice@xn--bcher-kva.example');
    // rspamd 3.4's address grammar is ASCII: it logs the address, byte for byte as sent, and
    // scans without it (newer rspamd reads RFC 6531 addresses).
    const rcpt = envelope.rcpt as string[];
    if (rcpt.length === 1) assert.ok(await logged(() => rspamd.output().includes("bad rcpt address: 'zoë@example.com'") || undefined), 'rspamd did not see the UTF-8 bytes');
    else assert.deepEqual(rcpt, ['bob@example.com', 'zoë@example.com']);
  });

  test('every action rspamd can answer comes through as such; rewrite subject with the new Subject', async () => {
    for (const action of ['add header', 'rewrite subject', 'greylist', 'soft reject', 'reject'] as const) {
      const verdict = accepted(await client.check({ ...ENVELOPE, message: message({ test: action }) }));
      assert.equal(verdict.action, action);
      // The forcing rule's text is rspamd's messages.smtp_message.
      assert.match(verdict.message ?? '', /"ip":"192\.0\.2\.10"/);
      if (action === 'rewrite subject') assert.equal(verdict.subject, '*** SPAM *** Lunch');
      else assert.equal(verdict.subject, undefined);
    }
  });

  test("Settings-ID reaches rspamd: the settings' reject threshold comes back", async () => {
    const verdict = accepted(await client.check({ ...ENVELOPE, settingsId: RSPAMD_TEST_SETTINGS_ID, message: message() }));
    assert.equal(verdict.required, 500);
  });

  test('the controller answers /checkv2 with its password only', async () => {
    const withoutPassword = new RspamdClient({ url: rspamd.controllerUrl, timeoutMs: 10_000 }, silentLogger());
    const withPassword = new RspamdClient({ url: rspamd.controllerUrl, timeoutMs: 10_000, password: rspamd.controllerPassword }, silentLogger());
    try {
      assert.match(refused(await withoutPassword.check({ ...ENVELOPE, message: message() })), /HTTP 401/);
      assert.equal(accepted(await withPassword.check({ ...ENVELOPE, message: message() })).action, 'no action');
    } finally {
      withoutPassword.close();
      withPassword.close();
    }
  });

  test('rspamd stopped: ok false at once, logged once; started again: the same client works again', async () => {
    const { log, lines } = recordingLogger();
    const timeoutMs = 5000;
    const watched = new RspamdClient({ url: rspamd.url, timeoutMs }, log);
    try {
      accepted(await watched.check({ ...ENVELOPE, message: message() }));
      await rspamd.stop();
      for (let i = 0; i < 3; i++) {
        const { result, ms } = await timed(() => watched.check({ ...ENVELOPE, message: message() }));
        assert.match(refused(result), /connection refused/);
        assert.ok(ms < timeoutMs, `a refused connection took ${ms} ms`);
      }
      await rspamd.start();
      assert.equal(accepted(await watched.check({ ...ENVELOPE, message: message({ body: GTUBE }) })).action, 'reject');
      // One warning for the outage, the other failures at debug level, one line for the return.
      assert.deepEqual(
        lines.map((line) => [line.level, line.msg.split(';')[0]]),
        [[40, 'rspamd check failed'], [20, 'rspamd check failed'], [20, 'rspamd check failed'], [30, 'rspamd answers again']],
      );
    } finally {
      watched.close();
    }
  });
});

/** What `find` finds in rspamd's output, waiting up to 5 s: rspamd may log a scan after answering it. */
async function logged<T>(find: () => T | undefined): Promise<T | undefined> {
  for (const started = Date.now(); Date.now() - started < 5000; await new Promise((resolve) => setTimeout(resolve, 50))) {
    const found = find();
    if (found) return found;
  }
  return undefined;
}

/** A TCP server on loopback that does what `onConnection` says with each connection. */
async function tcpServer(onConnection: (socket: Socket) => void): Promise<{ url: string; connections: () => number; close: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  let count = 0;
  const server: Server = createServer((socket) => {
    count++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    onConnection(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    connections: () => count,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** An HTTP server on loopback answering each request with `handler`; keeps connections alive. */
async function httpServer(handler: (request: IncomingMessage, response: ServerResponse, body: Buffer) => void) {
  const requests: { headers: IncomingMessage['headers']; rawHeaders: string[]; body: Buffer }[] = [];
  let connections = 0;
  const server: HttpServer = createHttpServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const body = Buffer.concat(chunks);
      requests.push({ headers: request.headers, rawHeaders: request.rawHeaders, body });
      handler(request, response, body);
    });
  });
  server.on('connection', () => connections++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    connections: () => connections,
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

const ANSWER = { action: 'no action', score: 1.5, required_score: 15, symbols: { A: { score: 1 }, B: { score: 0.5 } } };

describe('the rspamd client against servers that misbehave', { timeout: 60_000 }, () => {
  const request = (): RspamdRequest => ({ ...ENVELOPE, message: [Buffer.from('Subject: x\r\n\r\n'), Buffer.from('body\r\n')] });

  test('a server that accepts and never answers: ok false after the timeout, for every check at once', async () => {
    const silent = await tcpServer(() => {});
    const client = new RspamdClient({ url: silent.url, timeoutMs: 300 }, silentLogger());
    try {
      const { result, ms } = await timed(() => Promise.all(Array.from({ length: 5 }, () => client.check(request()))));
      for (const verdict of result) assert.match(refused(verdict), /no answer within 300 ms/);
      assert.ok(ms >= 250 && ms < 5000, `settled after ${ms} ms`);
    } finally {
      client.close();
      await silent.close();
    }
  });

  test('an answer that stops half-way and never ends: ok false after the timeout', async () => {
    const stalled = await tcpServer((socket) => {
      socket.once('data', () => socket.write('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"action":'));
    });
    const client = new RspamdClient({ url: stalled.url, timeoutMs: 300 }, silentLogger());
    try {
      const { result, ms } = await timed(() => client.check(request()));
      assert.match(refused(result), /no answer within 300 ms/);
      assert.ok(ms < 5000, `settled after ${ms} ms`);
    } finally {
      client.close();
      await stalled.close();
    }
  });

  test('garbage instead of HTTP, a closed connection, HTTP errors, JSON that is not an answer: ok false, saying why', async () => {
    const cases: [string, (socket: Socket) => void, RegExp][] = [
      ['not HTTP', (socket) => socket.once('data', () => socket.end('hello there\r\n')), /rspamd: /],
      ['closed at once', (socket) => socket.destroy(), /rspamd: /],
      ['HTTP 500', (socket) => socket.once('data', () => socket.end('HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\noops\n')), /HTTP 500: oops/],
      ['not JSON', (socket) => socket.once('data', () => socket.end('HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nnot json')), /not JSON/],
    ];
    for (const [name, behaviour, reason] of cases) {
      const server = await tcpServer(behaviour);
      const client = new RspamdClient({ url: server.url, timeoutMs: 2000 }, silentLogger());
      try {
        assert.match(refused(await client.check(request())), reason, name);
      } finally {
        client.close();
        await server.close();
      }
    }
    const shapes: [unknown, RegExp][] = [
      [{ ...ANSWER, action: 'discard' }, /unexpected answer \(action: /],
      [{ ...ANSWER, score: '1.5' }, /unexpected answer \(score: /],
      [{ action: 'reject' }, /unexpected answer \(score: /],
      [{ ...ANSWER, symbols: { A: { score: null } } }, /unexpected answer \(symbols\.A\.score: /],
      [[ANSWER], /unexpected answer/],
    ];
    for (const [answer, reason] of shapes) {
      const server = await httpServer((_request, response) => response.end(JSON.stringify(answer)));
      const client = new RspamdClient({ url: server.url, timeoutMs: 2000 }, silentLogger());
      try {
        assert.match(refused(await client.check(request())), reason, JSON.stringify(answer));
      } finally {
        client.close();
        await server.close();
      }
    }
  });

  test('an answer over 1 MiB is cut off, whether its length is declared or not', async () => {
    const huge = Buffer.alloc(2 * 1024 * 1024, 0x20);
    const declared = await httpServer((_request, response) => response.end(huge));
    const chunked = await httpServer((_request, response) => {
      // No Content-Length: chunked, 64 KiB at a time, until the client gives up.
      const piece = Buffer.alloc(64 * 1024, 0x20);
      let sent = 0;
      const more = () => {
        while (sent < 32 * 1024 * 1024 && !response.destroyed) {
          sent += piece.length;
          if (!response.write(piece)) return void response.once('drain', more);
        }
        response.end();
      };
      response.on('error', () => {});
      more();
    });
    const clients = [declared, chunked].map((server) => new RspamdClient({ url: server.url, timeoutMs: 10_000 }, silentLogger()));
    try {
      assert.match(refused(await clients[0].check(request())), /answer of 2097152 bytes, more than 1048576/);
      assert.match(refused(await clients[1].check(request())), /answer longer than 1048576 bytes/);
    } finally {
      for (const client of clients) client.close();
      await declared.close();
      await chunked.close();
    }
  });

  test('the request: the message as the body, one Rcpt header per recipient, UTF-8 as bytes, no Password unless set', async () => {
    const server = await httpServer((_request, response) => response.end(JSON.stringify(ANSWER)));
    const client = new RspamdClient({ url: server.url, timeoutMs: 2000 }, silentLogger());
    try {
      accepted(await client.check({ ...request(), recipients: ['a@example.com', 'b@example.com', 'ü@example.com'], user: 'jürgen', queueId: 'Q1' }));
      const [sent] = server.requests;
      assert.equal(sent.body.toString(), 'Subject: x\r\n\r\nbody\r\n');
      assert.equal(sent.headers['content-length'], String(sent.body.length));
      const raw = (name: string) => sent.rawHeaders.filter((_, i) => i % 2 === 1 && sent.rawHeaders[i - 1] === name);
      // Node reads header bytes as Latin-1: back to bytes, then UTF-8.
      const utf8 = (value: string) => Buffer.from(value, 'latin1').toString('utf8');
      assert.deepEqual(raw('Rcpt').map(utf8), ['a@example.com', 'b@example.com', 'ü@example.com']);
      assert.deepEqual(raw('User').map(utf8), ['jürgen']);
      assert.deepEqual([raw('IP'), raw('Helo'), raw('From'), raw('Queue-Id'), raw('Hostname')], [['192.0.2.10'], ['mx.example.org'], ['alice@example.org'], ['Q1'], ['mail.example.org']]);
      assert.deepEqual([raw('Password'), raw('Settings-ID')], [[], []]);
    } finally {
      client.close();
      await server.close();
    }
  });

  test('a value with CR, LF or another control character is never sent, nor an IP that is not one', async () => {
    const server = await httpServer((_request, response) => response.end(JSON.stringify(ANSWER)));
    const client = new RspamdClient({ url: server.url, timeoutMs: 2000 }, silentLogger());
    try {
      const hostile: [Partial<RspamdRequest>, RegExp][] = [
        [{ helo: 'mx.example.org\r\nRcpt: victim@example.com' }, /the Helo value contains a control character/],
        [{ recipients: ['a@example.com', 'b@example.com\nPass: all'] }, /the Rcpt value/],
        [{ from: 'a@example.com\r' }, /the From value/],
        [{ user: 'alice\0' }, /the User value/],
        [{ queueId: 'Q\t1' }, /the Queue-Id value/],
        [{ ip: '192.0.2.10\r\nPass: all' }, /not an IP address/],
        [{ ip: 'mx.example.org' }, /not an IP address/],
      ];
      for (const [change, reason] of hostile) assert.match(refused(await client.check({ ...request(), ...change })), reason);
      assert.equal(server.connections(), 0, 'a request went out');
    } finally {
      client.close();
      await server.close();
    }
  });

  test('what rspamd asks to add must be well-formed header fields; its reply text becomes one short line', async () => {
    const answer = {
      ...ANSWER,
      action: 'rewrite subject',
      subject: 'spam\r\nBcc: everyone@example.com',
      messages: { smtp_message: `Go away\r\n250 fake ${'x'.repeat(600)}` },
      milter: {
        add_headers: {
          'X-Folded': { value: 'one;\r\n\ttwo', order: 0 },
          'X-Plain': 'text',
          'X-Twice': [{ value: 'first' }, 'second'],
          'X-Injected': { value: 'a\r\nBcc: everyone@example.com' },
          'X-Bare-LF': 'a\nb',
          'Bad Name': 'x',
        },
        remove_headers: { 'X-Spam': 0, 'DKIM-Signature': -1 },
      },
    };
    const server = await httpServer((_request, response) => response.end(JSON.stringify(answer)));
    const { log, lines } = recordingLogger();
    const client = new RspamdClient({ url: server.url, timeoutMs: 2000 }, log);
    try {
      const verdict = accepted(await client.check(request()));
      assert.deepEqual(verdict.addHeaders, [
        { name: 'X-Folded', value: 'one;\r\n\ttwo' },
        { name: 'X-Plain', value: 'text' },
        { name: 'X-Twice', value: 'first' },
        { name: 'X-Twice', value: 'second' },
      ]);
      assert.deepEqual(verdict.removeHeaders, ['X-Spam', 'DKIM-Signature']);
      assert.equal(verdict.subject, undefined);
      assert.equal(verdict.message?.length, 400);
      assert.match(verdict.message ?? '', /^Go away 250 fake x+\.\.\.$/);
      assert.deepEqual(verdict.symbols, ['A', 'B']);
      assert.equal(lines.filter((line) => line.level === 40).length, 4, 'one warning per field left out');
    } finally {
      client.close();
      await server.close();
    }
  });

  test('a server that keeps connections alive: one connection for many checks; one it closed is replaced', async () => {
    const requestsOnConnection = new WeakMap<object, number>();
    const server = await httpServer((request, response) => {
      const count = (requestsOnConnection.get(request.socket) ?? 0) + 1;
      requestsOnConnection.set(request.socket, count);
      // The third request on a connection: the server has closed it meanwhile (as after its
      // keep-alive timeout), so the request finds a closed connection.
      if (count === 3) return void request.socket.destroy();
      response.end(JSON.stringify(ANSWER));
    });
    const client = new RspamdClient({ url: server.url, timeoutMs: 2000 }, silentLogger());
    try {
      for (let i = 0; i < 2; i++) accepted(await client.check(request()));
      assert.equal(server.connections(), 1);
      accepted(await client.check(request()));
      assert.equal(server.connections(), 2, 'sent again on a new connection');
    } finally {
      client.close();
      await server.close();
    }
  });

  test('only http:// URLs', () => {
    assert.throws(() => new RspamdClient({ url: 'https://127.0.0.1:11333', timeoutMs: 1000 }, silentLogger()), /only http:\/\/ is supported/);
    assert.throws(() => new RspamdClient({ url: 'localhost:11333', timeoutMs: 1000 }, silentLogger()), /only http:\/\//);
  });
});
