/** A small history-API router: the server answers every app path with index.html. */
import { useSyncExternalStore, type AnchorHTMLAttributes, type MouseEvent } from 'react';

type Listener = () => void;
const listeners = new Set<Listener>();

function emit(): void {
  for (const l of listeners) l();
}

window.addEventListener('popstate', emit);

let visits = 0;

/** Each navigation gets its own key (in history.state), so opening the same address again starts afresh. */
export function navigate(to: string, opts: { replace?: boolean } = {}): void {
  const state = { visit: `${Date.now()}-${++visits}` };
  if (opts.replace) window.history.replaceState(state, '', to);
  else window.history.pushState(state, '', to);
  emit();
}

/** The key of the current history entry (see navigate). */
export function visitKey(): string {
  const state = window.history.state as { visit?: unknown } | null;
  return typeof state?.visit === 'string' ? state.visit : 'first';
}

const subscribe = (l: Listener): (() => void) => {
  listeners.add(l);
  return () => listeners.delete(l);
};

/** Changes with every navigation, even to the same address. */
const snapshot = (): string => `${visitKey()} ${window.location.pathname}${window.location.search}`;

export interface Location {
  path: string;
  query: URLSearchParams;
}

export function useLocation(): Location {
  const current = useSyncExternalStore(subscribe, snapshot);
  const url = new URL(current.slice(current.indexOf(' ') + 1), window.location.origin);
  return { path: url.pathname, query: url.searchParams };
}

/** An ordinary link (keyboard, middle-click, "open in new tab" all work) that navigates in place. */
export function Link({ to, onClick, ...rest }: { to: string } & AnchorHTMLAttributes<HTMLAnchorElement>) {
  const click = (e: MouseEvent<HTMLAnchorElement>): void => {
    onClick?.(e);
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    navigate(to);
  };
  return <a href={to} onClick={click} {...rest} />;
}
