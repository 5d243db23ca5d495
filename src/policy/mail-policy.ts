import type { AccountStore } from '../accounts/store.ts';
import { parseForwardPath, parseReversePath, type AddressProblem } from '../mail/address.ts';
import { NetworkList } from '../net/ip.ts';
import type { PopBeforeSmtp } from '../relay-auth/pop-before-smtp.ts';
import type { ForwardingStore } from '../forwarding/store.ts';
import type { MailboxQuotas } from '../quota/quota.ts';
import { Srs, type SrsProblem } from '../srs/srs.ts';

// Who may send what to whom. Protocol code asks; this decides, and says why in its own terms
// (a verdict with a reason); each protocol words a refusal itself (src/smtp/replies.ts). The
// rule of the mission: everyone may send to our local domains; only authorized clients (a
// POP-before-SMTP grant, or a login) may send anywhere else.

/** Why mail is refused. */
export type Refusal =
  /** Not an address, or a relay-trick form of one. */
  | { reason: 'bad-address'; problem: AddressProblem }
  | { reason: 'unknown-user'; address: string }
  /** Another domain without authorization. */
  | { reason: 'relay-denied'; windowMs: number }
  /** Whether the client may relay cannot be told right now (the grant store is down): try later. */
  | { reason: 'relay-unavailable' }
  /**
   * The sender is not an address of the client's user: `user` is the logged-in user (SMTP
   * AUTH), absent for POP-before-SMTP grant holders.
   */
  | { reason: 'sender-not-owned'; sender: string; user?: string }
  /** The message's From: names an address that is not one of the relaying user's. */
  | { reason: 'from-not-owned'; from: string; user: string }
  /** The message's From: cannot be read unambiguously, so whose it is cannot be told. */
  | { reason: 'from-malformed'; problem: string }
  /** The mailbox is over its quota (`permanent` false with soft quotas: try later). */
  | { reason: 'mailbox-full'; address: string; permanent: boolean }
  /** Whether the mailbox has room cannot be told right now (the quota store is away): try later. */
  | { reason: 'mailbox-unavailable'; address: string }
  /** Forwarding this message again would go round in a circle. */
  | { reason: 'forwarding-loop'; address: string }
  /** A bounce address of our SRS domain that we did not make, or made too long ago. */
  | { reason: 'srs-invalid'; address: string; problem: SrsProblem };

/** A relaying user's From: (RFC 5322 §3.6.2), judged: the domain the queue may DKIM-sign for, or why not. */
export type HeaderFromVerdict = { ok: true; signingDomain?: string } | { ok: false; refusal: Refusal };

export interface SenderVerdict {
  ok: true;
  /** "" for the null reverse-path. */
  sender: string;
  /** The user this client relays as, when it holds a grant or logged in. */
  relayUser?: string;
  /** When the grant ends (for logs). */
  relayExpiresAt?: number;
  /** The entry of `smtp.relay_networks` the client relays by, when it relays without a user. */
  relayNetwork?: string;
  /**
   * Set when the client holds a grant but the sender belongs to none of its holders: relay is
   * then refused for this reason. Mail to local users still flows, because everyone may send
   * to local domains, a customer's NAT neighbour included.
   */
  relayRefusal?: Refusal;
}

export type SenderDecision = SenderVerdict | { ok: false; refusal: Refusal };

export type RecipientVerdict =
  | { ok: true; kind: 'local'; address: string; mailboxes: string[]; remote: string[] }
  | { ok: true; kind: 'remote'; address: string }
  | { ok: false; refusal: Refusal };

export interface MailPolicySettings {
  enforceSender: boolean;
  windowMs: number;
  /** Where postmaster@<every local domain> goes; "" keeps it in that domain's postmaster Maildir. */
  postmaster: string;
  /**
   * Whether users of a domain must write one of their own addresses in From: (the per-domain
   * `from_check` setting; a forwarding service turns it off). Absent: always.
   */
  fromCheckEnforced?: (domain: string) => Promise<boolean>;
  /** `smtp.relay_networks`: clients here relay without a POP3 login (internal servers, the provider's own networks). */
  relayNetworks?: readonly string[];
}

/**
 * Relay networks wider than a /16 (IPv4) or a /48 (IPv6), warned about at start: wider than
 * a provider's own networks usually are. (0.0.0.0/0 and ::/0 are refused by the config.)
 */
export function wideRelayNetworks(networks: readonly string[]): string[] {
  return networks.filter((cidr) => {
    const [address, prefixText] = cidr.split('/');
    if (prefixText === undefined) return false;
    const prefix = Number(prefixText);
    const mapped = /^::ffff:/i.test(address) && address.includes('.'); // IPv4-mapped: the IPv4 prefix is 96 less
    return address.includes(':') && !mapped ? prefix < 48 : prefix - (mapped ? 96 : 0) < 16;
  });
}

/** Mailbox services the policy consults at RCPT (src/mailbox-services/). */
export interface PolicyMailboxServices {
  quotas?: MailboxQuotas;
  forwarding?: ForwardingStore;
  srs?: Srs;
}

const MAX_ALIAS_DEPTH = 5;

export class MailPolicy {
  readonly #accounts: AccountStore;
  readonly #popBeforeSmtp: PopBeforeSmtp;
  readonly #settings: MailPolicySettings;
  readonly #relayNetworks: { cidr: string; list: NetworkList }[];
  readonly #services: PolicyMailboxServices;

  constructor(accounts: AccountStore, popBeforeSmtp: PopBeforeSmtp, settings: MailPolicySettings, services: PolicyMailboxServices = {}) {
    this.#accounts = accounts;
    this.#popBeforeSmtp = popBeforeSmtp;
    this.#settings = settings;
    this.#services = services;
    this.#relayNetworks = (settings.relayNetworks ?? []).map((cidr) => ({ cidr, list: new NetworkList([cidr]) }));
  }

  /** The relay network `ip` belongs to, if any. */
  #relayNetwork(ip: string): string | undefined {
    return this.#relayNetworks.find((network) => network.list.has(ip))?.cidr;
  }

  /** MAIL FROM: syntax, and who the client may relay as. */
  async sender(ip: string, text: string): Promise<SenderDecision> {
    const parsed = parseReversePath(text);
    if (!parsed.ok) return { ok: false, refusal: { reason: 'bad-address', problem: parsed.problem } };
    const sender = 'nullSender' in parsed ? '' : parsed.address;
    // A client of a relay network relays as that network, unless a grant names its user.
    const relayNetwork = this.#relayNetwork(ip);
    let grant;
    try {
      grant = await this.#popBeforeSmtp.authorization(ip);
    } catch {
      if (relayNetwork) return { ok: true, sender, relayNetwork };
      // Fail closed, but only for relay: mail to local users needs no grant and still flows.
      return { ok: true, sender, relayRefusal: { reason: 'relay-unavailable' } };
    }
    if (!grant) return relayNetwork ? { ok: true, sender, relayNetwork } : { ok: true, sender };
    for (const user of grant.users) {
      if (sender !== '' && (await this.#accounts.sendableAddresses(user)).includes(sender)) {
        return { ok: true, sender, relayUser: user, relayExpiresAt: grant.expiresAt };
      }
    }
    if (relayNetwork) return { ok: true, sender, relayNetwork };
    if (this.#settings.enforceSender) {
      // A neighbour behind the same address (NAT) must not relay as someone else.
      return { ok: true, sender, relayRefusal: { reason: 'sender-not-owned', sender } };
    }
    return { ok: true, sender, relayUser: grant.users[0], relayExpiresAt: grant.expiresAt };
  }

  /**
   * MAIL FROM after SMTP AUTH: the sender must be one of the user's addresses or aliases
   * (RFC 6409 §6.1), so a stolen password cannot send as anyone. The null sender is allowed.
   */
  async authenticatedSender(user: string, text: string): Promise<SenderDecision> {
    const parsed = parseReversePath(text);
    if (!parsed.ok) return { ok: false, refusal: { reason: 'bad-address', problem: parsed.problem } };
    const sender = 'nullSender' in parsed ? '' : parsed.address;
    if (sender !== '' && !(await this.#accounts.sendableAddresses(user)).includes(sender)) {
      return { ok: false, refusal: { reason: 'sender-not-owned', sender, user } };
    }
    return { ok: true, sender, relayUser: user };
  }

  /**
   * The From: addresses of a message relayed by `user` (a grant holder or an SMTP AUTH login),
   * as mox and Stalwart check them: each must be the user's address or an alias reaching the
   * user, else the message is refused, unless the user's domain turned the check off. Only an
   * owned From: domain may be DKIM-signed, so a customer cannot get another hosted domain's
   * signature, check or no check.
   */
  async headerFrom(user: string, from: { ok: true; addresses: string[] } | { ok: false; problem: string }): Promise<HeaderFromVerdict> {
    if (from.ok && from.addresses.length === 0) return { ok: true }; // nothing to vouch for: never signed
    const enforced = (await this.#settings.fromCheckEnforced?.(user.slice(user.lastIndexOf('@') + 1))) ?? true;
    if (!from.ok) return enforced ? { ok: false, refusal: { reason: 'from-malformed', problem: from.problem } } : { ok: true };
    const owned = await this.#ownedAddresses(user);
    const foreign = from.addresses.find((address) => !owned.has(address));
    if (foreign === undefined) return { ok: true, signingDomain: from.addresses[0].slice(from.addresses[0].lastIndexOf('@') + 1) };
    return enforced ? { ok: false, refusal: { reason: 'from-not-owned', from: foreign, user } } : { ok: true };
  }

  /** The user's address and every alias that reaches it, through aliases of aliases too. */
  async #ownedAddresses(user: string): Promise<Set<string>> {
    const owned = new Set([user]);
    let level = [user];
    for (let depth = 0; depth < MAX_ALIAS_DEPTH && level.length > 0; depth++) {
      const next: string[] = [];
      for (const address of level) {
        for (const alias of await this.#accounts.sendableAddresses(address)) {
          if (!owned.has(alias)) {
            owned.add(alias);
            next.push(alias);
          }
        }
      }
      level = next;
    }
    return owned;
  }

  /**
   * RCPT TO: local recipients for everyone, others only for an authorized client (a user, or a
   * relay network). `size` is the message size the client declared (MAIL FROM SIZE=, RFC 1870),
   * checked against quotas.
   */
  async recipient(text: string, relayUser: string | undefined, relayRefusal?: Refusal, relayNetwork?: string, size?: number): Promise<RecipientVerdict> {
    const parsed = parseForwardPath(text);
    if (!parsed.ok) return { ok: false, refusal: { reason: 'bad-address', problem: parsed.problem } };
    const { address } = parsed;
    // RFC 5321 §4.1.1.3: <Postmaster> without a domain is always accepted.
    const domain = parsed.domain;
    const srs = this.#services.srs;
    if (srs && Srs.isSrs(parsed.local) && (domain === srs.domain || (await this.#accounts.isLocalDomain(domain)))) {
      // A bounce to a sender we rewrote: back to where it came from, or refused as forged.
      const reversed = srs.reverse(parsed.local);
      if (!reversed.ok) return { ok: false, refusal: { reason: 'srs-invalid', address, problem: reversed.problem } };
      return { ok: true, kind: 'local', address, mailboxes: [], remote: [reversed.address] };
    }
    if (domain === '' || (await this.#accounts.isLocalDomain(domain))) {
      const local = await this.#expand(address, domain || 'postmaster', 0);
      if (local && local.mailboxes.length + local.remote.length > 0) {
        const full = local.remote.length === 0 ? await this.#full(local.mailboxes, size ?? 0) : undefined;
        return full ? { ok: false, refusal: full } : { ok: true, kind: 'local', address, ...local };
      }
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
      return { ok: false, refusal: { reason: 'unknown-user', address } };
    }
    if (relayUser || relayNetwork) return { ok: true, kind: 'remote', address };
    return { ok: false, refusal: relayRefusal ?? { reason: 'relay-denied', windowMs: this.#settings.windowMs } };
  }

  /**
   * A refusal when none of `mailboxes` has room for `size` more octets. An alias some of whose
   * mailboxes are full is taken: the full ones are left out after DATA (and reported).
   */
  async #full(mailboxes: readonly string[], size: number): Promise<Refusal | undefined> {
    const quotas = this.#services.quotas;
    if (!quotas || mailboxes.length === 0) return undefined;
    let first: Refusal | undefined;
    for (const mailbox of mailboxes) {
      try {
        const decision = await quotas.check(mailbox, size);
        if (decision.ok) return undefined;
        first ??= { reason: 'mailbox-full', address: mailbox, permanent: decision.permanent };
      } catch {
        return { reason: 'mailbox-unavailable', address: mailbox };
      }
    }
    return first;
  }

  /**
   * Where mail for a local address goes (mailboxes and remote forwards), for deliveries the
   * queue makes itself, such as a bounce to a local sender. undefined: no such address.
   */
  async localTargets(address: string): Promise<{ mailboxes: string[]; remote: string[] } | undefined> {
    const at = address.lastIndexOf('@');
    const srs = this.#services.srs;
    if (srs && Srs.isSrs(address.slice(0, at)) && address.slice(at + 1).toLowerCase() === srs.domain) {
      const reversed = srs.reverse(address.slice(0, at));
      return reversed.ok ? { mailboxes: [], remote: [reversed.address] } : undefined;
    }
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

  /** Ours to deliver: a local domain, or the SRS domain (bounces to forwarded mail). */
  async isLocalDomain(domain: string): Promise<boolean> {
    return domain.toLowerCase() === this.#services.srs?.domain || this.#accounts.isLocalDomain(domain);
  }

  /** Local mailboxes and remote forwards an address reaches, following aliases and forwarding rules. */
  async #expand(address: string, _domain: string, depth: number, seen: ReadonlySet<string> = new Set()): Promise<{ mailboxes: string[]; remote: string[] } | undefined> {
    const found = await this.#accounts.lookup(address);
    if (!found) return undefined;
    const rule = found.kind === 'user' ? await this.#services.forwarding?.get(address) : undefined;
    if (found.kind === 'user' && !rule) return { mailboxes: [address], remote: [] };
    const mailboxes = new Set<string>(rule?.keep ? [address] : []);
    const remote = new Set<string>();
    for (const target of found.kind === 'user' ? rule!.targets : found.targets) {
      // A rule forwarding to the user's own address (or back to it in a circle) ends at the mailbox.
      if (found.kind === 'user' && target === address) {
        mailboxes.add(address);
        continue;
      }
      const targetDomain = target.slice(target.lastIndexOf('@') + 1);
      if (!(await this.#accounts.isLocalDomain(targetDomain))) {
        remote.add(target); // forwarding: ours to do, whoever sent it
        continue;
      }
      if (depth >= MAX_ALIAS_DEPTH || seen.has(target)) {
        // A circle (of aliases or forwarding rules) ends here; a user in it keeps the mail.
        if ((await this.#accounts.lookup(target))?.kind === 'user') mailboxes.add(target);
        continue;
      }
      const inner = await this.#expand(target, targetDomain, depth + 1, new Set([...seen, address]));
      inner?.mailboxes.forEach((m) => mailboxes.add(m));
      inner?.remote.forEach((r) => remote.add(r));
    }
    return { mailboxes: [...mailboxes], remote: [...remote] };
  }
}
