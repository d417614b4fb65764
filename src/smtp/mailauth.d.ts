/** The parts of mailauth (4.x, no bundled types) that mailtrail uses. */
declare module 'mailauth' {
  import type { Readable } from 'node:stream';

  export interface MailauthStatus {
    result: string;
    comment?: string | boolean;
  }

  export interface AuthenticateResult {
    dkim: { results?: { status: MailauthStatus; signingDomain?: string }[]; headerFrom?: string[] };
    spf: { status: MailauthStatus; domain?: string } | false | undefined;
    dmarc: { status: MailauthStatus; domain?: string; policy?: string; p?: string; sp?: string } | false;
    arc: { status: MailauthStatus } | false;
    bimi: unknown;
    /** Received-SPF and Authentication-Results header lines, CRLF separated, ending in CRLF. */
    headers: string;
  }

  export function authenticate(
    input: Readable | Buffer | string,
    opts: {
      ip?: string;
      helo?: string;
      sender?: string;
      mta?: string;
      resolver?: (name: string, rrtype: string) => Promise<unknown>;
      disableArc?: boolean;
      disableDmarc?: boolean;
      disableBimi?: boolean;
      minBitLength?: number;
      trustReceived?: boolean;
    },
  ): Promise<AuthenticateResult>;
}

declare module 'mailauth/lib/dkim/sign.js' {
  export function dkimSign(
    input: Buffer | string,
    opts: { canonicalization?: string; algorithm?: string; signTime?: Date; signatureData: { signingDomain: string; selector: string; privateKey: string | Buffer; algorithm?: string; canonicalization?: string }[] },
  ): Promise<{ signatures: string; errors: unknown[] }>;
}
