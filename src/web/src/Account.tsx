import { useQuery } from '@tanstack/react-query';
import { useState, type FormEvent } from 'react';
import { api, errorCode, errorMessage } from './api.js';
import { Field } from './Auth.js';
import { session, type SessionUser } from './session.js';
import { useFocusHeading } from './Shell.js';

/** The signed-in user's account: name, addresses (the mailbox's and its aliases), and a password change. */
export function Account({ user }: { user: SessionUser }) {
  const heading = useFocusHeading('Account');
  const aliases = useQuery({ queryKey: ['aliases'], queryFn: () => api.aliases.list.query(), refetchOnMount: 'always' });
  const [current, setCurrent] = useState('');
  const [next, setNext] = useState('');
  const [again, setAgain] = useState('');
  const [busy, setBusy] = useState(false);
  const [problem, setProblem] = useState<string | null>(null);
  const [done, setDone] = useState<string | null>(null);

  const changePassword = async (e: FormEvent): Promise<void> => {
    e.preventDefault();
    setDone(null);
    if (next !== again) return setProblem('The two new passwords differ.');
    setBusy(true);
    setProblem(null);
    try {
      const { token } = await api.auth.changePassword.mutate({ currentPassword: current, newPassword: next });
      // Every session signed in with the old password has ended, this one included: carry on with the new token.
      session.start(token, user);
      setCurrent('');
      setNext('');
      setAgain('');
      setDone('Password changed. Anywhere else you were signed in, you are signed out.');
    } catch (err) {
      if (errorCode(err) === 'UNAUTHORIZED') session.expire();
      setProblem(errorMessage(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <section className="account">
      <h1 ref={heading} tabIndex={-1}>
        Account
      </h1>
      <dl className="account-facts">
        <dt>Name</dt>
        <dd>{user.name}</dd>
        <dt>Address</dt>
        <dd>{user.email}</dd>
        <dt>Aliases</dt>
        <dd>
          {aliases.data === undefined ? (
            '…'
          ) : aliases.data.length === 0 ? (
            <span className="muted">None. An admin can add addresses that lead to your mailbox.</span>
          ) : (
            <ul className="alias-list">
              {aliases.data.map((a) => (
                <li key={a.address}>{a.address}</li>
              ))}
            </ul>
          )}
        </dd>
      </dl>
      <h2>Change password</h2>
      <form onSubmit={changePassword} className="account-form" noValidate>
        <Field label="Current password" type="password" value={current} onChange={setCurrent} autoComplete="current-password" />
        <Field label="New password" type="password" value={next} onChange={setNext} autoComplete="new-password" minLength={8} hint="At least 8 characters." />
        <Field label="New password again" type="password" value={again} onChange={setAgain} autoComplete="new-password" minLength={8} />
        {problem && (
          <p className="error" role="alert">
            {problem}
          </p>
        )}
        <p className="save-state" role="status" aria-live="polite">
          {done}
        </p>
        <button type="submit" className="primary" disabled={busy}>
          {busy ? 'Changing…' : 'Change password'}
        </button>
      </form>
    </section>
  );
}
