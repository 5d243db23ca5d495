import type { Config } from '../config/schema.ts';
import { Replies as Pop3Replies } from '../pop3/replies.ts';
import { format, Replies as SmtpReplies, refusalReply, sendLimitReply } from '../smtp/replies.ts';

// The help pages' words in English and Japanese. The error texts quoted on the troubleshooting
// page come from the protocols' own reply tables, so the page matches what a customer's mail
// program shows, word for word.

export const LANGS = ['en', 'ja'] as const;
export type Lang = (typeof LANGS)[number];

export const UI = {
  en: {
    langName: 'English',
    help: 'Mail help',
    setupTitle: 'Set up your mail program',
    setupIntro: 'Pick your mail program. Every page shows the exact settings of this server.',
    currentClients: 'Mail programs of today',
    classicClients: 'Older mail programs',
    settingsTitle: 'Settings at a glance',
    server: 'Server',
    port: 'Port',
    security: 'Encryption',
    incoming: 'Incoming (POP3)',
    outgoing: 'Outgoing (SMTP)',
    userName: 'User name',
    userNameValue: 'your full e-mail address',
    login: 'Login',
    loginRequired: 'yes, same as incoming',
    popBeforeSmtp: 'POP before SMTP (check mail first)',
    notOffered: 'not offered',
    aboutPbs: 'About POP before SMTP',
    port25: 'Outbound Port 25 Blocking',
    troubleshooting: 'Troubleshooting',
    canISend: 'Can I send now?',
    yourAccount: 'Your account: password, forwarding, vacation reply',
    steps: 'Steps',
    autoSetup: 'Automatic setup',
    profile: 'Download a configuration profile',
    profileAddress: 'Your e-mail address',
    profileButton: 'Download profile',
    contact: 'Questions? Contact',
    language: 'Language',
    yourAddress: 'Your address as this server sees it',
    canSendYes: (minutes: number) => `Yes. A POP3 login from this address lets you send for about ${minutes} more minute${minutes === 1 ? '' : 's'}.`,
    canSendNo: 'Not through POP before SMTP right now: no mail program has checked mail from this address recently.',
    canSendWhatToDo: (window: number) => `Check your mail (press "Send/Receive"), then send within ${window} minutes. Or set up sending with a login on the submission port, which works from anywhere.`,
    canSendNever: 'Logins from this network never allow POP before SMTP (shared addresses of mobile carriers). Send with a login on the submission port instead.',
    canSendUnknown: 'This cannot be checked right now. Please try again in a few minutes.',
    canSendLogin: 'Sending with a login (SMTP AUTH on the submission port) always works, from any network.',
    refresh: 'Check again',
    notFound: 'Page not found',
    backToHelp: 'Back to mail help',
    domainUnknown: (domain: string) => `${domain} is not a mail domain served here.`,
  },
  ja: {
    langName: '日本語',
    help: 'メールのヘルプ',
    setupTitle: 'メールソフトの設定',
    setupIntro: 'お使いのメールソフトを選んでください。各ページに本サーバーの正確な設定値を表示しています。',
    currentClients: '現在のメールソフト',
    classicClients: '以前のメールソフト',
    settingsTitle: '設定値の一覧',
    server: 'サーバー',
    port: 'ポート',
    security: '暗号化',
    incoming: '受信 (POP3)',
    outgoing: '送信 (SMTP)',
    userName: 'ユーザー名',
    userNameValue: 'メールアドレス全体',
    login: '認証',
    loginRequired: 'あり（受信と同じ）',
    popBeforeSmtp: 'POP before SMTP（送信前に受信）',
    notOffered: '提供なし',
    aboutPbs: 'POP before SMTP について',
    port25: 'Outbound Port 25 Blocking について',
    troubleshooting: 'うまくいかないとき',
    canISend: '今、送信できますか？',
    yourAccount: 'アカウント設定（パスワード・転送・自動応答）',
    steps: '手順',
    autoSetup: '自動設定',
    profile: '構成プロファイルのダウンロード',
    profileAddress: 'メールアドレス',
    profileButton: 'プロファイルをダウンロード',
    contact: 'お問い合わせ',
    language: '言語',
    yourAddress: '本サーバーから見たお客様の IP アドレス',
    canSendYes: (minutes: number) => `はい。このアドレスからの POP3 ログインにより、あと約 ${minutes} 分間送信できます。`,
    canSendNo: '現在 POP before SMTP では送信できません。最近このアドレスから受信が行われていません。',
    canSendWhatToDo: (window: number) => `受信（「送受信」）を行ってから ${window} 分以内に送信してください。または、どこからでも使える送信用ポート（認証あり）を設定してください。`,
    canSendNever: 'このネットワーク（携帯キャリアの共有アドレス）からのログインでは POP before SMTP は使えません。送信用ポートで認証して送信してください。',
    canSendUnknown: '現在確認できません。数分後にもう一度お試しください。',
    canSendLogin: '認証付きの送信（送信用ポートの SMTP AUTH）は、どのネットワークからでも使えます。',
    refresh: 'もう一度確認',
    notFound: 'ページが見つかりません',
    backToHelp: 'メールのヘルプに戻る',
    domainUnknown: (domain: string) => `${domain} は本サーバーで扱うメールドメインではありません。`,
  },
} as const;

export type UiText = (typeof UI)[Lang];

/** One entry of the troubleshooting page: the text a mail program shows, and what to do. */
export interface Trouble {
  id: string;
  message: string;
  meaning: string;
}

export function troubles(config: Config, lang: Lang, user: string): Trouble[] {
  const ja = lang === 'ja';
  const window = config.pop_before_smtp.window;
  const minutes = Math.max(1, Math.round(config.auth.lockout_duration / 60_000));
  const entry = (id: string, message: string, en: string, jaText: string): Trouble => ({ id, message, meaning: ja ? jaText : en });
  return [
    entry('relay-denied', format(refusalReply({ reason: 'relay-denied', windowMs: window }, 'RCPT')),
      'Your mail program sent without checking mail first, or more than the window after it. Check mail, then send; or switch to the submission port with a login (see the setup pages).',
      '受信せずに送信したか、受信から時間が経ちすぎています。受信してから送信するか、送信用ポートと認証を設定してください（設定ページ参照）。'),
    entry('sender-not-owned', format(refusalReply({ reason: 'sender-not-owned', sender: 'someone@example.com', user }, 'MAIL')),
      'The "From" address of the account is not one of your addresses. Correct the e-mail address in the account settings.',
      'アカウントの差出人アドレスがお客様のアドレスではありません。アカウント設定のメールアドレスを直してください。'),
    entry('auth-failed', format(SmtpReplies.authFailed),
      'The user name must be your full e-mail address; check the password (it is case-sensitive).',
      'ユーザー名はメールアドレス全体です。パスワード（大文字・小文字を区別）を確かめてください。'),
    entry('pop3-login-failed', Pop3Replies.loginFailed,
      'The same for checking mail: full e-mail address as user name, and the right password.',
      '受信でも同じです。ユーザー名はメールアドレス全体、パスワードを確かめてください。'),
    entry('locked', Pop3Replies.locked('address', minutes),
      `Too many wrong passwords: logins are refused for ${minutes} minutes. Wait, then try once with the right password; a stored wrong password in another device keeps the lock going.`,
      `パスワードの誤りが続いたため ${minutes} 分間ログインできません。時間をおいて正しいパスワードで一度だけ試してください。別の端末に古いパスワードが残っていると、ロックが続きます。`),
    entry('smtp-locked', format(SmtpReplies.authLocked('account', minutes)),
      'The same lock, reported when sending.', '同じロックが送信時に表示されたものです。'),
    entry('in-use', Pop3Replies.inUse,
      'Another program or device is checking this mailbox right now. Close it, or wait a minute.',
      '別のソフトや端末が受信中です。そちらを閉じるか、1 分ほど待ってください。'),
    entry('plaintext', Pop3Replies.plaintextRefused,
      'Turn on SSL/TLS (or STARTTLS) for the incoming server, with the port shown on the setup pages.',
      '受信サーバーの SSL/TLS（または STARTTLS）をオンにし、設定ページのポートを使ってください。'),
    entry('encryption-required', format(SmtpReplies.encryptionRequired),
      'Turn on STARTTLS (port 587) or SSL/TLS (port 465) for the outgoing server.',
      '送信サーバーの STARTTLS（587 番）または SSL/TLS（465 番）をオンにしてください。'),
    entry('auth-required', format(SmtpReplies.authRequired),
      'The submission port needs a login: turn on "My server requires authentication".',
      '送信用ポートでは認証が必要です。「送信サーバーは認証が必要」をオンにしてください。'),
    entry('auth-not-offered', format(SmtpReplies.authNotOffered),
      'Port 25 takes no login here: use the submission port (587 or 465) for sending with a login.',
      'ポート 25 では認証できません。認証付きで送信するには送信用ポート（587 または 465）を使ってください。'),
    entry('limit-hour', format(sendLimitReply({ limit: 'messages_per_hour', max: config.limits.messages_per_hour, temporary: true })),
      'You reached the hourly sending limit. Your mail program retries later; nothing is lost.',
      '1 時間あたりの送信上限に達しました。メールソフトが後で再送します。メールは失われません。'),
    entry('limit-day', format(sendLimitReply({ limit: 'messages_per_day', max: config.limits.messages_per_day, temporary: false })),
      'You reached the daily sending limit. Contact us if you regularly need more.',
      '1 日あたりの送信上限に達しました。恒常的に必要な場合はご連絡ください。'),
    entry('limit-recipients', format(sendLimitReply({ limit: 'recipients_per_day', max: config.limits.recipients_per_day, temporary: false })),
      'You reached the daily limit of recipients. Contact us if you regularly need more.',
      '1 日あたりの宛先数の上限に達しました。恒常的に必要な場合はご連絡ください。'),
  ];
}
