import { useEffect, useSyncExternalStore } from 'react';
import { Login, Register } from './Auth.js';
import { navigate, useLocation } from './router.js';
import { session } from './session.js';
import { Shell } from './Shell.js';

export function App() {
  const current = useSyncExternalStore((l) => session.subscribe(l), session.snapshot);
  const { path } = useLocation();
  const authPage = path === '/login' || path === '/register';

  useEffect(() => {
    if (current && authPage) navigate('/inbox', { replace: true });
  }, [current, authPage]);

  if (!current) return path === '/register' ? <Register /> : <Login />;
  if (authPage) return null;
  return <Shell user={current.user} />;
}
