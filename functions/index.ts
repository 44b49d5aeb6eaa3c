import type { AnyFunction } from '../queue/define.js';
import { drillRestore } from './drillRestore.js';
import { dumpPostgres } from './dumpPostgres.js';
import { mirrorBucket } from './mirrorBucket.js';
import { pruneCheck } from './pruneCheck.js';
import { replicateBackup } from './replicateBackup.js';
import { restoreBackup } from './restoreBackup.js';
import { uploadEtcd } from './uploadEtcd.js';
import { verifyObject } from './verifyObject.js';

/** Every function Lifeboat runs. Adding one: write functions/<name>.ts, list it here, add its test. */
export const allFunctions: readonly AnyFunction[] = [dumpPostgres, verifyObject, drillRestore, mirrorBucket, uploadEtcd, pruneCheck, restoreBackup, replicateBackup];
