import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';

/** The only files served under /ui/assets/, with their types. */
const ASSET_TYPES = { 'app.js': 'text/javascript; charset=utf-8', 'style.css': 'text/css; charset=utf-8' } as const;
export type AssetName = keyof typeof ASSET_TYPES;
export const ASSET_PATH = '/ui/assets/';

export interface Asset {
  body: Buffer;
  contentType: string;
  /** A hash of the content: the pages link ?v=<version>, so a new build is never served from a stale cache. */
  version: string;
}

export type Assets = Record<AssetName, Asset>;

/** Reads the assets beside this module: lib/ui/assets under vitest, dist/lib/ui/assets once built (npm run build copies them). */
export async function loadAssets(): Promise<Assets> {
  const dir = new URL('./assets/', import.meta.url);
  const entries = await Promise.all(
    (Object.keys(ASSET_TYPES) as AssetName[]).map(async (name): Promise<[AssetName, Asset]> => {
      const body = await readFile(new URL(name, dir));
      return [name, { body, contentType: ASSET_TYPES[name], version: createHash('sha256').update(body).digest('hex').slice(0, 12) }];
    }),
  );
  return Object.fromEntries(entries) as Assets;
}

export const isAssetName = (name: string): name is AssetName => Object.hasOwn(ASSET_TYPES, name);

export const assetUrl = (assets: Assets, name: AssetName) => `${ASSET_PATH}${name}?v=${assets[name].version}`;
