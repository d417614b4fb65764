import type { z } from 'zod';

/** True when `value` passes the schema and zod would return it unchanged (no key to strip, nothing to transform). */
export type Check = (value: unknown) => boolean;

type Def = z.core.$ZodTypeDef & Record<string, unknown>;
type CheckDef = { check: string; format?: string; pattern?: RegExp; minimum?: number; value?: number; inclusive?: boolean };

/** Checks that only test a value, never change it; any other (a transform, a refinement) makes the schema uncompilable. */
const TESTING_CHECKS = new Set(['min_length', 'max_length', 'length_equals', 'string_format', 'greater_than', 'less_than', 'number_format', 'multiple_of']);
/** String formats whose zod check is exactly a test of `def.pattern` (others, such as ipv6, check more). */
const PATTERN_FORMATS = new Set(['regex', 'datetime', 'date', 'time']);

/**
 * Compiles a zod schema into one generated function that checks a value in place, for the events
 * read back from the log: they were validated by zod on append, so they nearly always pass, and
 * zod's copy of every object is most of its cost. Generated code reads fixed property names, so
 * each site stays monomorphic, as in zod's own JIT. null = the schema uses something this does
 * not know; zod then checks that type itself. A false answer only means "ask zod", which
 * explains what it refuses and copies what it accepts (stripping unknown keys).
 */
export function compileCheck(schema: z.core.$ZodType): Check | null {
  /** Values the generated code refers to as r[i]: regexes, zod check instances, enum sets. */
  const refs: unknown[] = [];
  const helpers: string[] = [];
  const ref = (x: unknown): string => `r[${refs.push(x) - 1}]`;

  /** A boolean JS expression testing `v` (a plain identifier), or null. */
  function expr(s: z.core.$ZodType, v: string): string | null {
    const def = s._zod.def as Def;
    const checks = ((def.checks ?? []) as z.core.$ZodCheck[]).map((c) => [c, c._zod.def as unknown as CheckDef] as const);
    if (checks.some(([, d]) => !TESTING_CHECKS.has(d.check))) return null;
    if (def.coerce) return null;
    const tests = checks.map(([c, d]) => {
      if (d.check === 'min_length' && d.minimum !== undefined) return `${v}.length >= ${d.minimum}`;
      if (d.check === 'string_format' && d.pattern && PATTERN_FORMATS.has(d.format ?? '')) return `(${ref(d.pattern)}.lastIndex = 0, ${ref(d.pattern)}.test(${v}))`;
      if (d.check === 'number_format' && d.format === 'safeint') return `Number.isSafeInteger(${v})`;
      if (d.check === 'greater_than' && typeof d.value === 'number') return `${v} ${d.inclusive ? '>=' : '>'} ${d.value}`;
      if (d.check === 'less_than' && typeof d.value === 'number') return `${v} ${d.inclusive ? '<=' : '<'} ${d.value}`;
      // Anything else runs zod's own check instance on a payload of its own.
      return `ok(${ref(c)}, ${v})`;
    });
    let base: string | null;
    switch (def.type) {
      case 'string':
        base = `typeof ${v} === 'string'`;
        break;
      case 'number':
        base = `typeof ${v} === 'number' && Number.isFinite(${v})`;
        break;
      case 'boolean':
        base = `typeof ${v} === 'boolean'`;
        break;
      case 'enum': {
        const values = Object.values(def.entries as Record<string, unknown>);
        base = values.every((x) => typeof x === 'string') ? `${ref(new Set(values))}.has(${v})` : null;
        break;
      }
      case 'literal': {
        const values = def.values as unknown[];
        base = values.every((x) => x === null || ['string', 'number', 'boolean'].includes(typeof x)) ? `${ref(new Set(values))}.has(${v})` : null;
        break;
      }
      case 'nullable':
      case 'optional': {
        const inner = helper(def.innerType as z.core.$ZodType);
        base = inner && `(${v} === ${def.type === 'nullable' ? 'null' : 'undefined'} || ${inner}(${v}))`;
        break;
      }
      case 'array': {
        const element = helper(def.element as z.core.$ZodType);
        if (!element) return null;
        const name = `h${helpers.length}`;
        helpers.push(`function ${name}(x) { if (!Array.isArray(x)) return false; for (let i = 0; i < x.length; i++) if (!${element}(x[i])) return false; return true; }`);
        base = `${name}(${v})`;
        break;
      }
      case 'object': {
        if (def.catchall) return null;
        const shape = def.shape as Record<string, z.core.$ZodType>;
        const fields: string[] = [];
        const counted: string[] = [];
        for (const [key, field] of Object.entries(shape)) {
          const access = `x[${JSON.stringify(key)}]`;
          const f = helper(field);
          if (!f) return null;
          fields.push(`${f}(${access})`);
          counted.push(`(${access} !== undefined)`);
        }
        const name = `h${helpers.length}`;
        // Own keys beyond the defined fields: zod would strip them, so let zod make that copy.
        helpers.push(
          `function ${name}(x) { if (typeof x !== 'object' || x === null || Array.isArray(x)) return false;` +
            ` if (!(${fields.join(' && ') || 'true'})) return false;` +
            ` let n = 0; for (const k in x) n++; return n === ${counted.join(' + ') || '0'}; }`,
        );
        base = `${name}(${v})`;
        break;
      }
      default:
        base = null;
    }
    return base && [base, ...tests].join(' && ');
  }

  /** The name of a generated function checking one value against `s`. */
  function helper(s: z.core.$ZodType): string | null {
    const name = `h${helpers.length}`;
    helpers.push('');
    const body = expr(s, 'x');
    if (body === null) return null;
    helpers[Number(name.slice(1))] = `function ${name}(x) { return ${body}; }`;
    return name;
  }

  const root = helper(schema);
  if (!root) return null;
  const ok = (c: z.core.$ZodCheck, value: unknown): boolean => {
    const payload = { value, issues: [] } as unknown as z.core.ParsePayload<never>;
    c._zod.check(payload);
    return payload.issues.length === 0;
  };
  // The source is generated from the schemas in this repository, never from input.
  return new Function('r', 'ok', `${helpers.join('\n')}\nreturn ${root};`)(refs, ok) as Check;
}
