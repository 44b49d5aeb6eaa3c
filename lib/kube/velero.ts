import type { ConfigurationOptions, CoreV1Api, CustomObjectsApi, KubeConfig, ObservableMiddleware } from '@kubernetes/client-node';
import { kubeClient, kubeError } from './client.js';

/** A Velero Backup (velero.io/v1), as much as the drill reads of it. */
export interface VeleroBackup {
  metadata: { name: string; namespace?: string };
  spec?: { includedNamespaces?: string[]; storageLocation?: string };
  status?: {
    phase?: string;
    startTimestamp?: string;
    completionTimestamp?: string;
    errors?: number;
    warnings?: number;
    progress?: { totalItems?: number; itemsBackedUp?: number };
  };
}

export interface VeleroRestoreSpec {
  backupName: string;
  includedNamespaces: string[];
  namespaceMapping: Record<string, string>;
  restorePVs: boolean;
  existingResourcePolicy: 'none' | 'update';
}

/** A Velero Restore (velero.io/v1), as much as the drill reads of it. */
export interface VeleroRestore {
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; deletionTimestamp?: string };
  spec: VeleroRestoreSpec;
  status?: {
    phase?: string;
    startTimestamp?: string;
    completionTimestamp?: string;
    errors?: number;
    warnings?: number;
    failureReason?: string;
    validationErrors?: string[];
    progress?: { totalItems?: number; itemsRestored?: number };
  };
}

/** Phases after which Velero no longer touches a restore. */
export const FINAL_RESTORE_PHASES = ['Completed', 'PartiallyFailed', 'Failed', 'FailedValidation'] as const;

const VELERO = { group: 'velero.io', version: 'v1' } as const;

/**
 * kubeError with the server's Status message (client-node leaves a custom object call's error body an
 * unparsed string); an error that never reached the server (refused, reset) names the resource too.
 */
function apiError(err: unknown, what: string): unknown {
  const { ApiException } = kubeClient();
  if (!(err instanceof ApiException)) return err instanceof Error ? new Error(`${what}: ${err.message}`, { cause: err }) : err;
  if (typeof err.body === 'string') {
    try {
      return kubeError(new ApiException(err.code, err.message, JSON.parse(err.body) as unknown, err.headers), what);
    } catch {
      // not JSON: keep the plain HTTP code
    }
  }
  return kubeError(err, what);
}

function isNotFound(err: unknown): boolean {
  return err instanceof kubeClient().ApiException && err.code === 404;
}

/** Per-request options that abort the request with `signal`: client-node takes no signal argument, but its middleware can set one. */
function abortWith(signal: AbortSignal | undefined): ConfigurationOptions | undefined {
  if (!signal) return undefined;
  const { Observable } = kubeClient();
  const middleware: ObservableMiddleware = {
    pre: (ctx) => {
      ctx.setSignal(signal);
      return new Observable(Promise.resolve(ctx));
    },
    post: (rsp) => new Observable(Promise.resolve(rsp)),
  };
  return { middleware: [middleware], middlewareMergeStrategy: 'append' };
}

/**
 * The calls the Velero drill makes: Backups and Restores in Velero's namespace, and the namespaces a
 * restore maps into. 404/403/409/422 become permanent errors naming the resource (kubeError); an
 * unreachable API stays a plain, retryable error.
 */
export class VeleroApi {
  private readonly custom: CustomObjectsApi;
  private readonly core: CoreV1Api;

  constructor(kc: KubeConfig, readonly namespace: string) {
    this.custom = kc.makeApiClient(kubeClient().CustomObjectsApi);
    this.core = kc.makeApiClient(kubeClient().CoreV1Api);
  }

  async listBackups(signal?: AbortSignal): Promise<VeleroBackup[]> {
    const list = (await this.custom.listNamespacedCustomObject({ ...VELERO, namespace: this.namespace, plural: 'backups' }, abortWith(signal)).catch((err: unknown) => {
      throw apiError(err, `backups.velero.io in namespace ${this.namespace}`);
    })) as { items?: VeleroBackup[] };
    return list.items ?? [];
  }

  /** The restore, or undefined when there is none by that name. */
  async getRestore(name: string, signal?: AbortSignal): Promise<VeleroRestore | undefined> {
    try {
      return (await this.custom.getNamespacedCustomObject({ ...VELERO, namespace: this.namespace, plural: 'restores', name }, abortWith(signal))) as VeleroRestore;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw apiError(err, this.restoreLabel(name));
    }
  }

  /** Creates the restore; one that already exists by that name (an earlier attempt's) is returned instead. */
  async createRestore(name: string, spec: VeleroRestoreSpec, labels: Record<string, string>, signal?: AbortSignal): Promise<{ restore: VeleroRestore; created: boolean }> {
    const body = { apiVersion: `${VELERO.group}/${VELERO.version}`, kind: 'Restore', metadata: { name, namespace: this.namespace, labels }, spec };
    try {
      const restore = (await this.custom.createNamespacedCustomObject({ ...VELERO, namespace: this.namespace, plural: 'restores', body }, abortWith(signal))) as VeleroRestore;
      return { restore, created: true };
    } catch (err) {
      if (!(err instanceof kubeClient().ApiException && err.code === 409)) throw apiError(err, this.restoreLabel(name));
    }
    const existing = await this.getRestore(name, signal);
    // Deleted between the 409 and the read: an API hiccup, not a verdict, so retryable.
    if (!existing) throw new Error(`${this.restoreLabel(name)} existed a moment ago and is gone`);
    return { restore: existing, created: false };
  }

  /** false when it was already gone. */
  async deleteRestore(name: string, signal?: AbortSignal): Promise<boolean> {
    try {
      await this.custom.deleteNamespacedCustomObject({ ...VELERO, namespace: this.namespace, plural: 'restores', name }, abortWith(signal));
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw apiError(err, this.restoreLabel(name));
    }
  }

  /** Whether a namespace exists and is not being deleted. */
  async namespaceActive(name: string, signal?: AbortSignal): Promise<boolean> {
    try {
      const ns = await this.core.readNamespace({ name }, abortWith(signal));
      return ns.status?.phase !== 'Terminating';
    } catch (err) {
      if (isNotFound(err)) return false;
      throw apiError(err, `namespace ${name}`);
    }
  }

  /** false when it was already gone. */
  async deleteNamespace(name: string, signal?: AbortSignal): Promise<boolean> {
    try {
      await this.core.deleteNamespace({ name }, abortWith(signal));
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw apiError(err, `namespace ${name}`);
    }
  }

  private restoreLabel(name: string): string {
    return `restore ${this.namespace}/${name} (restores.velero.io)`;
  }
}
