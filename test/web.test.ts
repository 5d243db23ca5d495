import assert from 'node:assert/strict';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { after, before, describe, test } from 'node:test';
import { XMLParser } from 'fast-xml-parser';
import plist from 'plist';
import { Pop3Client } from './helpers/pop3-client.ts';
import { PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';
import { clientSetupRecords } from '../src/web/dns-records.ts';
import { mailSettings } from '../src/web/mail-settings.ts';
import { parseConfig } from '../src/config/load.ts';

// The web side over real sockets: automatic setup documents checked the way their clients
// read them, and every kind of bad input answered with a clear 4xx that changes nothing and
// leaks nothing. The pages themselves are checked in a real browser (web-browser.test.ts).

interface Response {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

function send(port: number, path: string, options: { method?: string; headers?: Record<string, string>; body?: string | Buffer; https?: boolean } = {}): Promise<Response> {
  return new Promise((resolve, reject) => {
    const request = (options.https ? httpsRequest : httpRequest)(
      { host: '127.0.0.1', port, path, method: options.method ?? 'GET', headers: options.headers, rejectUnauthorized: false },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => resolve({ status: response.statusCode!, headers: response.headers, body: Buffer.concat(chunks).toString('utf8') }));
      },
    );
    request.on('error', reject);
    request.end(options.body);
  });
}

const portOf = (address: string) => Number(address.split(':').pop());
const xml = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '@', parseTagValue: false, isArray: (name) => ['incomingServer', 'outgoingServer', 'Protocol', 'domain'].includes(name) });

/**
 * What Thunderbird's readFromXML (comm-central mail/components/accountcreation) insists on:
 * an emailProvider with an id, at least one usable incoming server, each server with a host
 * name, a port in 1–65535, a socketType and an authentication it knows, and a user name where
 * a login is used; servers it cannot read are skipped, so ours must all be readable.
 */
function assertThunderbirdReadable(text: string): { incoming: Record<string, string>[]; outgoing: Record<string, string>[] } {
  assert.match(text, /^<\?xml version="1.0" encoding="UTF-8"\?>/);
  const provider = xml.parse(text).clientConfig?.emailProvider;
  assert.ok(provider, 'clientConfig/emailProvider');
  assert.match(provider['@id'], /^[a-z0-9.-]+$/);
  assert.ok(provider.domain.length >= 1);
  const server = (entry: Record<string, string>, kind: 'incoming' | 'outgoing') => {
    assert.match(entry.hostname, /^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$/);
    const port = Number(entry.port);
    assert.ok(Number.isInteger(port) && port >= 1 && port <= 65535, `port ${entry.port}`);
    assert.ok(['plain', 'SSL', 'STARTTLS'].includes(entry.socketType), `socketType ${entry.socketType}`);
    const methods = ['password-cleartext', 'plain', 'password-encrypted', 'secure', 'GSSAPI', 'NTLM', 'OAuth2', 'TLS-client-cert', 'none', 'client-IP-address', ...(kind === 'outgoing' ? ['smtp-after-pop'] : [])];
    assert.ok(methods.includes(entry.authentication), `authentication ${entry.authentication}`);
    if (!['none', 'smtp-after-pop', 'client-IP-address'].includes(entry.authentication)) assert.ok(entry.username, 'username');
  };
  const incoming = provider.incomingServer as Record<string, string>[];
  const outgoing = (provider.outgoingServer ?? []) as Record<string, string>[];
  assert.ok(incoming.length > 0, 'an incoming server');
  for (const entry of incoming) {
    assert.equal(entry['@type'], 'pop3');
    server(entry, 'incoming');
  }
  for (const entry of outgoing) {
    assert.equal(entry['@type'], 'smtp');
    server(entry, 'outgoing');
  }
  return { incoming, outgoing };
}

const AUTODISCOVER = (address: string) =>
  `<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request><EMailAddress>${address}</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>`;

describe('web: automatic setup and bad input (plain HTTP, as the development server serves it)', () => {
  let server: TestServer;
  let web: number;
  let submission: number;

  before(async () => {
    server = await startTestServer({
      submission: { listen: ['127.0.0.1:0'] },
      http: { listen: ['127.0.0.1:0'] },
      web: { provider_name: 'Example Net <ISP>', provider_contact: 'help@example.com', trusted_proxies: ['127.0.0.2'] },
    });
    await server.addUser('alice@example.com');
    await server.app.accounts.addDomain('example.org');
    web = portOf(server.app.addresses.http[0]);
    submission = portOf(server.app.addresses.submission[0]);
  });
  after(() => server.close());

  test('Thunderbird autoconfig at both paths: POP3 first, submission with a login as the outgoing server', async () => {
    for (const path of ['/mail/config-v1.1.xml?emailaddress=alice%40example.com', '/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=alice%40example.com']) {
      const response = await send(web, path);
      assert.equal(response.status, 200, path);
      assert.match(response.headers['content-type']!, /^application\/xml/);
      const { incoming, outgoing } = assertThunderbirdReadable(response.body);
      assert.deepEqual(incoming.map((s) => [s.port, s.socketType]), [[String(server.pop3sPort), 'SSL'], [String(server.pop3Port), 'STARTTLS']]);
      assert.deepEqual([outgoing[0].port, outgoing[0].socketType, outgoing[0].authentication, outgoing[0].username], [String(submission), 'STARTTLS', 'password-cleartext', '%EMAILADDRESS%']);
      assert.match(response.body, /<emailProvider id="example.com">/);
      // The provider's name is escaped, not markup.
      assert.match(response.body, /Example Net &lt;ISP&gt;/);
    }
  });

  test('autoconfig finds the domain from the host name Thunderbird asks (autoconfig.<domain>)', async () => {
    const response = await send(web, '/mail/config-v1.1.xml', { headers: { host: 'autoconfig.example.org' } });
    assert.equal(response.status, 200);
    assert.match(response.body, /<emailProvider id="example.org">/);
  });

  test('autoconfig for a domain that is not local: 404, naming nothing else', async () => {
    const response = await send(web, '/mail/config-v1.1.xml?emailaddress=bob%40elsewhere.example');
    assert.equal(response.status, 404);
    assert.doesNotMatch(response.body, /example\.com|example\.org|alice/);
    assert.equal((await send(web, '/mail/config-v1.1.xml?emailaddress=not-an-address')).status, 400);
  });

  test('Outlook autodiscover (POX): any case of the path, POP3 and SMTP settings parsed back', async () => {
    for (const path of ['/autodiscover/autodiscover.xml', '/Autodiscover/Autodiscover.xml', '/AUTODISCOVER/AUTODISCOVER.XML']) {
      const response = await send(web, path, { method: 'POST', headers: { 'content-type': 'text/xml' }, body: AUTODISCOVER('Alice@Example.com') });
      assert.equal(response.status, 200, path);
      const account = xml.parse(response.body).Autodiscover.Response.Account;
      assert.equal(account.AccountType, 'email');
      assert.equal(account.Action, 'settings');
      const [pop3, smtp] = account.Protocol;
      assert.deepEqual([pop3.Type, pop3.Server, pop3.Port, pop3.SSL, pop3.LoginName], ['POP3', 'mail.example.test', String(server.pop3sPort), 'on', 'alice@example.com']);
      assert.deepEqual([smtp.Type, smtp.Port, smtp.AuthRequired, smtp.SMTPLast, smtp.Encryption], ['SMTP', String(submission), 'on', 'off', 'TLS']);
    }
  });

  test('autodiscover refuses a DTD (entity expansion), malformed XML, a huge body, other content types and non-local addresses', async () => {
    const laughs =
      '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>' +
      '<Autodiscover><Request><EMailAddress>&lol3;</EMailAddress></Request></Autodiscover>';
    const external = '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><Autodiscover><Request><EMailAddress>&x;</EMailAddress></Request></Autodiscover>';
    const post = (body: string | Buffer, type = 'text/xml') => send(web, '/autodiscover/autodiscover.xml', { method: 'POST', headers: { 'content-type': type }, body });
    for (const body of [laughs, external]) {
      const response = await post(body);
      assert.equal(response.status, 400);
      assert.match(response.body, /document type declarations and entities are not accepted/);
      assert.doesNotMatch(response.body, /lollol|root:/);
    }
    const malformed = await post('<Autodiscover><Request><EMailAddress>alice@example.com</Request>');
    assert.equal(malformed.status, 400);
    assert.match(malformed.body, /not well-formed/);
    const noAddress = await post('<Autodiscover><Request/></Autodiscover>');
    assert.equal(noAddress.status, 400);
    const deep = await post(`${'<a>'.repeat(40)}${'</a>'.repeat(40)}`);
    assert.equal(deep.status, 400);
    const huge = await post(Buffer.alloc(2 * 1024 * 1024, 'a'));
    assert.equal(huge.status, 413);
    assert.equal((await post(AUTODISCOVER('alice@example.com'), 'application/json')).status, 415);
    const foreign = await post(AUTODISCOVER('bob@elsewhere.example'));
    assert.equal(foreign.status, 404);
    assert.match(foreign.body, /<ErrorCode>600<\/ErrorCode>/);
    assert.doesNotMatch(foreign.body, /mail\.example\.test|example\.com/);
  });

  test('the Apple profile parses as a property list with one POP account for the address', async () => {
    const response = await send(web, '/setup/apple.mobileconfig?address=alice%40example.com');
    assert.equal(response.status, 200);
    assert.equal(response.headers['content-type'], 'application/x-apple-aspen-config');
    assert.equal(response.headers['content-disposition'], 'attachment; filename="alice_example.com.mobileconfig"');
    const profile = plist.parse(response.body) as Record<string, unknown>;
    assert.equal(profile.PayloadType, 'Configuration');
    const [account] = profile.PayloadContent as Record<string, unknown>[];
    assert.equal(account.PayloadType, 'com.apple.mail.managed');
    assert.equal(account.EmailAccountType, 'EmailTypePOP');
    assert.equal(account.EmailAddress, 'alice@example.com');
    assert.equal(account.IncomingMailServerPortNumber, server.pop3sPort);
    assert.equal(account.IncomingMailServerUseSSL, true);
    assert.equal(account.OutgoingMailServerPortNumber, submission);
    assert.equal(account.OutgoingMailServerAuthentication, 'EmailAuthPassword');
    assert.match(String(account.PayloadUUID), /^[0-9A-F]{8}-[0-9A-F]{4}-8[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}$/);
    // The same address, the same identifiers: installing it again replaces the account.
    assert.equal((await send(web, '/setup/apple.mobileconfig?address=alice%40example.com')).body, response.body);
  });

  test('header injection through the profile address is refused, and a non-local address is a 404', async () => {
    for (const address of ['alice%0d%0aX-Injected:%20yes@example.com', 'a%22%3B%20filename%3Devil@example.com', '%0aalice@example.com', '']) {
      const response = await send(web, `/setup/apple.mobileconfig?address=${address}`);
      assert.equal(response.status, 400, address);
      assert.equal(response.headers['x-injected'], undefined);
      assert.equal(response.headers['content-disposition'], undefined);
    }
    const foreign = await send(web, '/setup/apple.mobileconfig?address=bob%40elsewhere.example');
    assert.equal(foreign.status, 404);
    assert.match(foreign.body, /elsewhere\.example is not a mail domain served here/);
    assert.doesNotMatch(foreign.body, /example\.com|alice/);
  });

  test('path traversal in every path parameter and under /static/ gets a 4xx and no file', async () => {
    const paths = [
      '/setup/..%2f..%2f..%2fetc%2fpasswd',
      '/setup/%2e%2e',
      '/setup/..%5c..%5cpackage.json',
      '/setup/thunderbird%00',
      '/static/..%2fsite.ts',
      '/static/%2e%2e/%2e%2e/service.ts',
      '/static/../../../package.json',
      '/static/..%252f..%252fpackage.json',
    ];
    for (const path of paths) {
      const response = await send(web, path);
      assert.ok(response.status >= 400 && response.status < 500, `${path}: ${response.status}`);
      assert.doesNotMatch(response.body, /root:|registerSite|"dependencies"/, path);
    }
    assert.equal((await send(web, '/static/style.css')).status, 200);
  });

  test('a page for a domain that is not local: 404 naming only the domain asked about', async () => {
    const response = await send(web, '/?domain=elsewhere.example');
    assert.equal(response.status, 404);
    assert.match(response.body, /elsewhere\.example is not a mail domain served here/);
    assert.doesNotMatch(response.body, /example\.com|example\.org/);
  });

  test('a first visit to any help page sets no cookie: no session, no CSRF token, no form', async () => {
    for (const path of ['/', '/setup/thunderbird', '/pop-before-smtp', '/port-25', '/troubleshooting', '/can-i-send', '/?domain=example.org']) {
      const response = await send(web, path);
      assert.equal(response.status, 200, path);
      assert.equal(response.headers['set-cookie'], undefined, path);
      assert.doesNotMatch(response.body, /<form|name="csrf"/, path);
      assert.equal(response.headers['content-type'], 'text/html; charset=utf-8', path);
      assert.equal(response.headers.vary, 'Accept-Language, Cookie', path);
      assert.match(String(response.headers['content-security-policy']), /default-src 'self'/, path);
      assert.equal(response.headers['x-content-type-options'], 'nosniff', path);
    }
    // helmet's headers, worked out once, are on every answer: errors and files too.
    for (const path of ['/no-such-page', '/static/style.css', '/mail/config-v1.1.xml?emailaddress=alice%40example.com']) {
      const response = await send(web, path);
      assert.match(String(response.headers['content-security-policy']), /default-src 'self'/, path);
      assert.equal(response.headers['x-frame-options'], 'SAMEORIGIN', path);
      assert.equal(response.headers['strict-transport-security'], undefined, 'no HSTS over plain HTTP');
    }
  });

  test('the language switch: links back to the same page, a cookie that sticks, no open redirect', async () => {
    const english = await send(web, '/setup/thunderbird?domain=example.org', { headers: { 'accept-language': 'en' } });
    assert.equal(english.headers['content-language'], 'en');
    const link = /<a href="([^"]+)"[^>]* lang="ja"/.exec(english.body)![1].replaceAll('&amp;', '&');
    assert.equal(link, `/language?lang=ja&back=${encodeURIComponent('/setup/thunderbird?domain=example.org')}`);
    const switched = await send(web, link);
    assert.equal(switched.status, 303);
    assert.equal(switched.headers.location, '/setup/thunderbird?domain=example.org');
    assert.match(String(switched.headers['set-cookie']), /^popgate_lang=ja; Max-Age=\d+; Path=\/; HttpOnly; SameSite=Lax$/);
    const cookie = String(switched.headers['set-cookie']).split(';')[0];
    // The choice wins over Accept-Language, on this page and the next.
    for (const path of ['/setup/thunderbird?domain=example.org', '/troubleshooting', '/can-i-send']) {
      const japanese = await send(web, path, { headers: { 'accept-language': 'en', cookie } });
      assert.equal(japanese.headers['content-language'], 'ja', path);
      assert.match(japanese.body, /<html lang="ja">/, path);
    }
    // Only a path of this site: another host, a scheme-relative or a backslashed one goes home.
    for (const back of ['//evil.example/', 'https://evil.example/', '/\\evil.example', '/\r\nX-Injected: yes']) {
      const answer = await send(web, `/language?lang=en&back=${encodeURIComponent(back)}`);
      assert.equal(answer.status, 303, back);
      assert.equal(answer.headers.location, '/', back);
      assert.equal(answer.headers['x-injected'], undefined);
    }
    assert.equal((await send(web, '/language?lang=fr&back=/')).status, 400);
    assert.equal((await send(web, '/language?lang=ja&back=/', { method: 'POST' })).status, 404, 'the switch is a link now, not a form');
  });

  test('a help page is the same for every visitor of one place, and differs by language, domain and ?domain=', async () => {
    const get = (path: string, headers: Record<string, string> = {}) => send(web, path, { headers: { 'accept-language': 'en', ...headers } });
    const first = await get('/troubleshooting');
    assert.equal((await get('/troubleshooting')).body, first.body);
    // The case of the path as sent (the routes are case-insensitive) is not a page of its own.
    assert.equal((await get('/TroubleShooting')).body, first.body);
    assert.notEqual((await get('/troubleshooting', { 'accept-language': 'ja' })).body, first.body);
    const byHost = await get('/troubleshooting', { host: 'mail.example.org' });
    assert.match(byHost.body, /you@example\.org/);
    assert.doesNotMatch(byHost.body, /\?domain=/);
    const named = await get('/troubleshooting?domain=Example.ORG');
    assert.match(named.body, /you@example\.org/);
    assert.match(named.body, /href="\/\?domain=example\.org"/);
    // The host name is visitor input: one that is no local domain gets the page of none, as before.
    const unknownHost = await get('/troubleshooting', { host: 'unknown.example' });
    assert.equal(unknownHost.status, 200);
    assert.match(unknownHost.body, /you@example\.com/);
  });

  test('"Can I send now?" answers for the real client: X-Forwarded-For only from a trusted proxy; never a user name', async () => {
    const direct = await send(web, '/can-i-send', { headers: { 'x-forwarded-for': '198.51.100.7' } });
    assert.match(direct.body, /<strong id="client-ip">127\.0\.0\.1<\/strong>/, 'an untrusted peer cannot claim another address');
    assert.match(direct.body, /answer-no/);
    const pop3 = await Pop3Client.connect(server.pop3Port);
    await pop3.line();
    assert.match(await pop3.login('alice@example.com', PASSWORD), /^\+OK/);
    await pop3.command('QUIT');
    const granted = await send(web, '/can-i-send');
    assert.match(granted.body, /answer-yes/);
    assert.match(granted.body, /about 10 more minutes/);
    assert.doesNotMatch(granted.body, /alice/);
    // Through the trusted proxy (127.0.0.2): the client it names, which holds no grant.
    const proxied = await new Promise<Response>((resolve, reject) => {
      const request = httpRequest({ host: '127.0.0.1', port: web, path: '/can-i-send', localAddress: '127.0.0.2', headers: { 'x-forwarded-for': '198.51.100.7' } }, (response) => {
        let body = '';
        response.on('data', (chunk) => (body += chunk));
        response.on('end', () => resolve({ status: response.statusCode!, headers: response.headers, body }));
      });
      request.on('error', reject);
      request.end();
    });
    assert.match(proxied.body, /<strong id="client-ip">198\.51\.100\.7<\/strong>/);
    assert.match(proxied.body, /answer-no/);
  });

  test('health checks', async () => {
    assert.equal((await send(web, '/healthz/live')).status, 200);
    const ready = await send(web, '/healthz/ready');
    assert.equal(ready.status, 200);
    assert.equal(ready.body, 'ready\n');
  });
});

describe('web: HTTPS with the mail certificate, HTTP redirecting to it', () => {
  let server: TestServer;
  let http: number;
  let https: number;

  before(async () => {
    server = await startTestServer({ smtp: { listen: ['127.0.0.1:0'] }, http: { listen: ['127.0.0.1:0'] }, https: { listen: ['127.0.0.1:0'] } });
    await server.addUser('alice@example.com');
    http = portOf(server.app.addresses.http[0]);
    https = portOf(server.app.addresses.https[0]);
  });
  after(() => server.close());

  test('HTTPS serves the pages with HSTS; HTTP redirects them, but not autoconfig and health checks', async () => {
    const secure = await send(https, '/', { https: true });
    assert.equal(secure.status, 200);
    assert.match(secure.headers['strict-transport-security']!, /max-age=/);
    assert.equal(secure.headers['set-cookie'], undefined);
    const switched = await send(https, '/language?lang=ja&back=/', { https: true });
    assert.match(String(switched.headers['set-cookie']), /^popgate_lang=ja;.*; Secure/);
    const redirected = await send(http, '/can-i-send?x=1', { headers: { host: 'mail.example.com' } });
    assert.equal(redirected.status, 301);
    assert.equal(redirected.headers.location, `https://mail.example.com:${https}/can-i-send?x=1`);
    const injected = await send(http, '/', { headers: { host: 'evil.example/"><x' } });
    assert.equal(injected.status, 301);
    assert.equal(injected.headers.location, `https://mail.example.test:${https}/`);
    const autoconfig = await send(http, '/mail/config-v1.1.xml?emailaddress=alice%40example.com');
    assert.equal(autoconfig.status, 200);
    assertThunderbirdReadable(autoconfig.body);
    assert.equal((await send(http, '/healthz/live')).status, 200);
  });

  test('where only POP before SMTP is offered: autoconfig says smtp-after-pop, autodiscover SMTPLast on', async () => {
    const { outgoing } = assertThunderbirdReadable((await send(https, '/mail/config-v1.1.xml?emailaddress=alice%40example.com', { https: true })).body);
    assert.deepEqual(outgoing.map((s) => [s.port, s.authentication]), [[String(server.smtpPort), 'smtp-after-pop']]);
    const response = await send(https, '/autodiscover/autodiscover.xml', { https: true, method: 'POST', headers: { 'content-type': 'text/xml' }, body: AUTODISCOVER('alice@example.com') });
    const smtp = xml.parse(response.body).Autodiscover.Response.Account.Protocol[1];
    assert.deepEqual([smtp.Type, smtp.Port, smtp.AuthRequired, smtp.SMTPLast], ['SMTP', String(server.smtpPort), 'off', 'on']);
    const profile = plist.parse((await send(https, '/setup/apple.mobileconfig?address=alice%40example.com', { https: true })).body) as { PayloadContent: Record<string, unknown>[] };
    assert.equal(profile.PayloadContent[0].OutgoingMailServerAuthentication, 'EmailAuthNone');
  });
});

test('popgate dns records: autoconfig and autodiscover CNAMEs, RFC 6186 SRV with "." for what is not offered', () => {
  const config = parseConfig(
    { hostname: 'mail.example.net', pop3: { listen: ['0.0.0.0:110'] }, pop3s: { listen: ['0.0.0.0:995'] }, submission: { listen: ['0.0.0.0:587'] }, tls: { self_signed: true } },
    'test',
  );
  assert.deepEqual(clientSetupRecords(mailSettings(config), 'example.com', 443), [
    '; example.com: automatic setup of mail programs (see docs/web.md)',
    'autoconfig.example.com. 3600 IN CNAME mail.example.net.',
    'autodiscover.example.com. 3600 IN CNAME mail.example.net.',
    '_autodiscover._tcp.example.com. 3600 IN SRV 0 1 443 mail.example.net.',
    '_submissions._tcp.example.com. 3600 IN SRV 0 0 0 .',
    '_submission._tcp.example.com. 3600 IN SRV 10 1 587 mail.example.net.',
    '_pop3s._tcp.example.com. 3600 IN SRV 0 1 995 mail.example.net.',
    '_pop3._tcp.example.com. 3600 IN SRV 10 1 110 mail.example.net.',
    '_imaps._tcp.example.com. 3600 IN SRV 0 0 0 .',
    '_imap._tcp.example.com. 3600 IN SRV 0 0 0 .',
  ]);
});
