import { preferredIncoming, preferredOutgoing, type MailSettings, type Security } from './mail-settings.ts';
import type { Lang } from './i18n.ts';

// "Set up your mail program": one page per client, numbered steps with this server's values.
// Each client names where its settings live; the steps around them are shared, so a changed
// port or window shows on every page at once.

type Words = Record<Lang, string>;

export interface MailClient {
  /** The path segment: /setup/<id>. */
  id: string;
  name: string;
  /** Today's programs first; the ones the old help pages covered after them. */
  era: 'current' | 'classic';
  /** How to reach the account settings. */
  start: Words;
  /** Where ports and encryption are set. */
  advanced: Words;
  /** Where the outgoing login is switched on ("My server requires authentication"). */
  outgoingLogin: Words;
  /** Whether the program can check for mail before sending on its own (POP before SMTP). */
  checkBeforeSending?: Words;
  /** Devices that only send (scanners, printers): no incoming server. */
  sendOnly?: boolean;
}

export const CLIENTS: readonly MailClient[] = [
  {
    id: 'outlook-new',
    name: 'Outlook (new)',
    era: 'current',
    start: { en: 'Open Settings (gear icon) > Accounts > Email accounts > Add account, type your address and choose "POP".', ja: '「設定」（歯車）→「アカウント」→「メールアカウント」→「アカウントを追加」を開き、アドレスを入力して「POP」を選びます。' },
    advanced: { en: 'On the "POP account" form', ja: '「POP アカウント」の入力画面で' },
    outgoingLogin: { en: 'Fill in the SMTP user name and password (the same as for POP)', ja: 'SMTP のユーザー名とパスワード（POP と同じもの）を入力します' },
  },
  {
    id: 'outlook-classic',
    name: 'Outlook (classic, 2016–2024, Microsoft 365)',
    era: 'current',
    start: { en: 'Choose File > Add Account, type your address, open "Advanced options", tick "Let me set up my account manually", then choose POP.', ja: '「ファイル」→「アカウントの追加」でアドレスを入力し、「詳細オプション」の「自分で自分のアカウントを手動で設定」にチェックを入れ、「POP」を選びます。' },
    advanced: { en: 'On the "POP Account Settings" page', ja: '「POP アカウントの設定」画面で' },
    outgoingLogin: { en: 'Outlook uses your POP login for sending; leave "Require logon using Secure Password Authentication (SPA)" off', ja: '送信にも POP のログインが使われます。「セキュリティで保護されたパスワード認証 (SPA) でのログオンが必要」はオフのままにします' },
    checkBeforeSending: { en: 'In File > Account Settings > Change > More Settings > Outgoing Server, choose "Log on to incoming mail server before sending mail"', ja: '「ファイル」→「アカウント設定」→「変更」→「詳細設定」→「送信サーバー」で「メールを送信する前に受信メールサーバーにログオンする」を選びます' },
  },
  {
    id: 'thunderbird',
    name: 'Thunderbird',
    era: 'current',
    start: { en: 'Choose Account Settings > Account Actions > Add Mail Account, enter your name, address and password, then "Configure manually" (Thunderbird usually fills everything in by itself from this server).', ja: '「アカウント設定」→「アカウント操作」→「メールアカウントを追加」で名前・アドレス・パスワードを入力し、「手動設定」を開きます（通常は本サーバーから自動で設定されます）。' },
    advanced: { en: 'In the manual configuration', ja: '手動設定の画面で' },
    outgoingLogin: { en: 'For the outgoing server choose Authentication method "Normal password"', ja: '送信サーバーの「認証方式」を「通常のパスワード認証」にします' },
    checkBeforeSending: { en: 'For the outgoing server choose Authentication method "No authentication", and press "Get Messages" before sending', ja: '送信サーバーの「認証方式」を「認証なし」にし、送信の前に「受信」を押します' },
  },
  {
    id: 'apple-mail-macos',
    name: 'Apple Mail (macOS)',
    era: 'current',
    start: { en: 'Download the configuration profile below and open it, or choose Mail > Add Account > Other Mail Account, then account type POP.', ja: '下の構成プロファイルをダウンロードして開くか、「メール」→「アカウントを追加」→「その他のメールアカウント」で種類「POP」を選びます。' },
    advanced: { en: 'In Mail > Settings > Accounts > Server Settings (untick "Automatically manage connection settings")', ja: '「メール」→「設定」→「アカウント」→「サーバ設定」で（「接続設定を自動的に管理」のチェックを外して）' },
    outgoingLogin: { en: 'For the outgoing server choose Authentication "Password" with your address and password', ja: '送信用メールサーバの「認証」を「パスワード」にし、アドレスとパスワードを入力します' },
  },
  {
    id: 'apple-mail-ios',
    name: 'Mail on iPhone and iPad',
    era: 'current',
    start: { en: 'Download the configuration profile below on the device and install it in Settings > General > VPN & Device Management, or go to Settings > Apps > Mail > Mail Accounts > Add Account > Other > Add Mail Account and choose POP.', ja: '端末で下の構成プロファイルをダウンロードし「設定」→「一般」→「VPN とデバイス管理」からインストールするか、「設定」→「アプリ」→「メール」→「メールアカウント」→「アカウントを追加」→「その他」→「メールアカウントを追加」で「POP」を選びます。' },
    advanced: { en: 'In the account\'s "Advanced" and "SMTP" settings', ja: 'アカウントの「詳細」と「SMTP」の設定で' },
    outgoingLogin: { en: 'For the primary SMTP server fill in your address and password', ja: 'プライマリ SMTP サーバにアドレスとパスワードを入力します' },
  },
  {
    id: 'android',
    name: 'Gmail app and other Android mail apps',
    era: 'current',
    start: { en: 'In the Gmail app: Settings > Add account > Other, type your address, choose "Personal (POP3)" (in other apps: "POP3" or "Manual setup").', ja: 'Gmail アプリの「設定」→「アカウントを追加」→「その他」でアドレスを入力し「個人用 (POP3)」を選びます（他のアプリでは「POP3」または「手動設定」）。' },
    advanced: { en: 'On the incoming and outgoing server screens', ja: '受信サーバーと送信サーバーの画面で' },
    outgoingLogin: { en: 'Leave "Require sign-in" on, with your address and password', ja: '「ログインが必要」をオンのままにし、アドレスとパスワードを入力します' },
  },
  {
    id: 'scanner-printer',
    name: 'Scanners and printers that send mail',
    era: 'current',
    sendOnly: true,
    start: { en: 'Open the device\'s web page or panel, section "E-mail" or "SMTP" (scan to e-mail).', ja: '機器の Web 画面または操作パネルで「E-mail」や「SMTP」（スキャン to メール）の設定を開きます。' },
    advanced: { en: 'In the SMTP settings', ja: 'SMTP 設定で' },
    outgoingLogin: { en: 'Choose "SMTP authentication" (AUTH) with a mailbox address of yours and its password', ja: '「SMTP 認証」を選び、お使いのメールアドレスとそのパスワードを入力します' },
    checkBeforeSending: { en: 'If the device only offers "POP before SMTP", turn it on and enter the POP3 server, your address and password', ja: '機器に「POP before SMTP」しかない場合はオンにし、POP3 サーバー・アドレス・パスワードを入力します' },
  },
  {
    id: 'outlook-express-6',
    name: 'Outlook Express 6',
    era: 'classic',
    start: { en: 'Choose Tools > Accounts > Add > Mail and follow the wizard; incoming server type POP3.', ja: '「ツール」→「アカウント」→「追加」→「メール」でウィザードに従い、受信メールサーバーの種類は「POP3」にします。' },
    advanced: { en: 'In Tools > Accounts > Properties > Advanced', ja: '「ツール」→「アカウント」→「プロパティ」→「詳細設定」タブで' },
    outgoingLogin: { en: 'On the Servers tab tick "My server requires authentication"', ja: '「サーバー」タブで「このサーバーは認証が必要」にチェックを入れます' },
    checkBeforeSending: { en: 'Press "Send/Recv" (which checks mail first) rather than only sending', ja: '送信だけでなく「送受信」（先に受信します）を押します' },
  },
  {
    id: 'outlook-express-mac',
    name: 'Outlook Express 5 for Mac',
    era: 'classic',
    start: { en: 'Choose Tools > Accounts > New > Mail, account type POP.', ja: '「ツール」→「アカウント」→「新規」→「メール」で、アカウントの種類を「POP」にします。' },
    advanced: { en: 'In the account\'s "Click here for advanced receiving/sending options"', ja: 'アカウント設定の「受信/送信の詳細オプション」で' },
    outgoingLogin: { en: 'Tick "SMTP server requires authentication" and "Use same settings as receiving server"', ja: '「SMTP サーバーは認証が必要」と「受信サーバーと同じ設定を使用」にチェックを入れます' },
    checkBeforeSending: { en: 'Use "Send & Receive All" so mail is checked before it is sent', ja: '「すべて送受信」を使い、送信の前に受信されるようにします' },
  },
  {
    id: 'outlook-2003',
    name: 'Outlook 2003',
    era: 'classic',
    start: { en: 'Choose Tools > E-mail Accounts > Add a new e-mail account > POP3.', ja: '「ツール」→「電子メールアカウント」→「新しい電子メールアカウントを追加する」→「POP3」を選びます。' },
    advanced: { en: 'In More Settings > Advanced', ja: '「詳細設定」→「詳細設定」タブで' },
    outgoingLogin: { en: 'In More Settings > Outgoing Server tick "My outgoing server (SMTP) requires authentication"', ja: '「詳細設定」→「送信サーバー」タブで「送信サーバー (SMTP) は認証が必要」にチェックを入れます' },
    checkBeforeSending: { en: 'In More Settings > Outgoing Server choose "Log on to incoming mail server before sending mail"', ja: '「詳細設定」→「送信サーバー」タブで「メールを送信する前に受信メールサーバーにログオンする」を選びます' },
  },
  {
    id: 'netscape-7',
    name: 'Netscape 7.2',
    era: 'classic',
    start: { en: 'Choose Edit > Mail & Newsgroups Account Settings > Add Account > Email account, server type POP.', ja: '「編集」→「メールとニュースグループのアカウント設定」→「アカウントを追加」→「メールアカウント」で、サーバーの種類を「POP」にします。' },
    advanced: { en: 'In Server Settings and Outgoing Server (SMTP)', ja: '「サーバー設定」と「送信 (SMTP) サーバー」で' },
    outgoingLogin: { en: 'In Outgoing Server (SMTP) tick "Use name and password" with your address', ja: '「送信 (SMTP) サーバー」で「名前とパスワードを使用する」にチェックを入れ、アドレスを入力します' },
    checkBeforeSending: { en: 'Press "Get Msgs" before you send', ja: '送信の前に「受信」を押します' },
  },
  {
    id: 'becky-2',
    name: 'Becky! Internet Mail 2',
    era: 'classic',
    start: { en: 'Choose Tools > Mailbox Settings (or File > New Mailbox), protocol POP3.', ja: '「ツール」→「メールボックスの設定」（または「ファイル」→「新しいメールボックス」）で、受信プロトコルを「POP3」にします。' },
    advanced: { en: 'On the Basic and Advanced tabs', ja: '「基本設定」と「詳細」タブで' },
    outgoingLogin: { en: 'On the Advanced tab tick "SMTP authentication" (CRAM-MD5 off, LOGIN or PLAIN on)', ja: '「詳細」タブで「SMTP 認証」にチェックを入れます（CRAM-MD5 はオフ、LOGIN または PLAIN をオン）' },
    checkBeforeSending: { en: 'On the Advanced tab tick "POP before SMTP"', ja: '「詳細」タブで「POP before SMTP」にチェックを入れます' },
  },
  {
    id: 'postpet-3',
    name: 'PostPet V3',
    era: 'classic',
    start: { en: 'Open the account settings ("Tools" > "Account settings") and choose POP.', ja: '「ツール」→「アカウント設定」を開き、POP を選びます。' },
    advanced: { en: 'In the server settings', ja: 'サーバー設定で' },
    outgoingLogin: { en: 'Tick "SMTP authentication" and use your address and password', ja: '「SMTP 認証」にチェックを入れ、アドレスとパスワードを使います' },
    checkBeforeSending: { en: 'Tick "POP before SMTP" (check mail before sending)', ja: '「POP before SMTP」（送信前に受信）にチェックを入れます' },
  },
  {
    id: 'mail-1-3',
    name: 'Mail 1.3 (Mac OS X 10.3)',
    era: 'classic',
    start: { en: 'Choose Mail > Preferences > Accounts > +, account type POP.', ja: '「メール」→「環境設定」→「アカウント」→「＋」で、アカウントの種類を「POP」にします。' },
    advanced: { en: 'On the Advanced tab and in "Server Settings" of the outgoing server', ja: '「詳細」タブと送信用メールサーバの「サーバ設定」で' },
    outgoingLogin: { en: 'In the outgoing server\'s Server Settings choose Authentication "Password"', ja: '送信用メールサーバの「サーバ設定」で「認証」を「パスワード」にします' },
    checkBeforeSending: { en: 'Choose "Get Mail" before you send', ja: '送信の前に「受信」を押します' },
  },
];

export function findClient(id: string): MailClient | undefined {
  return CLIENTS.find((client) => client.id === id);
}

const SECURITY: Record<Security, Words> = {
  none: { en: 'no encryption', ja: '暗号化なし' },
  starttls: { en: 'STARTTLS', ja: 'STARTTLS' },
  tls: { en: 'SSL/TLS', ja: 'SSL/TLS' },
};

export function securityName(security: Security, lang: Lang): string {
  return SECURITY[security][lang];
}

/** The numbered steps of one client, in one language, with this server's values. */
export function setupSteps(client: MailClient, settings: MailSettings, lang: Lang, address: string): string[] {
  const incoming = preferredIncoming(settings);
  const outgoing = preferredOutgoing(settings);
  const host = settings.hostname;
  const ja = lang === 'ja';
  const steps = [client.start[lang]];
  if (!client.sendOnly) {
    steps.push(ja ? `名前とメールアドレス（${address}）を入力します。` : `Enter your name and your e-mail address (${address}).`);
    steps.push(ja ? `受信メールサーバー (POP3): ${host}` : `Incoming mail server (POP3): ${host}`);
  }
  steps.push(ja ? `送信メールサーバー (SMTP): ${host}` : `Outgoing mail server (SMTP): ${host}`);
  steps.push(ja ? `ユーザー名（アカウント名）: メールアドレス全体（${address}）、パスワード: お知らせしたパスワード。` : `User name (account name): your full e-mail address (${address}); password: the one you were given.`);
  const ports: string[] = [];
  if (incoming && !client.sendOnly) ports.push(ja ? `受信 (POP3) ポート ${incoming.port}、${securityName(incoming.security, lang)}` : `incoming (POP3) port ${incoming.port} with ${securityName(incoming.security, lang)}`);
  if (outgoing) ports.push(ja ? `送信 (SMTP) ポート ${outgoing.port}、${securityName(outgoing.security, lang)}` : `outgoing (SMTP) port ${outgoing.port} with ${securityName(outgoing.security, lang)}`);
  steps.push(ja ? `${client.advanced[lang]}: ${ports.join('／')}。` : `${client.advanced[lang]}: ${ports.join('; ')}.`);
  if (outgoing?.login) {
    steps.push(`${client.outgoingLogin[lang]}${ja ? '。' : '.'}`);
  } else if (outgoing) {
    const window = settings.popBeforeSmtp.windowMinutes;
    const check = client.checkBeforeSending?.[lang] ?? (ja ? '送信の前に受信を行います' : 'Check for mail before you send');
    steps.push(ja ? `${check}（POP before SMTP: 受信から ${window} 分間、送信できます）。` : `${check} (POP before SMTP: after checking mail you may send for ${window} minutes).`);
  }
  steps.push(ja ? '保存して、自分宛てにテストメールを送って確かめます。' : 'Save, then send yourself a test message to check.');
  return steps;
}
