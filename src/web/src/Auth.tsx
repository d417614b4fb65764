import { useEffect, useId, useRef, useState, type FormEvent, type ReactNode } from 'react';
import { api, errorMessage } from './api.js';
import { Link, navigate } from './router.js';
import { session } from './session.js';

function AuthFrame({ title, children }: { title: string; children: ReactNode }) {
  const heading = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    document.title = `${title} · mailtrail`;
  }, [title]);
  return (
    <main className="auth" id="main">
      <div className="auth-card">
        <p className="brand" aria-hidden="true">
          mailtrail
        </p>
        <h1 ref={heading} tabIndex={-1}>
          {title}
        </h1>
        {children}
      </div>
    </main>
  );
}

export function Field(props: { label: string; type: string; value: string; onChange: (v: string) => void; autoComplete: string; hint?: string; minLength?: number; autoFocus?: boolean }) {
  const id = useId();
  return (
    <div className="field">
      <label htmlFor={id}>{props.label}</label>
      <input
        id={id}
        type={props.type}
        value={props.value}
        onChange={(e) => props.onChange(e.target.value)}
        autoComplete={props.autoComplete}
        required
        minLength={props.minLength}
        autoFocus={props.autoFocus}
        aria-describedby={props.hint ? `${id}-hint` : undefined}
      />
      {props.hint && (
        <p className="hint" id={`${id}-hint`}>
          {props.hint}
        </p>
      )}
    </div>
  );
}

async function signIn(email: string, password: string): Promise<void> {
  const { token, user } = await api.auth.login.mutate({ email, password });
  session.start(token, { id: user.id, email: user.email, name: user.name });
}

/** A form's submit handler with its busy flag and error message; `action` throws to show an error. */
function useFormAction(action: () => Promise<void>): { busy: boolean; error: string | null; submit: (e: FormEvent) => Promise<void> } {
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: FormEvent): Promise<void> => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await action();
    } catch (err) {
      setError(errorMessage(err));
      setBusy(false);
    }
  };
  return { busy, error, submit };
}

export function Login() {
  const [notice] = useState(() => session.peekEndReason());
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const { busy, error, submit } = useFormAction(() => signIn(email, password));

  return (
    <AuthFrame title="Sign in">
      {notice && (
        <p className="notice" role="status">
          {notice}
        </p>
      )}
      <form onSubmit={submit} aria-describedby={error ? 'login-error' : undefined}>
        <Field label="Email address" type="email" value={email} onChange={setEmail} autoComplete="username" autoFocus />
        <Field label="Password" type="password" value={password} onChange={setPassword} autoComplete="current-password" />
        {error && (
          <p className="error" role="alert" id="login-error">
            {error}
          </p>
        )}
        <button type="submit" className="primary" disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
      </form>
      <p className="switch">
        No account yet? <Link to="/register">Create one</Link>
      </p>
    </AuthFrame>
  );
}

export function Register() {
  const [name, setName] = useState('');
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const { busy, error, submit } = useFormAction(async () => {
    await api.auth.register.mutate({ name, email, password });
    await signIn(email, password);
    navigate('/inbox', { replace: true });
  });

  return (
    <AuthFrame title="Create an account">
      <form onSubmit={submit}>
        <Field label="Your name" type="text" value={name} onChange={setName} autoComplete="name" autoFocus />
        <Field label="Email address" type="email" value={email} onChange={setEmail} autoComplete="username" hint="An address at a domain this server receives mail for." />
        <Field label="Password" type="password" value={password} onChange={setPassword} autoComplete="new-password" minLength={8} hint="At least 8 characters." />
        {error && (
          <p className="error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" className="primary" disabled={busy}>
          {busy ? 'Creating…' : 'Create account'}
        </button>
      </form>
      <p className="switch">
        Have an account? <Link to="/login">Sign in</Link>
      </p>
    </AuthFrame>
  );
}
