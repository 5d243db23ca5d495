import type { MessageAcceptance } from '../acceptance/acceptance.ts';
import type { MailPolicy } from '../policy/mail-policy.ts';
import type { MailMetrics } from './metrics.ts';

// Counting around two services whose code belongs to other concerns: the relay decision is
// the policy's verdict on a remote recipient, and an accepted message is the acceptance
// service's promise resolving. Wrapping the one instance the app hands to SMTP keeps both
// files free of metrics, and counts every caller the same way.

/** Counts every RCPT verdict on a remote address: relayed, denied, or not decidable now. */
export function countRelayDecisions(policy: MailPolicy, metrics: Pick<MailMetrics, 'relayDecision'>): MailPolicy {
  const recipient = policy.recipient.bind(policy);
  policy.recipient = async (...args) => {
    const verdict = await recipient(...args);
    if (verdict.ok && verdict.kind === 'remote') metrics.relayDecision('allowed');
    else if (!verdict.ok && verdict.refusal.reason === 'relay-denied') metrics.relayDecision('denied');
    else if (!verdict.ok && verdict.refusal.reason === 'relay-unavailable') metrics.relayDecision('unavailable');
    return verdict;
  };
  return policy;
}

/** Counts messages taken in (durably stored) or not, with the time it took. */
export function countAcceptedMessages(acceptance: MessageAcceptance, metrics: Pick<MailMetrics, 'messageAccepted'>): MessageAcceptance {
  const accept = acceptance.accept.bind(acceptance);
  acceptance.accept = async (...args) => {
    const start = performance.now();
    try {
      const id = await accept(...args);
      metrics.messageAccepted('accepted', (performance.now() - start) / 1000);
      return id;
    } catch (error) {
      metrics.messageAccepted('failed', (performance.now() - start) / 1000);
      throw error;
    }
  };
  return acceptance;
}
