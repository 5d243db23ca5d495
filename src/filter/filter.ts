import type { DnsLists, ListHit, ListLookup as ListAnswer } from './dns-lists.ts';
import type { GreylistVerdict, Greylisting } from './greylist.ts';
import type { RspamdClient, RspamdVerdict } from './rspamd.ts';
import type { AccountEvents } from '../accounts/events.ts';
import type { Logger } from '../log/logger.ts';
import { NetworkList } from '../net/ip.ts';
import { headerEnd, withoutFields, withoutForgedResults, type SenderAuthentication, type SenderChecks } from './authentication.ts';
import type { DomainSettings, DomainSettingsStore } from './domain-settings.ts';

// Inbound filtering of mail for local mailboxes on the port 25 role, in the order the SMTP
// dialogue allows (postscreen, Haraka and mox decide in the same places):
//
//   greeting  an early talker (pregreet test) is refused; the client's address is looked up in
//             the DNS blocklists and allowlists meanwhile;
//   RCPT      a listing in a "reject" zone refuses, with the zone named; greylisting defers a
//             first attempt (451) unless the client is allowlisted;
//   DATA end  SPF, DKIM, DMARC and ARC (mailauth); DMARC p=reject failing is refused (550)
//             where the domain enforces it, p=quarantine marked; rspamd, when configured,
//             gives its action and score; what is not refused is marked (X-Spam-Flag,
//             X-Spam-Status, an optional subject tag) and gets Authentication-Results.
//
// Clients that are never filtered: POP-before-SMTP grant holders, SMTP AUTH users and trusted
// networks (no blocklists, greylisting or early-talker refusal, and no refusal for their
// authentication results); their mail still gets Authentication-Results. A check that cannot
// be made (DNS timeout, rspamd down) never refuses permanently: it is accepted (the headers
// say temperror) or deferred with 451, as configured.
//
// Decisions are data; the SMTP session words them (src/smtp/replies.ts filterReply).

/** The DNS lists the filter asks (src/filter/dns-lists.ts). */
export type ListLookup = Pick<DnsLists, 'lookup'>;

/** Greylisting (src/filter/greylist.ts). */
export type GreylistCheck = Pick<Greylisting, 'check'>;

/** rspamd (src/filter/rspamd.ts). */
export type RspamdCheck = Pick<RspamdClient, 'check'>;

export interface FilterSettings {
  hostname: string;
  dmarc: 'enforce' | 'mark' | 'off';
  spfFail: 'reject' | 'mark' | 'off';
  temporaryErrors: 'accept' | 'defer';
  greylisting: boolean;
  pregreetDelayMs: number;
  spamScore: number;
  subjectTag: string;
  /** Networks never filtered (auth.trusted_networks). */
  trustedNetworks: readonly string[];
  rspamd?: { onFailure: 'accept' | 'defer'; outbound: boolean };
}

export interface FilterDependencies {
  /** In this thread or on a thread of its own (src/filter/check-thread.ts). */
  authenticator: SenderChecks;
  lists?: ListLookup;
  greylisting?: GreylistCheck;
  rspamd?: RspamdCheck;
  domains: DomainSettingsStore;
  /** Announcements of changes, so per-domain settings are forgotten at once. */
  events?: AccountEvents;
  log: Logger;
}

/** Why a client or a message is refused or deferred. */
export type FilterRefusal =
  | { reason: 'early-talker' }
  | { reason: 'listed'; zone: string; ip: string }
  | { reason: 'greylisted'; retryAfterMs: number }
  | { reason: 'dmarc'; domain: string }
  | { reason: 'spf'; domain: string }
  | { reason: 'spam'; text?: string }
  | { reason: 'temporary'; what: string };

export type FilterDecision = { ok: true } | { ok: false; permanent: boolean; refusal: FilterRefusal };

/** What the filter knows of a client, from its connection on. */
export interface FilterClient {
  ip: string;
  /** The DNS list answers, looked up while the greeting was waited for. */
  lists?: Promise<ListAnswer>;
}

export interface MessageContext {
  client: FilterClient;
  helo: string;
  sender: string;
  /** The local mailboxes (and addresses as given) the message goes to. */
  recipients: string[];
  /** Never filtered: a grant holder, an SMTP AUTH user or a trusted network. */
  exempt: boolean;
  user?: string;
}

export type MessageDecision =
  | {
      ok: true;
      /** Authentication-Results, Received-SPF and the spam marks, to put on top of local copies. */
      headers: Buffer;
      /** The message for local mailboxes: forged Authentication-Results gone, the subject tagged. */
      content: Buffer;
      spam: boolean;
    }
  | { ok: false; permanent: boolean; refusal: FilterRefusal };

/** Scores of popgate's own tests (rspamd's score replaces their sum when rspamd answers). */
const SCORES = {
  DMARC_REJECT: 6,
  DMARC_QUARANTINE: 5,
  SPF_FAIL: 3,
  SPF_SOFTFAIL: 1,
  DKIM_FAIL: 1,
  ARC_FAIL: 1,
} as const;

/** The spam marks popgate adds to local copies; any the message brings are removed. */
const SPAM_MARKS = ['x-spam-flag', 'x-spam-status', 'x-spam'];

/** Header fields rspamd asks to remove, except those that carry the message itself. */
function rspamdRemovals(rspamd: RspamdVerdict | undefined): string[] {
  if (!rspamd?.ok) return [];
  return rspamd.removeHeaders.map((name) => name.toLowerCase()).filter((name) => !KEPT_FIELDS.has(name));
}
const KEPT_FIELDS = new Set(['from', 'to', 'cc', 'subject', 'date', 'message-id', 'received', 'return-path', 'mime-version', 'content-type', 'content-transfer-encoding', 'dkim-signature', 'authentication-results']);

/** rspamd's greylisting action names no delay; its own default is 5 minutes. */
const RSPAMD_GREYLIST_MS = 300_000;

/** Per-domain settings are remembered this long (and forgotten at once on an announcement). */
const SETTINGS_MEMO_MS = 5000;

/**
 * How many times each verdict was reached, for the metrics endpoint: keys are a check and its
 * result ("spf" → "pass", "message" → "refused", "dnsbl" → "refused", "greylist" → "deferred",
 * "pregreet" → "refused", "rspamd" → an action or "unavailable").
 */
export class FilterCounts {
  readonly #counts = new Map<string, number>();

  add(check: string, result: string): void {
    const key = `${check}\0${result}`;
    this.#counts.set(key, (this.#counts.get(key) ?? 0) + 1);
  }

  /** Every count so far, as { check, result, count }. */
  entries(): { check: string; result: string; count: number }[] {
    return [...this.#counts].map(([key, count]) => {
      const [check, result] = key.split('\0');
      return { check, result, count };
    });
  }
}

export class InboundFilter {
  /** Verdicts counted for the metrics endpoint. */
  readonly counts = new FilterCounts();
  readonly #settings: FilterSettings;
  readonly #deps: FilterDependencies;
  readonly #trusted: NetworkList;
  readonly #domainMemo = new Map<string, { settings: DomainSettings; until: number }>();

  constructor(settings: FilterSettings, deps: FilterDependencies) {
    this.#settings = settings;
    this.#deps = deps;
    this.#trusted = new NetworkList(settings.trustedNetworks);
    void deps.events?.subscribe((change) => {
      if (change.kind === 'domain') this.#domainMemo.clear();
    });
  }

  /** How long the greeting waits on port 25 (the pregreet test); 0: not at all. */
  get pregreetDelayMs(): number {
    return this.#settings.pregreetDelayMs;
  }

  /** A new client on port 25: its DNS list lookups start now, to be ready by RCPT. */
  client(ip: string): FilterClient {
    const lists = this.#deps.lists && !this.#trusted.has(ip) ? this.#deps.lists.lookup(ip) : undefined;
    lists?.catch(() => {}); // awaited (or not) later
    return { ip, lists };
  }

  isTrusted(ip: string): boolean {
    return this.#trusted.has(ip);
  }

  /** A client that talked before the greeting (and is not exempt): refused. */
  earlyTalker(client: FilterClient): FilterDecision {
    if (this.#trusted.has(client.ip)) return { ok: true };
    this.counts.add('pregreet', 'refused');
    this.#deps.log.info({ event: 'filter', check: 'pregreet', ip: client.ip, action: 'refused' }, 'client talked before the greeting');
    return { ok: false, permanent: true, refusal: { reason: 'early-talker' } };
  }

  /** At RCPT TO of a local recipient: blocklists, then greylisting. */
  async recipient(context: MessageContext, recipient: string): Promise<FilterDecision> {
    if (context.exempt) return { ok: true };
    const { client } = context;
    const lists = client.lists ? await client.lists : { hits: [], unanswered: [] };
    const blocking = lists.hits.find((hit) => hit.action === 'reject');
    const allowed = lists.hits.some((hit) => hit.action === 'allow');
    if (blocking && !allowed) {
      this.counts.add('dnsbl', 'refused');
      this.#deps.log.info({ event: 'filter', check: 'dnsbl', ip: client.ip, zone: blocking.zone, code: blocking.code, from: context.sender, to: recipient, action: 'refused' }, 'client listed');
      return { ok: false, permanent: true, refusal: { reason: 'listed', zone: blocking.zone, ip: client.ip } };
    }
    if (!this.#deps.greylisting || allowed) return { ok: true };
    const settings = await this.#domainSettings(domainOf(recipient));
    const greylisting = settings.greylisting === undefined ? this.#settings.greylisting : settings.greylisting === 'true';
    if (!greylisting) return { ok: true };
    let verdict: GreylistVerdict;
    try {
      verdict = await this.#deps.greylisting.check(client.ip, context.sender, recipient);
    } catch (error) {
      // Greylisting only ever delays: without its store, mail goes through (and it is said once per message).
      this.#deps.log.error({ event: 'filter', check: 'greylist', ip: client.ip, err: error }, 'greylisting unavailable: accepted without it');
      return { ok: true };
    }
    if (verdict.pass) return { ok: true };
    this.counts.add('greylist', 'deferred');
    this.#deps.log.info({ event: 'filter', check: 'greylist', ip: client.ip, from: context.sender, to: recipient, first: verdict.first, action: 'deferred' }, 'greylisted');
    return { ok: false, permanent: false, refusal: { reason: 'greylisted', retryAfterMs: verdict.retryAfterMs } };
  }

  /** After DATA: authentication, rspamd, the verdict, and the message as local mailboxes get it. */
  async message(context: MessageContext, content: readonly Buffer[], queueId?: string): Promise<MessageDecision> {
    const original = content.length === 1 ? content[0] : Buffer.concat(content);
    const message = withoutForgedResults(original, this.#settings.hostname);
    const [auth, lists, rspamd] = await Promise.all([
      this.#deps.authenticator.check({ message, ip: context.client.ip, helo: context.helo, sender: context.sender }),
      context.client.lists ?? Promise.resolve({ hits: [], unanswered: [] }),
      this.#deps.rspamd && (!context.exempt || this.#settings.rspamd?.outbound)
        ? this.#deps.rspamd.check({ message, ip: context.client.ip, helo: context.helo, from: context.sender, recipients: context.recipients, user: context.user, queueId })
        : Promise.resolve(undefined),
    ]);
    const settings = await this.#strictest(context.recipients);
    const tests: string[] = [];
    let score = 0;
    const add = (test: keyof typeof SCORES | string, points: number) => {
      tests.push(test);
      score += points;
    };

    // DMARC (RFC 7489 §6.6.2): the author domain's policy, applied as the recipients' domains want.
    let refusal: MessageDecision | undefined;
    if (auth.dmarc === 'fail' && settings.dmarc !== 'off') {
      if (auth.dmarcPolicy === 'reject') {
        if (settings.dmarc === 'enforce' && !context.exempt) refusal = { ok: false, permanent: true, refusal: { reason: 'dmarc', domain: auth.fromDomain ?? '' } };
        add('DMARC_REJECT', SCORES.DMARC_REJECT);
      } else if (auth.dmarcPolicy === 'quarantine') add('DMARC_QUARANTINE', SCORES.DMARC_QUARANTINE);
    }
    // SPF -all failing, with no aligned DKIM signature to vouch for the message.
    if (auth.spf === 'fail' && !auth.alignedDkim && settings.spfFail !== 'off') {
      if (settings.spfFail === 'reject' && !context.exempt) refusal ??= { ok: false, permanent: true, refusal: { reason: 'spf', domain: domainOf(context.sender) } };
      add('SPF_FAIL', SCORES.SPF_FAIL);
    }
    if (auth.spf === 'softfail') add('SPF_SOFTFAIL', SCORES.SPF_SOFTFAIL);
    if (auth.dkim === 'fail') add('DKIM_FAIL', SCORES.DKIM_FAIL);
    if (auth.arc === 'fail') add('ARC_FAIL', SCORES.ARC_FAIL);
    for (const hit of lists.hits) {
      if (hit.action === 'score') add(`DNSBL_${hit.zone}`, hit.weight);
      if (hit.action === 'allow') add(`DNSWL_${hit.zone}`, -hit.weight);
    }

    // A check that could not be made never refuses for good.
    const unmade = [auth.spf, auth.dkim, auth.dmarc].includes('temperror') || auth.timedOut;
    if (unmade) tests.push('AUTH_TEMPERROR');
    if (!refusal && unmade && settings.temporaryErrors === 'defer' && !context.exempt) {
      refusal = { ok: false, permanent: false, refusal: { reason: 'temporary', what: 'sender authentication check' } };
    }

    let rspamdHeaders: { name: string; value: string }[] = [];
    let subject: string | undefined;
    if (rspamd?.ok) {
      score = rspamd.score + (score - this.#ownScore(tests));
      tests.push(...rspamd.symbols.slice(0, 20).map((symbol) => `RSPAMD_${symbol}`));
      rspamdHeaders = rspamd.addHeaders;
      if (!context.exempt) {
        if (rspamd.action === 'reject') refusal ??= { ok: false, permanent: true, refusal: { reason: 'spam', text: rspamd.message } };
        if (rspamd.action === 'soft reject') refusal ??= { ok: false, permanent: false, refusal: { reason: 'temporary', what: 'content check' } };
        if (rspamd.action === 'greylist') refusal ??= { ok: false, permanent: false, refusal: { reason: 'greylisted', retryAfterMs: RSPAMD_GREYLIST_MS } };
      }
      if (rspamd.action === 'rewrite subject') subject = rspamd.subject;
    } else if (rspamd && !rspamd.ok) {
      tests.push('RSPAMD_UNAVAILABLE');
      if (this.#settings.rspamd?.onFailure === 'defer' && !context.exempt) refusal ??= { ok: false, permanent: false, refusal: { reason: 'temporary', what: 'content check (rspamd)' } };
    }

    const required = rspamd?.ok ? rspamd.required : this.#settings.spamScore;
    const spam = score >= required || (rspamd?.ok === true && ['add header', 'rewrite subject'].includes(rspamd.action));
    this.#logVerdict(context, queueId, auth, lists.hits, rspamd, score, refusal ? (refusal.ok ? 'accepted' : refusal.permanent ? 'refused' : 'deferred') : spam ? 'marked' : 'accepted');
    if (refusal && !refusal.ok) return refusal;

    const marks = [
      auth.headers,
      `X-Spam-Flag: ${spam ? 'YES' : 'NO'}\r\n`,
      `X-Spam-Status: ${spam ? 'Yes' : 'No'}, score=${score.toFixed(1)} required=${required.toFixed(1)} tests=${tests.length > 0 ? tests.join(',') : 'none'}\r\n`,
      ...rspamdHeaders.filter((h) => /^[\x21-\x39\x3b-\x7e]+$/.test(h.name)).map((h) => `${h.name}: ${h.value.replace(/[\r\n]+/g, ' ')}\r\n`),
    ].join('');
    // Spam marks that came with the message would contradict ours (a sender's "X-Spam-Flag: NO"
    // below our YES fools a mail program's rule); rspamd names more to remove.
    const unmarked = withoutFields(message, new Set([...SPAM_MARKS, ...rspamdRemovals(rspamd)]));
    const tagged = spam && (subject !== undefined || this.#settings.subjectTag !== '') ? retitled(unmarked, subject ?? this.#settings.subjectTag, subject !== undefined) : unmarked;
    return { ok: true, spam, headers: Buffer.from(marks, 'latin1'), content: tagged };
  }

  /**
   * Mail a customer relays (a compromised account's spam), when `[filter.rspamd] outbound` is
   * on: only rspamd's verdict counts, and the user is named to it and in the log.
   */
  async relayed(context: MessageContext, content: readonly Buffer[], queueId?: string): Promise<FilterDecision> {
    if (!this.#deps.rspamd || !this.#settings.rspamd?.outbound) return { ok: true };
    const message = content.length === 1 ? content[0] : Buffer.concat(content);
    const verdict = await this.#deps.rspamd.check({ message, ip: context.client.ip, helo: context.helo, from: context.sender, recipients: context.recipients, user: context.user, queueId });
    const refused = verdict.ok && verdict.action === 'reject';
    this.#deps.log[refused ? 'warn' : 'info'](
      { event: 'filter', check: 'outbound', queueId, user: context.user, ip: context.client.ip, from: context.sender, to: context.recipients, rspamd: verdict.ok ? { action: verdict.action, score: verdict.score } : { unavailable: verdict.reason }, action: refused ? 'refused' : 'accepted' },
      refused ? `filter: relayed mail of ${context.user} refused as spam` : 'filter: relayed mail accepted',
    );
    if (refused) return { ok: false, permanent: true, refusal: { reason: 'spam', text: verdict.message } };
    return { ok: true };
  }

  /** The sum of popgate's own scores among `tests` (rspamd's score stands in for them). */
  #ownScore(tests: string[]): number {
    return tests.reduce((sum, test) => sum + (SCORES[test as keyof typeof SCORES] ?? 0), 0);
  }

  /**
   * One message goes to recipients of several domains, and SMTP can answer it only once: it is
   * refused only when every recipient's domain would refuse it; otherwise each gets it marked.
   */
  async #strictest(recipients: readonly string[]): Promise<{ dmarc: FilterSettings['dmarc']; spfFail: FilterSettings['spfFail']; temporaryErrors: FilterSettings['temporaryErrors'] }> {
    const all = await Promise.all([...new Set(recipients.map(domainOf))].map((domain) => this.#domainSettings(domain)));
    const pick = <T extends string>(values: T[], order: T[]): T => order.find((value) => values.includes(value)) ?? order[0];
    const dmarc = all.map((s) => s.dmarc ?? this.#settings.dmarc);
    const spf = all.map((s) => s.spf_fail ?? this.#settings.spfFail);
    const temporary = all.map((s) => s.temporary_errors ?? this.#settings.temporaryErrors);
    return {
      // The mildest wins: refusing for one domain would refuse the message for the others too.
      dmarc: pick(dmarc, ['off', 'mark', 'enforce']),
      spfFail: pick(spf, ['off', 'mark', 'reject']),
      temporaryErrors: pick(temporary, ['accept', 'defer']),
    };
  }

  async #domainSettings(domain: string): Promise<DomainSettings> {
    const memo = this.#domainMemo.get(domain);
    if (memo && memo.until > Date.now()) return memo.settings;
    const settings = await this.#deps.domains.get(domain);
    if (this.#domainMemo.size > 10_000) this.#domainMemo.clear();
    this.#domainMemo.set(domain, { settings, until: Date.now() + SETTINGS_MEMO_MS });
    return settings;
  }

  #logVerdict(
    context: MessageContext,
    queueId: string | undefined,
    auth: SenderAuthentication,
    hits: ListHit[],
    rspamd: RspamdVerdict | undefined,
    score: number,
    action: 'accepted' | 'marked' | 'refused' | 'deferred',
  ): void {
    for (const [check, result] of [['spf', auth.spf], ['dkim', auth.dkim], ['dmarc', auth.dmarc], ['arc', auth.arc], ['message', action]] as const) this.counts.add(check, result);
    if (rspamd) this.counts.add('rspamd', rspamd.ok ? rspamd.action : 'unavailable');
    this.#deps.log.info(
      {
        event: 'filter',
        queueId,
        ip: context.client.ip,
        from: context.sender,
        to: context.recipients,
        exempt: context.exempt,
        spf: auth.spf,
        dkim: auth.dkim,
        dmarc: auth.dmarc,
        dmarcPolicy: auth.dmarcPolicy,
        arc: auth.arc,
        dnsbl: hits.map((hit) => `${hit.zone}=${hit.code}`),
        rspamd: rspamd === undefined ? undefined : rspamd.ok ? { action: rspamd.action, score: rspamd.score } : { unavailable: rspamd.reason },
        score: Number(score.toFixed(1)),
        action,
      },
      `filter: ${action}`,
    );
  }
}

function domainOf(address: string): string {
  return address.slice(address.lastIndexOf('@') + 1).toLowerCase();
}

/**
 * The message with its Subject tagged ("[SPAM] …") or replaced (rspamd's rewrite), for mail
 * programs' rules; a message without a Subject gets one. Only the header section changes.
 */
function retitled(message: Buffer, text: string, replace: boolean): Buffer {
  const end = headerEnd(message);
  const header = message.subarray(0, end).toString('latin1');
  const match = /(^|\r\n)subject:[ \t]*((?:[^\r\n]|\r\n[ \t])*)\r\n/i.exec(header);
  const value = (old: string) => (replace ? text.replace(/%s/g, old) : `${text} ${old}`).replace(/[\r\n]+/g, ' ');
  if (!match) return Buffer.concat([Buffer.from(`Subject: ${value('').trim()}\r\n`, 'latin1'), message]);
  const start = match.index + match[1].length;
  const replaced = `Subject: ${value(match[2])}\r\n`;
  return Buffer.concat([Buffer.from(header.slice(0, start) + replaced + header.slice(start + match[0].length - match[1].length), 'latin1'), message.subarray(end)]);
}
