/** Markup that is safe to send as is: made only by html`` and join(), which escape what they interpolate. */
export class Html {
  constructor(readonly text: string) {}
}

/** What html`` accepts: markup, text (escaped), numbers, nothing (null, undefined, false render as ''), or lists of these. */
export type Child = Html | string | number | boolean | null | undefined | readonly Child[];

export const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function render(value: Child): string {
  if (value === null || value === undefined || typeof value === 'boolean') return '';
  if (value instanceof Html) return value.text;
  if (Array.isArray(value)) return value.map(render).join('');
  return escapeHtml(String(value));
}

/** A template whose interpolations are escaped unless they are Html already, so text can never become markup. */
export function html(strings: TemplateStringsArray, ...values: Child[]): Html {
  let out = strings[0]!;
  values.forEach((value, i) => (out += render(value) + strings[i + 1]!));
  return new Html(out);
}

/** Joins fragments with a separator (text, escaped). */
export function join(parts: readonly Child[], separator: string): Html {
  return new Html(parts.map(render).join(escapeHtml(separator)));
}
