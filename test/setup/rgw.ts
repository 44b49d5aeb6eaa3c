/**
 * Starts a real Ceph RGW for the test run with the project's own script, unless S3_ENDPOINT points at
 * one already (as .ci/run does). Never skips: without ceph the run fails and says what to install.
 */
import type { TestProject } from 'vitest/node';
import { startRgw } from '../rgw/launch.js';

export interface S3TestEnv {
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  cephConf?: string;
}

declare module 'vitest' {
  export interface ProvidedContext {
    s3: S3TestEnv;
  }
}

export default async function setup(project: TestProject) {
  const { S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY, CEPH_CONF } = process.env;
  if (S3_ENDPOINT && S3_ACCESS_KEY && S3_SECRET_KEY) {
    project.provide('s3', { endpoint: S3_ENDPOINT, accessKeyId: S3_ACCESS_KEY, secretAccessKey: S3_SECRET_KEY, cephConf: CEPH_CONF });
    return;
  }
  let rgw;
  try {
    rgw = await startRgw();
  } catch {
    throw new Error('could not start Ceph RGW for the tests (see above); set S3_ENDPOINT/S3_ACCESS_KEY/S3_SECRET_KEY to use a running one');
  }
  project.provide('s3', { endpoint: rgw.endpoint, accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey, cephConf: rgw.cephConf });
  return () => rgw.stop();
}
