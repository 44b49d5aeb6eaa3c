import type { z } from 'zod';

type Schema = z.core.$ZodType;

/** The parts of zod 4's schema definitions a walk needs. */
interface Def {
  type: string;
  innerType?: Schema;
  in?: Schema;
  shape?: Record<string, Schema>;
  element?: Schema;
  valueType?: Schema;
  options?: Schema[];
  discriminator?: string;
  values?: unknown[];
}

const def = (schema: Schema) => schema._zod.def as unknown as Def;
const WRAPPERS = new Set(['optional', 'nullable', 'default', 'prefault', 'nonoptional', 'readonly', 'catch']);

function isObject(value: unknown): value is Record<PropertyKey, unknown> {
  return typeof value === 'object' && value !== null;
}

/** `schema` without its wrappers; a union becomes the option `value` belongs to, when that can be told. */
function unwrap(schema: Schema, value: unknown): Schema {
  const d = def(schema);
  if (WRAPPERS.has(d.type)) return unwrap(d.innerType!, value);
  // .transform() and a refined object piped into one: the input side has the shape.
  if (d.type === 'pipe') return unwrap(d.in!, value);
  if (d.type === 'union') {
    const option = unionOption(d, value);
    return option ? unwrap(option, value) : schema;
  }
  return schema;
}

/** By the discriminator's value; in a plain union of objects, the option sharing the most keys with the value. */
function unionOption(union: Def, value: unknown): Schema | undefined {
  if (!isObject(value)) return undefined;
  const objects = union.options!.map((option) => unwrap(option, value)).filter((option) => def(option).type === 'object');
  const tag = union.discriminator;
  if (tag !== undefined) return objects.find((option) => def(def(option).shape![tag]!).values?.includes(value[tag]));
  const shared = (option: Schema) => Object.keys(value).filter((key) => Object.hasOwn(def(option).shape!, key)).length;
  return objects.reduce<Schema | undefined>((best, option) => (shared(option) > (best ? shared(best) : 0) ? option : best), undefined);
}

export interface SchemaPlace {
  schema: Schema;
  /** The input there. */
  value: unknown;
  /** The last object key on the way: "datasets" for datasets[2], "source" for datasets[2].source. */
  field?: string;
  /** Whether the place is an element of the array or record at `field`. */
  element: boolean;
}

/** Follows a zod issue's path through the schema, reading the input alongside to pick union options. */
export function schemaAt(root: Schema, input: unknown, path: readonly PropertyKey[]): SchemaPlace | undefined {
  let place: SchemaPlace = { schema: unwrap(root, input), value: input, element: false };
  for (const key of path) {
    const value = isObject(place.value) ? place.value[key] : undefined;
    const d = def(place.schema);
    if (d.type === 'object') {
      if (typeof key !== 'string' || !Object.hasOwn(d.shape!, key)) return undefined;
      place = { schema: unwrap(d.shape![key]!, value), value, field: key, element: false };
    } else if (d.type === 'array' || d.type === 'record') {
      place = { schema: unwrap((d.element ?? d.valueType)!, value), value, field: place.field, element: true };
    } else {
      return undefined;
    }
  }
  return place;
}

/** The keys an object schema knows (for a union not narrowed to one option: every option's keys). */
export function knownKeys(schema: Schema): string[] {
  const d = def(schema);
  if (d.type === 'object') return Object.keys(d.shape!);
  if (d.type === 'union') return [...new Set(d.options!.flatMap((option) => knownKeys(unwrap(option, undefined))))];
  return [];
}
