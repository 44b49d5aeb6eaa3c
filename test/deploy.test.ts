// Deployment files, checked offline: Nix syntax, Kubernetes manifests against the API schemas
// (kubernetes-models), kustomize resolution (and a real render with `kubectl kustomize` when kubectl is
// installed), the PrometheusRule against deploy/prometheus, the configs through `lifeboat config check`,
// and every `lifeboat` command in the runbooks against the CLI's own --help.
// Needs: Debian's nix-bin (nix-instantiate) and a built dist/ (npm test builds it first).
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const cli = join(root, 'dist/lib/cli/main.js');

type Obj = { apiVersion?: string; kind?: string; metadata?: { name?: string; namespace?: string; labels?: Record<string, string> }; [k: string]: unknown };
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;

function walk(dir: string, accept: (path: string) => boolean, skip = new Set(['node_modules', '.git', 'dist', '.lifeboat'])): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (skip.has(entry.name)) continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...walk(path, accept, skip));
    else if (accept(path)) out.push(path);
  }
  return out.sort();
}

function docs(file: string): Obj[] {
  return parseAllDocuments(readFileSync(file, 'utf8')).map((d) => {
    if (d.errors.length) throw new Error(`${relative(root, file)}: ${d.errors[0]!.message}`);
    return d.toJS() as Obj;
  }).filter((d) => d !== null && d !== undefined);
}

const isSops = (file: string) => file.endsWith('.enc.yaml');
/** Kubernetes manifests: every YAML under these directories except kustomizations, SOPS rules and lifeboat configs. */
const manifestFiles = ['deploy/base', 'deploy/velero', 'deploy/overlays'].flatMap((d) =>
  walk(join(root, d), (p) => /\.ya?ml$/.test(p) && !['kustomization.yaml', '.sops.yaml', 'lifeboat.yaml'].includes(basename(p))),
);

function manifestObjects(file: string): Obj[] {
  return docs(file).map((o) => {
    if (!isSops(file)) return o;
    const { sops, ...rest } = o as Obj & { sops?: unknown };
    expect(sops, `${relative(root, file)}: SOPS metadata`).toBeTypeOf('object');
    return rest;
  });
}

const modelCache = new Map<string, Any>();
async function modelFor(apiVersion: string, kind: string): Promise<Any | undefined> {
  const modulePath = `kubernetes-models/${apiVersion}`;
  if (!modelCache.has(modulePath)) modelCache.set(modulePath, await import(modulePath).catch(() => null));
  return modelCache.get(modulePath)?.[kind];
}

/** Custom resources kubernetes-models does not know: their required fields, by hand. */
function checkCustomResource(o: Obj, where: string): boolean {
  const spec = (o as Any).spec;
  switch (`${o.apiVersion}/${o.kind}`) {
    case 'monitoring.coreos.com/v1/ServiceMonitor':
      expect(spec?.selector?.matchLabels, `${where}: spec.selector`).toBeTypeOf('object');
      expect(spec.endpoints?.length, `${where}: spec.endpoints`).toBeGreaterThan(0);
      for (const e of spec.endpoints) expect(e.port ?? e.targetPort, `${where}: endpoint port`).toBeTruthy();
      return true;
    case 'monitoring.coreos.com/v1/PrometheusRule':
      expect(Array.isArray(spec?.groups) && spec.groups.length > 0, `${where}: spec.groups`).toBe(true);
      for (const g of spec.groups) {
        expect(g.name, `${where}: group name`).toBeTypeOf('string');
        for (const r of g.rules) {
          expect(r.alert ?? r.record, `${where}: rule name`).toBeTypeOf('string');
          expect(r.expr, `${where}: ${r.alert} expr`).toBeTypeOf('string');
        }
      }
      return true;
    case 'helm.cattle.io/v1/HelmChart':
      expect(spec?.chart, `${where}: spec.chart`).toBeTypeOf('string');
      expect(spec.repo, `${where}: spec.repo`).toMatch(/^https:\/\//);
      expect(spec.targetNamespace, `${where}: spec.targetNamespace`).toBeTypeOf('string');
      expect(() => parse(spec.valuesContent ?? ''), `${where}: valuesContent parses`).not.toThrow();
      return true;
    default:
      return false;
  }
}

async function validateObject(o: Obj, where: string): Promise<void> {
  expect(o.apiVersion, `${where}: apiVersion`).toBeTypeOf('string');
  expect(o.kind, `${where}: kind`).toBeTypeOf('string');
  expect(o.metadata?.name, `${where}: metadata.name`).toBeTypeOf('string');
  if (checkCustomResource(o, where)) return;
  const Model = await modelFor(o.apiVersion!, o.kind!);
  expect(Model, `${where}: no model for ${o.apiVersion} ${o.kind} in kubernetes-models (add a hand check)`).toBeTruthy();
  try {
    new Model(o).validate();
  } catch (err) {
    throw new Error(`${where}: ${o.kind} ${o.metadata?.name} is invalid: ${(err as Error).message}`);
  }
}

function tool(name: string): boolean {
  return spawnSync(name, ['version', '--client'], { stdio: 'ignore' }).error === undefined;
}

describe('nix files', () => {
  const nixFiles = walk(root, (p) => p.endsWith('.nix'));

  it('finds the flake and both modules', () => {
    expect(nixFiles.map((f) => relative(root, f))).toEqual(expect.arrayContaining(['flake.nix', 'nix/hub.nix', 'nix/lifeboat.nix']));
  });

  it.each(nixFiles.map((f) => [relative(root, f), f]))('%s parses (nix-instantiate --parse)', (_, file) => {
    const result = spawnSync('nix-instantiate', ['--parse', file], { encoding: 'utf8' });
    if (result.error) throw new Error(`nix-instantiate is not installed (${(result.error as NodeJS.ErrnoException).code}): install Debian's nix-bin`);
    // stderr carries a warning about the missing nixbld group on a plain Debian install: not an error.
    expect(result.status, result.stderr).toBe(0);
  });

  it('nix/hub-provision.sh (run by hub.nix) is strict bash and parses (bash -n); test/hubProvision.fakeMc.test.ts runs it', () => {
    const file = join(root, 'nix/hub-provision.sh');
    expect(readFileSync(file, 'utf8')).toMatch(/^#!\/usr\/bin\/env bash\n[\s\S]*^set -euo pipefail$/m);
    const result = spawnSync('bash', ['-n', file], { encoding: 'utf8' });
    expect(result.status, result.stderr).toBe(0);
    expect(readFileSync(join(root, 'nix/hub.nix'), 'utf8')).toContain('${./hub-provision.sh}');
  });
});

describe('flake', () => {
  const flake = readFileSync(join(root, 'flake.nix'), 'utf8');
  const version = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;
  /** The value of a top-level `name = "…";` binding in flake.nix. */
  const stringBinding = (name: string) => new RegExp(`^\\s*${name} = "([^"]+)";`, 'm').exec(flake)?.[1];
  const imageName = stringBinding('imageName');
  const imageRef = `${imageName}:${version}`;

  it('has no placeholder hash: the npm dependencies come from package-lock.json through importNpmLock', () => {
    expect(flake).not.toMatch(/fakeHash|npmDepsHash/);
    expect(flake).toMatch(/npmDeps = (assert \w+; )?pkgs\.importNpmLock \{ npmRoot = \.\/\.; \};/);
    expect(flake).toContain('npmConfigHook = pkgs.importNpmLock.npmConfigHook;');
  });

  it('pins Node 22 or 24 (Node 20 reached end of life), everywhere', () => {
    const pinned = [...flake.matchAll(/\bnodejs_(\d+)\b/g)].map((m) => m[1]);
    expect(pinned.length).toBeGreaterThan(0);
    for (const major of pinned) expect(['22', '24'], `nodejs_${major}`).toContain(major);
    expect(flake).toMatch(/nodejs = pkgs\.nodejs_(22|24);/);
  });

  it('defines packages.image: a layered OCI image with the CLI, PostgreSQL clients, etcd tools and CA certificates', () => {
    expect(flake).toMatch(/\n\s+image =[\s\S]*pkgs\.dockerTools\.(buildLayeredImage|streamLayeredImage) \{/);
    const image = flake.slice(flake.search(/\n\s+image =/), flake.indexOf('nixosModules = {'));
    expect(image).toMatch(/name = imageName;/);
    expect(image).toMatch(/tag = imageTag;/);
    const contents = /contents = \[([^\]]*)\]/.exec(image)?.[1] ?? '';
    for (const wanted of ['default', 'Postgresql', 'pkgs.etcd', 'pkgs.cacert']) expect(contents, wanted).toContain(wanted);
    expect(image).toMatch(/postgresqlPackages = \[ pkgs\.postgresql_15 pkgs\.postgresql_16 pkgs\.postgresql_17 \];/);
    // Local drills find each major where lib/postgres/cluster.ts looks.
    expect(image).toContain('usr/lib/postgresql/${lib.versions.major pg.version}');
    expect(readFileSync(join(root, 'lib/postgres/cluster.ts'), 'utf8')).toContain('/usr/lib/postgresql/${options.major}/bin');
  });

  it('the image is lifeboat:<package.json version>', () => {
    expect(imageName).toBe('lifeboat');
    expect(flake).toMatch(/^\s*packageJson = lib\.importJSON \.\/package\.json;$/m);
    expect(flake).toMatch(/^\s*version = packageJson\.version;$/m);
    expect(flake).toMatch(/^\s*imageTag = version;$/m);
  });

  it('every Lifeboat container names that image, IfNotPresent (it is imported on the nodes, not pulled)', () => {
    const deployments = ['worker-deployment.yaml', 'etcd-deployment.yaml', 'serve.yaml']
      .flatMap((f) => docs(join(root, 'deploy/base', f)))
      .filter((o) => o.kind === 'Deployment') as Any[];
    expect(deployments).toHaveLength(3);
    for (const d of deployments) {
      for (const c of [...d.spec.template.spec.containers, ...(d.spec.template.spec.initContainers ?? [])]) {
        expect(c.image, `${d.metadata.name}/${c.name}`).toBe(imageRef);
        expect(c.imagePullPolicy, `${d.metadata.name}/${c.name}`).toBe('IfNotPresent');
      }
    }
  });

  it("the kustomizations' image overrides keep the flake's name and tag", () => {
    for (const dir of ['deploy/base', 'deploy/overlays/example']) {
      const k = parse(readFileSync(join(root, dir, 'kustomization.yaml'), 'utf8')) as { images?: Array<{ name: string; newName?: string; newTag?: string }> };
      for (const i of k.images ?? []) {
        expect(`${i.newName ?? i.name}:${i.newTag ?? version}`, `${dir}/kustomization.yaml images ${i.name}`).toBe(imageRef);
      }
    }
  });
});

describe('kubernetes manifests', () => {
  it('finds the manifests', () => {
    const names = manifestFiles.map((f) => relative(root, f));
    expect(names).toEqual(expect.arrayContaining(['deploy/base/serve.yaml', 'deploy/velero/helmchart.yaml', 'deploy/overlays/example/secrets.enc.yaml']));
  });

  it.each(manifestFiles.map((f) => [relative(root, f), f]))('%s validates against the API schema', async (name, file) => {
    const objects = manifestObjects(file);
    expect(objects.length, name).toBeGreaterThan(0);
    for (const o of objects) await validateObject(o, name);
  });

  it('SOPS examples hold only ciphertext placeholders and SOPS metadata, no plaintext', () => {
    const encrypted = manifestFiles.filter(isSops);
    expect(encrypted.length).toBeGreaterThanOrEqual(2);
    for (const file of encrypted) {
      const text = readFileSync(file, 'utf8');
      expect(text, file).toMatch(/NOT A REAL SECRET/);
      for (const d of docs(file) as Any[]) {
        expect(d.sops?.mac, file).toMatch(/^ENC\[AES256_GCM,/);
        expect(d.sops?.age?.[0]?.recipient, file).toMatch(/^age1/);
        const values = { ...(d.data ?? {}), ...(d.stringData ?? {}) };
        expect(Object.keys(values).length, file).toBeGreaterThan(0);
        for (const [k, v] of Object.entries(values)) expect(v, `${file}: ${k}`).toMatch(/^ENC\[AES256_GCM,data:[^,]*,iv:[^,]*,tag:[^,]*,type:str\]$/);
      }
    }
    const rules = parse(readFileSync(join(root, 'deploy/overlays/example/.sops.yaml'), 'utf8'));
    expect(rules.creation_rules[0].age).toMatch(/^age1/);
    expect(rules.creation_rules[0].encrypted_regex).toBe('^(data|stringData)$');
  });

  it('Velero: AWS plugin, the hub location, kopia, node agent, and the daily schedule without secrets', () => {
    const [chart] = docs(join(root, 'deploy/velero/helmchart.yaml')) as Any[];
    expect(chart.metadata.namespace).toBe('kube-system');
    expect(chart.spec.repo).toBe('https://vmware-tanzu.github.io/helm-charts');
    const values = parse(chart.spec.valuesContent);
    expect(values.initContainers.map((c: Any) => c.image).join()).toMatch(/^velero\/velero-plugin-for-aws:v\d/);
    expect(values.deployNodeAgent).toBe(true);
    expect(values.configuration.uploaderType).toBe('kopia');
    const [bsl] = values.configuration.backupStorageLocation;
    expect(bsl).toMatchObject({ provider: 'aws', bucket: 'velero', config: { region: 'minio', s3Url: 'http://pi.lan:9000' } });
    expect(String(bsl.config.s3ForcePathStyle)).toBe('true');
    expect(values.credentials).toMatchObject({ useSecret: true, existingSecret: 'velero-hub-credentials' });
    const daily = values.schedules.daily;
    expect(daily.schedule).toBe('0 3 * * *');
    expect(daily.template.excludedResources).toContain('secrets');
    expect(['336h', '336h0m0s']).toContain(daily.template.ttl);
    expect(daily.template.defaultVolumesToFsBackup).toBe(true);
  });

  const lifeboatDeployments = () =>
    ['worker-deployment.yaml', 'etcd-deployment.yaml', 'serve.yaml'].flatMap((f) => docs(join(root, 'deploy/base', f))).filter((o) => o.kind === 'Deployment') as Any[];

  it('Lifeboat deployments: the one image name, resources, hardened containers, /tmp, the right functions', () => {
    const byName = Object.fromEntries(lifeboatDeployments().map((d) => [d.metadata.name, d]));
    expect(Object.keys(byName).sort()).toEqual(['lifeboat-etcd', 'lifeboat-serve', 'lifeboat-worker']);
    for (const d of Object.values(byName) as Any[]) {
      const pod = d.spec.template.spec;
      for (const c of pod.containers) {
        const where = `${d.metadata.name}/${c.name}`;
        expect(c.image, where).toBe('lifeboat:0.1.0');
        expect(c.resources?.requests?.memory, where).toBeTruthy();
        expect(c.resources?.limits?.memory, where).toBeTruthy();
        expect(c.securityContext, where).toMatchObject({ readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] }, seccompProfile: { type: 'RuntimeDefault' } });
        // The etcd uploader is the one documented exception: k3s's snapshots are root-only (0600).
        if (d.metadata.name !== 'lifeboat-etcd') expect(c.securityContext.runAsNonRoot, where).toBe(true);
        const tmp = c.volumeMounts.find((m: Any) => m.mountPath === '/tmp');
        expect(pod.volumes.find((v: Any) => v.name === tmp?.name)?.emptyDir, `${where}: /tmp emptyDir`).toBeTruthy();
        expect(c.volumeMounts.find((m: Any) => m.mountPath === '/run/secrets/lifeboat')?.readOnly, where).toBe(true);
      }
    }
    expect(byName['lifeboat-worker'].spec.template.spec.containers[0].args).toEqual(['worker', '--functions', 'dumpPostgres,verifyObject,drillRestore,mirrorBucket,pruneCheck,restoreBackup']);
    const etcd = byName['lifeboat-etcd'].spec.template.spec;
    expect(etcd.containers[0].args).toEqual(['worker', '--functions', 'uploadEtcd']);
    expect(etcd.nodeSelector).toEqual({ 'node-role.kubernetes.io/control-plane': 'true' });
    expect(etcd.tolerations.length).toBeGreaterThan(0);
    const snapshots = etcd.volumes.find((v: Any) => v.hostPath?.path === '/var/lib/rancher/k3s/server/db/snapshots');
    expect(etcd.containers[0].volumeMounts.find((m: Any) => m.name === snapshots.name).readOnly).toBe(true);
    expect(etcd.containers[0].volumeMounts.every((m: Any) => m.mountPath === '/tmp' || m.readOnly === true)).toBe(true);
    const serve = byName['lifeboat-serve'].spec.template.spec.containers[0];
    expect(serve.args).toEqual(['serve']);
    expect(serve.readinessProbe.httpGet.path).toBe('/healthz');
    // Liveness must not restart serve over a Redis outage (/healthz is 503 then).
    expect(serve.livenessProbe.httpGet.path).toBe('/livez');
    expect(serve.ports[0].containerPort).toBe(9465);
  });

  it('Redis persists: appendonly yes on a PVC', () => {
    const sts = docs(join(root, 'deploy/base/redis.yaml')).find((o) => o.kind === 'StatefulSet') as Any;
    const args: string[] = sts.spec.template.spec.containers[0].args;
    expect(args[args.indexOf('--appendonly') + 1]).toBe('yes');
    expect(sts.spec.volumeClaimTemplates[0].metadata.name).toBe('data');
    expect(sts.spec.template.spec.containers[0].volumeMounts).toContainEqual({ name: 'data', mountPath: '/data' });
  });

  it('RBAC: resourceNames for the postgres pod and secret, the drill and snapshot permissions (exact sets: test/rbac.test.ts)', () => {
    const role = docs(join(root, 'deploy/base/rbac-postgres.yaml')).find((o) => o.kind === 'Role') as Any;
    const exec = role.rules.find((r: Any) => r.resources.includes('pods/exec'));
    expect(exec.resourceNames).toEqual(['pg-postgresql-0']);
    expect(exec.verbs).toContain('create');
    const secret = role.rules.find((r: Any) => r.resources.includes('secrets'));
    expect(secret).toEqual({ apiGroups: [''], resources: ['secrets'], resourceNames: ['pg-postgresql'], verbs: ['get'] });
    const cluster = docs(join(root, 'deploy/base/rbac-cluster.yaml')).filter((o) => o.kind === 'ClusterRole') as Any[];
    const rules = cluster.flatMap((c) => c.rules);
    const verbs = (resource: string) => [...new Set(rules.filter((r: Any) => r.resources.includes(resource)).flatMap((r: Any) => r.verbs))].sort();
    // The postgres drill creates and deletes its namespace; the Velero drill reads and deletes Velero's.
    expect(verbs('namespaces')).toEqual(['create', 'delete', 'get']);
    // No pod delete: the drill deletes the namespace, and the pod with it.
    expect(verbs('pods')).toEqual(['create', 'get']);
    expect(verbs('pods/exec')).toEqual(['create', 'get']);
    expect(rules.find((r: Any) => r.apiGroups.includes('k3s.cattle.io'))).toMatchObject({ resources: ['etcdsnapshotfiles'], verbs: ['list'] });
    // Nothing reads secrets cluster-wide.
    expect(rules.some((r: Any) => r.resources.includes('secrets') || r.resources.includes('*'))).toBe(false);
    // Each component has its own ServiceAccount; the old shared `lifeboat` one is gone.
    const bindings = ['rbac-cluster.yaml', 'rbac-postgres.yaml', 'rbac-velero.yaml'].flatMap((f) => docs(join(root, 'deploy/base', f))).filter((o) => /Binding$/.test(o.kind!)) as Any[];
    expect(new Set(bindings.flatMap((b) => b.subjects.map((s: Any) => s.name)))).toEqual(new Set(['lifeboat-worker', 'lifeboat-etcd']));
    const byName = Object.fromEntries(lifeboatDeployments().map((d) => [d.metadata.name, d.spec.template.spec]));
    expect([byName['lifeboat-worker'].serviceAccountName, byName['lifeboat-etcd'].serviceAccountName, byName['lifeboat-serve'].serviceAccountName]).toEqual(['lifeboat-worker', 'lifeboat-etcd', 'lifeboat-serve']);
    expect(byName['lifeboat-serve'].automountServiceAccountToken).toBe(false);
  });

  it('the admission policy confines the worker and is bound', () => {
    const objects = docs(join(root, 'deploy/base/admission-policy.yaml')) as Any[];
    const policy = objects.find((o) => o.kind === 'ValidatingAdmissionPolicy');
    expect(policy.apiVersion).toBe('admissionregistration.k8s.io/v1');
    expect(policy.spec.matchConditions[0].expression).toContain("'system:serviceaccount:lifeboat:lifeboat-worker'");
    expect(objects.find((o) => o.kind === 'ValidatingAdmissionPolicyBinding').spec).toEqual({ policyName: policy.metadata.name, validationActions: ['Deny'] });
  });
});

describe('kustomize', () => {
  type Kustomization = { resources?: string[]; configMapGenerator?: Array<{ name: string; files?: string[] }>; images?: Array<{ name: string }>; patches?: Array<{ path?: string; patch?: string; target?: { kind?: string; name?: string } }> };

  /** Resolves a kustomization by hand: every file it names exists and parses; returns the objects. */
  function resolveKustomization(dir: string): Obj[] {
    const k = parse(readFileSync(join(dir, 'kustomization.yaml'), 'utf8')) as Kustomization;
    const objects: Obj[] = [];
    for (const r of k.resources ?? []) {
      const path = join(dir, r);
      expect(existsSync(path), `${relative(root, dir)}: resource ${r} exists`).toBe(true);
      if (statSync(path).isDirectory()) objects.push(...resolveKustomization(path));
      else objects.push(...manifestObjects(path));
    }
    for (const g of k.configMapGenerator ?? []) {
      for (const f of g.files ?? []) {
        const path = join(dir, f.includes('=') ? f.slice(f.indexOf('=') + 1) : f);
        expect(existsSync(path), `${relative(root, dir)}: ${g.name} file ${f} exists`).toBe(true);
        const text = readFileSync(path, 'utf8');
        if (path.endsWith('.json')) expect(() => JSON.parse(text), path).not.toThrow();
        else expect(() => parse(text), path).not.toThrow();
      }
    }
    for (const p of k.patches ?? []) {
      if (p.path) expect(existsSync(join(dir, p.path)), `${relative(root, dir)}: patch ${p.path}`).toBe(true);
      if (p.target?.name) expect(objects.some((o) => o.kind === p.target!.kind && o.metadata?.name === p.target!.name), `${relative(root, dir)}: patch target ${p.target.kind}/${p.target.name}`).toBe(true);
    }
    return objects;
  }

  it('the base resolves: every resource and generator file exists and parses; image `lifeboat` is overridable', () => {
    const dir = join(root, 'deploy/base');
    const objects = resolveKustomization(dir);
    const k = parse(readFileSync(join(dir, 'kustomization.yaml'), 'utf8')) as Kustomization;
    expect(k.images?.map((i) => i.name)).toEqual(['lifeboat']);
    // Every manifest in the directory is listed (nothing forgotten).
    const listed = new Set(k.resources);
    for (const f of readdirSync(dir).filter((f) => f.endsWith('.yaml') && !['kustomization.yaml', 'lifeboat.yaml'].includes(f))) expect(listed.has(f), `${f} listed in resources`).toBe(true);
    const kinds = objects.map((o) => `${o.kind}/${o.metadata?.name}`);
    expect(kinds).toEqual(expect.arrayContaining(['Namespace/lifeboat', 'ServiceAccount/lifeboat-worker', 'ServiceAccount/lifeboat-etcd', 'ServiceAccount/lifeboat-serve', 'ValidatingAdmissionPolicy/lifeboat-worker-drill', 'ValidatingAdmissionPolicyBinding/lifeboat-worker-drill', 'Deployment/lifeboat-worker', 'Deployment/lifeboat-etcd', 'Deployment/lifeboat-serve', 'Service/lifeboat-serve', 'StatefulSet/lifeboat-redis', 'Service/lifeboat-redis', 'ServiceMonitor/lifeboat', 'PrometheusRule/lifeboat', 'PodDisruptionBudget/lifeboat-serve']));
    const lifeboatImages = objects.filter((o) => o.kind === 'Deployment').flatMap((o: Any) => o.spec.template.spec.containers.map((c: Any) => c.image));
    expect(new Set(lifeboatImages)).toEqual(new Set(['lifeboat:0.1.0']));
    const generators = k.configMapGenerator!.map((g) => g.name);
    expect(generators).toEqual(['lifeboat-config', 'lifeboat-dashboard']);
  });

  it('the example overlay resolves and moves the Role to the namespace its config dumps from', () => {
    const dir = join(root, 'deploy/overlays/example');
    resolveKustomization(dir);
    const k = parse(readFileSync(join(dir, 'kustomization.yaml'), 'utf8')) as Kustomization;
    expect(k.resources).toEqual(expect.arrayContaining(['../../base', '../../velero']));
    expect(k.images?.map((i) => i.name)).toEqual(['lifeboat']);
    const config = parse(readFileSync(join(dir, 'lifeboat.yaml'), 'utf8'));
    const ns = config.datasets.find((d: Any) => d.kind === 'postgres' && d.source.mode === 'kubernetes').source.namespace;
    const pod = config.datasets.find((d: Any) => d.kind === 'postgres' && d.source.mode === 'kubernetes').source.pod;
    // The Role and RoleBinding move to the dump namespace; the admission policy's dump pod follows.
    expect(k.patches!.map((p) => parse(p.patch!).at(-1).value)).toEqual([ns, ns, `['${ns}/${pod}']`]);
  });

  const kubectl = tool('kubectl');
  it.runIf(kubectl)('kubectl kustomize renders base and overlay; every rendered object validates', async () => {
    for (const [dir, tag, pgNamespace] of [['deploy/base', 'lifeboat:0.1.0', 'db'], ['deploy/overlays/example', 'lifeboat:0.1.0', 'databases']] as const) {
      const out = execFileSync('kubectl', ['kustomize', join(root, dir)], { encoding: 'utf8' });
      const objects = parseAllDocuments(out).map((d) => d.toJS() as Obj).map((o) => {
        const { sops: _sops, ...rest } = o as Obj & { sops?: unknown };
        return rest as Obj;
      });
      for (const o of objects) await validateObject(o, `${dir} (rendered)`);
      const deployments = objects.filter((o) => o.kind === 'Deployment') as Any[];
      for (const d of deployments) {
        expect(d.spec.template.spec.containers[0].image, `${dir}: ${d.metadata.name}`).toBe(tag);
        const config = d.spec.template.spec.volumes.find((v: Any) => v.name === 'config').configMap.name;
        expect(config, `${dir}: ${d.metadata.name} follows the generated ConfigMap`).toMatch(/^lifeboat-config-[a-z0-9]+$/);
        expect(objects.some((o) => o.kind === 'ConfigMap' && o.metadata?.name === config)).toBe(true);
      }
      const dashboard = objects.find((o) => o.kind === 'ConfigMap' && o.metadata?.name === 'lifeboat-dashboard') as Any;
      expect(dashboard.metadata.labels.grafana_dashboard).toBe('1');
      expect(JSON.parse(dashboard.data['lifeboat.json'])).toEqual(JSON.parse(readFileSync(join(root, 'deploy/grafana/dashboards/lifeboat.json'), 'utf8')));
      expect(objects.find((o) => o.kind === 'Role' && o.metadata?.name === 'lifeboat-postgres-dump')?.metadata?.namespace).toBe(pgNamespace);
      expect(objects.find((o) => o.kind === 'RoleBinding' && o.metadata?.name === 'lifeboat-postgres-dump')?.metadata?.namespace).toBe(pgNamespace);
    }
  });
});

describe('copies kept in sync (deploy/base/sync.mjs)', () => {
  it('the PrometheusRule has exactly the groups of deploy/prometheus/lifeboat-rules.yaml', () => {
    const rules = parse(readFileSync(join(root, 'deploy/prometheus/lifeboat-rules.yaml'), 'utf8'));
    const [rule] = docs(join(root, 'deploy/base/prometheusrule.yaml')) as Any[];
    expect(rule.kind).toBe('PrometheusRule');
    expect(rule.spec.groups, 'run `node deploy/base/sync.mjs`').toEqual(rules.groups);
  });

  it('the dashboard ConfigMap source is a byte-for-byte copy of deploy/grafana/dashboards/lifeboat.json', () => {
    expect(readFileSync(join(root, 'deploy/base/generated/lifeboat-dashboard.json'), 'utf8'), 'run `node deploy/base/sync.mjs`').toBe(
      readFileSync(join(root, 'deploy/grafana/dashboards/lifeboat.json'), 'utf8'),
    );
  });
});

describe('configs pass `lifeboat config check`', () => {
  function check(file: string, env: Record<string, string> = {}) {
    const dir = mkdtempSync(join(tmpdir(), 'lifeboat-deploy-'));
    try {
      // Stand-in secret files: the check resolves every ${file:...} reference.
      let text = readFileSync(file, 'utf8');
      for (const path of new Set([...text.matchAll(/\$\{file:([^}]+)\}/g)].map((m) => m[1]!))) {
        const local = join(dir, path.replace(/\//g, '_'));
        writeFileSync(local, 'stand-in-secret\n');
        text = text.split(`\${file:${path}}`).join(`\${file:${local}}`);
      }
      mkdirSync(join(dir, 'cfg'));
      const config = join(dir, 'cfg/lifeboat.yaml');
      writeFileSync(config, text);
      return spawnSync(process.execPath, [cli, 'config', 'check', '-c', config], { encoding: 'utf8', env: { ...process.env, ...env } });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  it.each(['deploy/base/lifeboat.yaml', 'deploy/overlays/example/lifeboat.yaml'])('%s', (file) => {
    const result = check(join(root, file));
    expect(result.status, result.stderr + result.stdout).toBe(0);
    expect(result.stdout).toMatch(/ok \(1 target, 4 datasets/);
  });

  it('the one-off restore config in docs/runbooks/restore-bucket.md', () => {
    const md = readFileSync(join(root, 'docs/runbooks/restore-bucket.md'), 'utf8');
    const yaml = /```yaml\n# restore-photos\.yaml\n([\s\S]*?)```/.exec(md)?.[1];
    expect(yaml).toBeTruthy();
    const dir = mkdtempSync(join(tmpdir(), 'lifeboat-deploy-'));
    try {
      writeFileSync(join(dir, 'restore-photos.yaml'), yaml!);
      const result = check(join(dir, 'restore-photos.yaml'), { RGW_ACCESS_KEY: 'a', RGW_SECRET_KEY: 'b', HUB_ACCESS_KEY: 'c', HUB_SECRET_KEY: 'd' });
      expect(result.status, result.stderr + result.stdout).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('runbook commands exist with the options shown', () => {
  const runbooks = walk(join(root, 'docs/runbooks'), (p) => p.endsWith('.md'));

  function commandLines(file: string): string[] {
    const lines: string[] = [];
    for (const block of readFileSync(file, 'utf8').matchAll(/```sh(?: runbook)?\n([\s\S]*?)```/g)) {
      for (const raw of block[1]!.split('\n')) {
        const line = raw.trim();
        if (line.startsWith('lifeboat ') || line.startsWith('npx lifeboat ')) lines.push(line);
      }
    }
    return lines;
  }

  const helpCache = new Map<string, { status: number | null; out: string }>();
  function help(words: string[]) {
    const key = words.join(' ');
    if (!helpCache.has(key)) {
      const r = spawnSync(process.execPath, [cli, ...words, '--help'], { encoding: 'utf8' });
      helpCache.set(key, { status: r.status, out: r.stdout + r.stderr });
    }
    return helpCache.get(key)!;
  }
  /** Subcommand names listed under "Commands:" in a help text. */
  function subcommands(helpText: string): string[] {
    const section = helpText.split(/^Commands:$/m)[1] ?? '';
    return [...section.matchAll(/^ {2}([a-z][\w-]*)/gm)].map((m) => m[1]!).filter((c) => c !== 'help');
  }

  it('the runbooks exist and have lifeboat commands', () => {
    expect(runbooks.map((f) => basename(f)).sort()).toEqual(['full-cluster-loss.md', 'restore-bucket.md', 'restore-etcd.md', 'restore-postgres.md', 'restore-velero.md']);
    expect(existsSync(cli), 'dist/ is built (npm run build)').toBe(true);
  });

  const cases = runbooks.flatMap((f) => commandLines(f).map((line) => [`${basename(f)}: ${line}`, line] as const));
  it('found commands to check', () => expect(cases.length).toBeGreaterThan(10));

  it.each(cases)('%s', (_, line) => {
    const tokens = line.replace(/^npx /, '').split(/\s+/).slice(1);
    // Subcommand words: tokens before the first option or argument, as long as the CLI lists them.
    const words: string[] = [];
    for (const t of tokens) {
      if (t.startsWith('-') || !subcommands(help(words).out).includes(t)) break;
      words.push(t);
    }
    expect(words.length, `no subcommand in: ${line}`).toBeGreaterThan(0);
    const { status, out } = help(words);
    expect(status, out).toBe(0);
    for (const option of line.match(/(?<=\s)--[a-z][a-z-]*/g) ?? []) {
      expect(out, `${option} in \`lifeboat ${words.join(' ')} --help\``).toMatch(new RegExp(`(^|[\\s,])${option}(?![a-z-])`, 'm'));
    }
  });
});
