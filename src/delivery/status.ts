// The RFC 3463 status codes the outbound queue records for a recipient and reports in
// delivery status notifications (RFC 3464), named once. Remote servers' own codes are kept as
// they came; these are popgate's words about what happened on its side.

export const Status = {
  delivered: '2.0.0',
  /** The class alone, when an answer carried no enhanced code of its own. */
  otherTemporary: '4.0.0',
  otherPermanent: '5.0.0',
  /** Our side failed (disk, spool file); the message stays queued. */
  localError: '4.3.0',
  /** No answer from the host (RFC 3463 §3.5: X.4.1). */
  noAnswer: '4.4.1',
  /** Routing failed for now (DNS, no address for the MX hosts): X.4.3. */
  routingTemporary: '4.4.3',
  /** Delivery time expired: X.4.7. */
  expired: '4.4.7',
  /** TLS required but failed, or DKIM signing failed: X.7.0. */
  securityTemporary: '4.7.0',
  noSuchUser: '5.1.1',
  /** The domain does not exist or accepts no mail: X.1.2. */
  badDestination: '5.1.2',
  /** Null MX (RFC 7505 §4). */
  nullMx: '5.1.10',
  /** The mail would loop back to us: X.4.6. */
  routingLoop: '5.4.6',
} as const;
