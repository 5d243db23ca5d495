import { NetworkList } from './ip.ts';

// Behind a load balancer that does not pass the client's address on (no PROXY protocol), every
// connection seems to come from the balancer. A POP3 login then grants POP-before-SMTP relay to
// the balancer's address, that is, to everybody behind it. A listener cannot tell a balancer
// from one very busy client for sure, but "the first N connections since start all came from
// one address" is a strong hint, worth one loud line in the log.

export interface SinglePeerWarningSettings {
  /** How many connections since start, all from one address, make the warning. */
  afterConnections: number;
  /**
   * Networks whose single peer is expected rather than suspicious: loopback by default (local
   * tools, monitoring, development). A balancer on the same host connecting over loopback is
   * therefore not noticed.
   */
  exemptNetworks: readonly string[];
}

export const DEFAULT_SINGLE_PEER_WARNING: SinglePeerWarningSettings = { afterConnections: 100, exemptNetworks: ['127.0.0.0/8', '::1'] };

/** Watches one listener's first connections; it decides once and is then idle. */
export class SinglePeerWatch {
  readonly #afterConnections: number;
  readonly #exempt: NetworkList;
  #address: string | undefined;
  #count = 0;
  #decided = false;

  constructor(settings: SinglePeerWarningSettings) {
    this.#afterConnections = settings.afterConnections;
    this.#exempt = new NetworkList(settings.exemptNetworks);
  }

  /**
   * Counts a connection from `ip`. Returns the address to warn about, exactly once, when the
   * first `afterConnections` connections all came from it and it is not exempt; undefined
   * otherwise. A second address seen before that settles it: no warning, ever.
   */
  observe(ip: string): string | undefined {
    if (this.#decided) return undefined;
    if (this.#address === undefined) this.#address = ip;
    else if (ip !== this.#address) {
      this.#decided = true;
      return undefined;
    }
    if (++this.#count < this.#afterConnections) return undefined;
    this.#decided = true;
    return this.#exempt.has(ip) ? undefined : ip;
  }
}
