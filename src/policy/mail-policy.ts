import type { AccountStore } from '../accounts/store.ts';
import type { PopBeforeSmtp } from '../relay-auth/pop-before-smtp.ts';
import { parseRecipient, parseSender } from '../smtp/recipient.ts';

// Who may send what to whom over SMTP. Protocol code asks; this decides. The rule of the
// mission: everyone may send to our local domains; only authorized clients (a POP-before-SMTP
// grant now, SMTP AUTH later) may send anywhere else.

export interface Reply {
  code: number;
  enhanced: string;
  text: string;
}

export interface SenderVerdict {
  ok: true;
  /** "" for the null reverse-path. */
  sender: string;
  /** The grant holder this client relays as, when it holds a grant. */
  relayUser?: string;
  /** When the grant ends (for the reply text and logs). */
  relayExpiresAt?: number;
  /**
   * Set when the client holds a grant but the sender belongs to none of its holders: relay is
   * then refused with this reply. Mail to local users still flows, because everyone may send
   * to local domains, a customer's NAT neighbour included.
   */
  senderRefusal?: Reply;
}

export type RecipientVerdict =
  | { ok: true; kind: 'local'; address: string; mailboxes: string[]; remote: string[] }
  | { ok: true; kind: 'remote'; address: string }
  | { ok: false; reply: Reply; reason: string };

export interface MailPolicySettings {
  enforceSender: boolean;
  windowMs: number;
  /** Where postmaster@<every local domain> goes; "" keeps it in that domain's postmaster Maildir. */
  postmaster: string;
}

const MAX_ALIAS_DEPTH = 5;

export class MailPolicy {
  readonly #accounts: AccountStore;
  readonly #popBeforeSmtp: PopBeforeSmtp;
  readonly #settings: MailPolicySettings;

  constructor(accounts: AccountStore, popBeforeSmtp: PopBeforeSmtp, settings: MailPolicySettings) {
    this.#accounts = accounts;
    this.#popBeforeSmtp = popBeforeSmtp;
    this.#settings = settings;
  }

  /** MAIL FROM: syntax, and who the client may relay as. */
  async sender(ip: string, text: string): Promise<SenderVerdict | { ok: false; reply: Reply; reason: string }> {
    const parsed = parseSender(text);
    if (!parsed.ok) return { ok: false, reply: { code: parsed.code, enhanced: parsed.enhanced, text: parsed.reason }, reason: 'bad sender syntax' };
    const sender = 'nullSender' in parsed ? '' : parsed.address;
    const grant = await this.#popBeforeSmtp.authorization(ip);
    if (!grant) return { ok: true, sender };
    for (const user of grant.users) {
      if (sender !== '' && (await this.#accounts.sendableAddresses(user)).includes(sender)) {
        return { ok: true, sender, relayUser: user, relayExpiresAt: grant.expiresAt };
      }
    }
    if (this.#settings.enforceSender) {
      // A neighbour behind the same address (NAT) must not relay as someone else.
      return {
        ok: true,
        sender,
        senderRefusal: { code: 553, enhanced: '5.7.1', text: `Sender address <${sender}> is not yours: send from the address you log in to POP3 with` },
      };
    }
    return { ok: true, sender, relayUser: grant.users[0], relayExpiresAt: grant.expiresAt };
  }

  /**
   * MAIL FROM after SMTP AUTH: the sender must be one of the user's addresses or aliases
   * (RFC 6409 §6.1), so a stolen password cannot send as anyone. The null sender is allowed.
   */
  async authenticatedSender(user: string, text: string): Promise<SenderVerdict | { ok: false; reply: Reply; reason: string }> {
    const parsed = parseSender(text);
    if (!parsed.ok) return { ok: false, reply: { code: parsed.code, enhanced: parsed.enhanced, text: parsed.reason }, reason: 'bad sender syntax' };
    const sender = 'nullSender' in parsed ? '' : parsed.address;
    if (sender !== '' && !(await this.#accounts.sendableAddresses(user)).includes(sender)) {
      return {
        ok: false,
        reply: { code: 553, enhanced: '5.7.1', text: `Sender address <${sender}> is not yours: send from ${user} or one of its aliases` },
        reason: 'authenticated user sending as someone else',
      };
    }
    return { ok: true, sender, relayUser: user };
  }

  /** RCPT TO: local recipients for everyone, others only for an authorized client. */
  async recipient(text: string, relayUser: string | undefined, senderRefusal?: Reply): Promise<RecipientVerdict> {
    const parsed = parseRecipient(text);
    if (!parsed.ok) return { ok: false, reply: { code: parsed.code, enhanced: parsed.enhanced, text: parsed.reason }, reason: 'refused address form' };
    const { address } = parsed;
    // RFC 5321 §4.1.1.3: <Postmaster> without a domain is always accepted.
    const domain = parsed.domain;
    if (domain === '' || (await this.#accounts.isLocalDomain(domain))) {
      const local = await this.#expand(address, domain || 'postmaster', 0);
      if (local && local.mailboxes.length + local.remote.length > 0) return { ok: true, kind: 'local', address, ...local };
      if (parsed.local === 'postmaster') {
        // RFC 5321 §4.5.1: postmaster of every domain we accept mail for.
        const target = this.#settings.postmaster;
        if (target) {
          const expanded = await this.#expand(target, target.split('@')[1] ?? '', 0);
          if (expanded) return { ok: true, kind: 'local', address, ...expanded };
          return { ok: true, kind: 'local', address, mailboxes: [], remote: [target] };
        }
        return { ok: true, kind: 'local', address, mailboxes: [domain ? address : 'postmaster@localhost'], remote: [] };
      }
      return { ok: false, reply: { code: 550, enhanced: '5.1.1', text: `No such user here: <${address}>` }, reason: 'unknown local user' };
    }
    if (relayUser) return { ok: true, kind: 'remote', address };
    if (senderRefusal) return { ok: false, reply: senderRefusal, reason: 'relay with a sender the grant holders do not own' };
    return {
      ok: false,
      reply: { code: 554, enhanced: '5.7.1', text: `Relay access denied: log in with POP3 first, then send within ${describeWindow(this.#settings.windowMs)}` },
      reason: 'relay without authorization',
    };
  }

  /**
   * Where mail for a local address goes (mailboxes and remote forwards), for deliveries the
   * queue makes itself, such as a bounce to a local sender. undefined: no such address.
   */
  async localTargets(address: string): Promise<{ mailboxes: string[]; remote: string[] } | undefined> {
    const at = address.lastIndexOf('@');
    const found = await this.#expand(address, address.slice(at + 1), 0);
    if (found && found.mailboxes.length + found.remote.length > 0) return found;
    if (address.slice(0, at).toLowerCase() !== 'postmaster') return undefined;
    // RFC 5321 §4.5.1, as for RCPT TO:<postmaster@...> above.
    const target = this.#settings.postmaster;
    if (!target) return { mailboxes: [address], remote: [] };
    const expanded = await this.#expand(target, target.split('@')[1] ?? '', 0);
    if (expanded && expanded.mailboxes.length + expanded.remote.length > 0) return expanded;
    return (await this.#accounts.isLocalDomain(target.split('@')[1] ?? '')) ? { mailboxes: [target], remote: [] } : { mailboxes: [], remote: [target] };
  }

  isLocalDomain(domain: string): Promise<boolean> {
    return this.#accounts.isLocalDomain(domain);
  }

  /** Local mailboxes and remote forwards an address reaches, following aliases. */
  async #expand(address: string, _domain: string, depth: number): Promise<{ mailboxes: string[]; remote: string[] } | undefined> {
    const found = await this.#accounts.lookup(address);
    if (!found) return undefined;
    if (found.kind === 'user') return { mailboxes: [address], remote: [] };
    const mailboxes = new Set<string>();
    const remote = new Set<string>();
    for (const target of found.targets) {
      const targetDomain = target.slice(target.lastIndexOf('@') + 1);
      if (!(await this.#accounts.isLocalDomain(targetDomain))) {
        remote.add(target); // forwarding: ours to do, whoever sent it
        continue;
      }
      if (depth >= MAX_ALIAS_DEPTH) continue; // an alias loop ends here
      const inner = await this.#expand(target, targetDomain, depth + 1);
      inner?.mailboxes.forEach((m) => mailboxes.add(m));
      inner?.remote.forEach((r) => remote.add(r));
    }
    return { mailboxes: [...mailboxes], remote: [...remote] };
  }
}

function describeWindow(ms: number): string {
  if (ms >= 120_000) return `${Math.round(ms / 60_000)} minutes`;
  if (ms >= 60_000) return '1 minute';
  const seconds = Math.max(1, Math.round(ms / 1000));
  return `${seconds} second${seconds === 1 ? '' : 's'}`;
}
