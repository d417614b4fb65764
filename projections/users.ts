import { defineProjection } from '../src/projection/projection.js';

export type UserDoc = {
  id: string;
  email: string;
  /** Lower case, for case-insensitive login. */
  emailKey: string;
  name: string;
  role: 'user' | 'admin';
  passwordHash: string;
  disabled: boolean;
  createdAt: string;
};

/** Accounts, for login and ownership checks. */
export const users = defineProjection<UserDoc>({
  spec: { name: 'users', indexed: ['emailKey'], indexes: [['emailKey']] },
  version: 1,
  keys: (e) =>
    e.type === 'UserRegistered' || e.type === 'UserPasswordChanged' || e.type === 'UserDisabled' ? [e.data.userId] : [],
  evolve(doc, e) {
    switch (e.type) {
      case 'UserRegistered':
        return {
          id: e.data.userId,
          email: e.data.email,
          emailKey: e.data.email.toLowerCase(),
          name: e.data.name,
          role: e.data.role,
          passwordHash: e.data.passwordHash,
          disabled: false,
          createdAt: e.recordedAt,
        };
      case 'UserPasswordChanged':
        return doc && { ...doc, passwordHash: e.data.passwordHash };
      case 'UserDisabled':
        return doc && { ...doc, disabled: true };
      default:
        return doc;
    }
  },
});
