/**
 * The signed-in session: the token from `auth.login` and who it is for. Kept in this origin's
 * localStorage, so it survives a reload; mail content never runs in this origin (HTML mail is
 * shown in an iframe sandboxed without allow-same-origin or allow-scripts), so it cannot read it.
 * The session ends by logout, when the token's `exp` passes, or when the server answers
 * UNAUTHORIZED; the login screen then says why.
 */

const KEY = 'mailtrail.session';

export interface SessionUser {
  id: string;
  email: string;
  name: string;
}

interface Stored {
  token: string;
  user: SessionUser;
}

type Listener = () => void;

/** Seconds since the epoch at which a JWT expires, or null when it says nothing (or is not a JWT). */
export function tokenExpiry(token: string): number | null {
  try {
    const part = token.split('.')[1];
    if (!part) return null;
    const json = atob(part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '='));
    const exp = (JSON.parse(json) as { exp?: unknown }).exp;
    return typeof exp === 'number' ? exp : null;
  } catch {
    return null;
  }
}

function read(): Stored | null {
  try {
    const raw = localStorage.getItem(KEY);
    if (!raw) return null;
    const parsed = JSON.parse(raw) as Partial<Stored>;
    if (typeof parsed.token !== 'string' || !parsed.user || typeof parsed.user.email !== 'string') return null;
    return { token: parsed.token, user: parsed.user };
  } catch {
    return null;
  }
}

class Session {
  private current: Stored | null = read();
  /** Why the last session ended, for the login screen; cleared by the next sign-in. */
  private endedBecause: string | null = null;
  private readonly listeners = new Set<Listener>();
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor() {
    if (this.current && this.expired(this.current.token)) this.end('Your session has expired. Sign in again.');
    this.arm();
    // Another tab signed in or out.
    window.addEventListener('storage', (e) => {
      if (e.key !== KEY) return;
      this.current = read();
      if (!this.current) this.endedBecause = 'You signed out in another tab.';
      this.arm();
      this.emit();
    });
  }

  token(): string | null {
    return this.current?.token ?? null;
  }

  user(): SessionUser | null {
    return this.current?.user ?? null;
  }

  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Snapshot for useSyncExternalStore. */
  snapshot = (): Stored | null => this.current;

  peekEndReason(): string | null {
    return this.endedBecause;
  }

  start(token: string, user: SessionUser): void {
    this.current = { token, user };
    this.endedBecause = null;
    localStorage.setItem(KEY, JSON.stringify(this.current));
    this.arm();
    this.emit();
  }

  logout(): void {
    this.end('You have signed out.');
  }

  /** The server no longer accepts the token (expired, revoked, account disabled). */
  expire(): void {
    if (this.current) this.end('Your session has expired. Sign in again.');
  }

  private end(reason: string): void {
    this.current = null;
    this.endedBecause = reason;
    try {
      localStorage.removeItem(KEY);
    } catch {
      // storage unavailable: nothing to remove
    }
    this.arm();
    this.emit();
  }

  private expired(token: string): boolean {
    const exp = tokenExpiry(token);
    return exp !== null && exp * 1000 <= Date.now();
  }

  /** A timer that ends the session when the token's exp passes. */
  private arm(): void {
    clearTimeout(this.timer);
    const exp = this.current ? tokenExpiry(this.current.token) : null;
    if (exp === null) return;
    const ms = exp * 1000 - Date.now();
    // setTimeout overflows past 2^31-1 ms; re-arm then.
    this.timer = setTimeout(() => (ms > 2 ** 31 - 1 ? this.arm() : this.expire()), Math.max(0, Math.min(ms, 2 ** 31 - 1)));
  }

  private emit(): void {
    for (const l of this.listeners) l();
  }
}

export const session = new Session();
