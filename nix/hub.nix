# services.lifeboat-hub: the Raspberry Pi's S3 hub (MinIO on an external drive) for Lifeboat and Velero.
#
#   services.lifeboat-hub = {
#     enable = true;
#     dataDir = "/mnt/backup/minio";
#     rootCredentialsFile = "/run/secrets/minio-root";        # MINIO_ROOT_USER=... / MINIO_ROOT_PASSWORD=...
#     writers.lifeboat = { buckets = [ "postgres" "rgw" "etcd" "velero" ]; secretKeyFile = "/run/secrets/hub-lifeboat"; };
#     writers.velero   = { buckets = [ "velero" ]; secretKeyFile = "/run/secrets/hub-velero"; allowDelete = true; };
#     webhook = { enable = true; endpoint = "http://lifeboat.lan:9465/hooks/s3"; tokenFile = "/run/secrets/lifeboat-webhook"; };
#   };
#
# What it sets up (lifeboat-hub-provision.service, a oneshot after minio.service, idempotent):
# - every bucket in `buckets`, with versioning on: a delete (Lifeboat's prune, Velero's TTL, a stolen key)
#   only adds a delete marker, the bytes stay as a noncurrent version;
# - per writer a user (access key = the writer's name, secret key from secretKeyFile) and a policy
#   `lifeboat-writer-<name>` limited to its buckets: s3:PutObject, s3:GetObject, s3:ListBucket,
#   s3:ListBucketMultipartUploads, s3:AbortMultipartUpload, and no s3:DeleteObject unless allowDelete;
# - optionally the webhook notification target `lifeboat` (MinIO notify_webhook) and a put event on
#   every bucket, so `lifeboat serve` verifies each object as it arrives;
# - optionally a lifecycle rule expiring noncurrent versions (see `lifecycle`).
#
# Secrets never enter the Nix store: every secret option is a path read at runtime.
{ config, lib, pkgs, ... }:

let
  cfg = config.services.lifeboat-hub;
  inherit (lib) mkOption mkEnableOption mkIf types literalExpression;

  alias = "hub";
  # MinIO listens on listenAddress (":9000" = all addresses); the provisioning talks to it on loopback.
  port = lib.last (lib.splitString ":" cfg.listenAddress);
  localUrl = "http://127.0.0.1:${port}";
  arn = "arn:minio:sqs::lifeboat:webhook";

  writerPolicy = name: writer:
    pkgs.writeText "lifeboat-writer-${name}.json" (builtins.toJSON {
      Version = "2012-10-17";
      Statement = [
        {
          Effect = "Allow";
          Action = [ "s3:ListBucket" "s3:ListBucketMultipartUploads" ];
          Resource = map (b: "arn:aws:s3:::${b}") writer.buckets;
        }
        {
          Effect = "Allow";
          Action = [ "s3:PutObject" "s3:GetObject" "s3:AbortMultipartUpload" ]
            ++ lib.optional writer.allowDelete "s3:DeleteObject";
          Resource = map (b: "arn:aws:s3:::${b}/*") writer.buckets;
        }
      ];
    });

  lifecycleRules = pkgs.writeText "lifeboat-hub-lifecycle.json" (builtins.toJSON {
    Rules = [
      {
        ID = "lifeboat-noncurrent-expiry";
        Status = "Enabled";
        Filter = { Prefix = ""; };
        NoncurrentVersionExpiration = { NoncurrentDays = cfg.lifecycle.expireDays; };
        # Delete markers with no versions left behind them are only clutter.
        Expiration = { ExpiredObjectDeleteMarker = true; };
      }
    ];
  });

  provisionScript = pkgs.writeShellScript "lifeboat-hub-provision" ''
    set -euo pipefail
    export MC_CONFIG_DIR="$RUNTIME_DIRECTORY/mc"
    # MINIO_ROOT_USER / MINIO_ROOT_PASSWORD come from rootCredentialsFile (EnvironmentFile).
    for _ in $(seq 60); do
      if mc alias set ${alias} ${localUrl} "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null 2>&1 &&
         mc admin info ${alias} >/dev/null 2>&1; then break; fi
      sleep 1
    done
    mc admin info ${alias} >/dev/null

    # Buckets, versioned.
    ${lib.concatMapStrings (b: ''
      mc mb --ignore-existing ${alias}/${b}
      mc version enable ${alias}/${b}
    '') cfg.buckets}

    # One user and one policy per writer. The secret key goes through mc's command line for a moment;
    # on a single-purpose Pi that is acceptable (mount /proc with hidepid=2 to hide it from other users).
    ${lib.concatStrings (lib.mapAttrsToList (name: writer: ''
      mc admin policy create ${alias} lifeboat-writer-${name} ${writerPolicy name writer}
      mc admin user add ${alias} ${lib.escapeShellArg name} "$(cat "$CREDENTIALS_DIRECTORY/writer-${name}")"
      if ! mc admin user info ${alias} ${lib.escapeShellArg name} --json |
           jq -e '(.policyName // "") | split(",") | index("lifeboat-writer-${name}")' >/dev/null; then
        mc admin policy attach ${alias} lifeboat-writer-${name} --user ${lib.escapeShellArg name}
      fi
    '') cfg.writers)}

    ${lib.optionalString cfg.webhook.enable ''
      # The notification target. auth_token is read from tokenFile now, never stored in Nix.
      token="$(cat "$CREDENTIALS_DIRECTORY/webhook-token")"
      mc admin config set ${alias} notify_webhook:lifeboat \
        endpoint=${lib.escapeShellArg cfg.webhook.endpoint} \
        auth_token="$token" \
        queue_dir=${lib.escapeShellArg cfg.webhook.queueDir} \
        queue_limit=${toString cfg.webhook.queueLimit}
      unset token
      # notify_webhook changes take effect after a restart.
      mc admin service restart ${alias} >/dev/null
      for _ in $(seq 60); do mc admin info ${alias} >/dev/null 2>&1 && break; sleep 1; done
      ${lib.concatMapStrings (b: ''
        if ! mc event ls ${alias}/${b} ${arn} 2>/dev/null | grep -q ${arn}; then
          mc event add ${alias}/${b} ${arn} --event put
        fi
      '') cfg.webhook.buckets}
    ''}

    ${lib.optionalString cfg.lifecycle.enable (lib.concatMapStrings (b: ''
      mc ilm rule import ${alias}/${b} < ${lifecycleRules}
    '') cfg.buckets)}
  '';
in
{
  options.services.lifeboat-hub = {
    enable = mkEnableOption "the Lifeboat S3 hub (MinIO with versioned buckets, per-writer users, bucket notifications)";

    dataDir = mkOption {
      type = types.path;
      example = "/mnt/backup/minio";
      description = "Where MinIO keeps the objects: the external drive. Mount it before minio.service starts (fileSystems with nofail off).";
    };

    listenAddress = mkOption {
      type = types.str;
      default = ":9000";
      example = "192.168.1.20:9000";
      description = "MinIO's S3 address (host:port; \":9000\" listens everywhere).";
    };

    consoleAddress = mkOption {
      type = types.str;
      default = "127.0.0.1:9001";
      description = "MinIO's web console; loopback by default (use an SSH tunnel).";
    };

    rootCredentialsFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/run/secrets/minio-root";
      description = ''
        Environment file with MINIO_ROOT_USER and MINIO_ROOT_PASSWORD (outside the Nix store, e.g. from
        sops-nix or agenix). Only the provisioning unit and MinIO read it; no client uses the root user.
      '';
    };

    buckets = mkOption {
      type = types.listOf types.str;
      default = [ "postgres" "rgw" "etcd" "velero" ];
      description = "Buckets to create, all versioned: one per data class (Postgres dumps, RGW mirrors, etcd snapshots, Velero).";
    };

    writers = mkOption {
      default = { };
      example = literalExpression ''
        {
          lifeboat = { buckets = [ "postgres" "rgw" "etcd" "velero" ]; secretKeyFile = "/run/secrets/hub-lifeboat"; };
          velero = { buckets = [ "velero" ]; secretKeyFile = "/run/secrets/hub-velero"; allowDelete = true; };
        }
      '';
      description = ''
        S3 users, by access key (the attribute name). Each gets a policy on its buckets only:
        s3:PutObject, s3:GetObject, s3:ListBucket, s3:ListBucketMultipartUploads and
        s3:AbortMultipartUpload, and no s3:DeleteObject unless allowDelete.
      '';
      type = types.attrsOf (types.submodule {
        options = {
          buckets = mkOption {
            type = types.listOf types.str;
            description = "Buckets this writer may use; each must be in services.lifeboat-hub.buckets.";
          };
          secretKeyFile = mkOption {
            type = types.path;
            description = "File with the writer's secret key (8-40 characters), read at provisioning time.";
          };
          allowDelete = mkOption {
            type = types.bool;
            default = false;
            description = ''
              Grant s3:DeleteObject. Velero needs it (it deletes its expired backups); Lifeboat needs it for
              pruneCheck's retention and orphan cleanup and for `mirror.deletion: delete` (without it those
              deletes fail and JobsFailing fires). On the versioned buckets a delete only adds a delete
              marker, so a stolen key cannot destroy data before the lifecycle rule expires it.
            '';
          };
        };
      });
    };

    webhook = {
      enable = mkEnableOption "bucket notifications to `lifeboat serve` (MinIO notify_webhook target `lifeboat`)";
      endpoint = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "http://lifeboat.lan:9465/hooks/s3";
        description = "The `lifeboat serve` webhook URL (server.webhook.path, /hooks/s3 by default).";
      };
      tokenFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        description = "File with the bearer token; the same value as Lifeboat's server.webhook.token.";
      };
      queueDir = mkOption {
        type = types.str;
        default = "/var/lib/minio/lifeboat-events";
        description = "MinIO's persistent event queue: events wait here while Lifeboat is unreachable (at-least-once delivery).";
      };
      queueLimit = mkOption {
        type = types.ints.positive;
        default = 100000;
        description = "Maximum queued events.";
      };
      buckets = mkOption {
        type = types.listOf types.str;
        default = cfg.buckets;
        defaultText = literalExpression "config.services.lifeboat-hub.buckets";
        description = "Buckets whose new objects are sent to Lifeboat.";
      };
    };

    lifecycle = {
      enable = mkEnableOption ''
        a lifecycle rule on every bucket that expires noncurrent versions (what deletes and overwrites
        left behind) after expireDays. This is secondary to Lifeboat's guarded retention (pruneCheck
        keeps the newest verified copies and refuses to delete below them) and to Velero's TTL: the hub
        never expires current objects, because an age-based expiry would delete the last good backups
        after a run of failures. Set expireDays to how long you can afford to notice a bad prune or a
        stolen key'';
      expireDays = mkOption {
        type = types.ints.positive;
        default = 30;
        description = "Days a noncurrent version stays before the hub deletes it.";
      };
    };
  };

  config = mkIf cfg.enable {
    assertions =
      [
        {
          assertion = cfg.rootCredentialsFile != null;
          message = "services.lifeboat-hub.rootCredentialsFile must be set (an environment file with MINIO_ROOT_USER and MINIO_ROOT_PASSWORD).";
        }
        {
          assertion = !cfg.webhook.enable || cfg.webhook.tokenFile != null;
          message = "services.lifeboat-hub.webhook.enable needs webhook.tokenFile: Lifeboat refuses unauthenticated notifications on a non-loopback address.";
        }
        {
          assertion = !cfg.webhook.enable || cfg.webhook.endpoint != null;
          message = "services.lifeboat-hub.webhook.enable needs webhook.endpoint (the lifeboat serve URL, e.g. http://lifeboat.lan:9465/hooks/s3).";
        }
        {
          assertion = lib.all (b: lib.elem b cfg.buckets) cfg.webhook.buckets;
          message = "services.lifeboat-hub.webhook.buckets names buckets not in services.lifeboat-hub.buckets: ${toString (lib.filter (b: !(lib.elem b cfg.buckets)) cfg.webhook.buckets)}";
        }
        {
          assertion = lib.all (b: builtins.match "[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]" b != null) cfg.buckets;
          message = "services.lifeboat-hub.buckets: every name must be a valid S3 bucket name (3-63 lowercase letters, digits, dots, dashes).";
        }
      ]
      ++ lib.mapAttrsToList (name: writer: {
        assertion = lib.all (b: lib.elem b cfg.buckets) writer.buckets;
        message = "services.lifeboat-hub.writers.${name}.buckets names buckets not in services.lifeboat-hub.buckets: ${toString (lib.filter (b: !(lib.elem b cfg.buckets)) writer.buckets)}";
      }) cfg.writers
      ++ lib.mapAttrsToList (name: writer: {
        assertion = writer.buckets != [ ];
        message = "services.lifeboat-hub.writers.${name}.buckets is empty: a writer without buckets has nothing to do.";
      }) cfg.writers
      ++ lib.mapAttrsToList (name: _: {
        assertion = builtins.match "[A-Za-z0-9._-]{3,20}" name != null;
        message = "services.lifeboat-hub.writers.${name}: the name is the access key, 3-20 letters, digits, dots, dashes or underscores.";
      }) cfg.writers;

    services.minio = {
      enable = true;
      dataDir = [ cfg.dataDir ];
      listenAddress = cfg.listenAddress;
      consoleAddress = cfg.consoleAddress;
      rootCredentialsFile = cfg.rootCredentialsFile;
    };

    systemd.tmpfiles.rules = lib.optional cfg.webhook.enable "d ${cfg.webhook.queueDir} 0750 minio minio -";

    systemd.services.minio.unitConfig.RequiresMountsFor = [ (toString cfg.dataDir) ];

    systemd.services.lifeboat-hub-provision = {
      description = "Lifeboat hub: buckets, writers and notifications in MinIO";
      after = [ "minio.service" ];
      requires = [ "minio.service" ];
      wantedBy = [ "multi-user.target" ];
      path = [ pkgs.minio-client pkgs.jq pkgs.coreutils pkgs.gnugrep ];
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        ExecStart = provisionScript;
        EnvironmentFile = lib.mkIf (cfg.rootCredentialsFile != null) (toString cfg.rootCredentialsFile);
        DynamicUser = true;
        RuntimeDirectory = "lifeboat-hub-provision";
        # The secret files are usually root-only: systemd hands them to this (dynamic, unprivileged) user.
        LoadCredential =
          lib.mapAttrsToList (name: writer: "writer-${name}:${toString writer.secretKeyFile}") cfg.writers
          ++ lib.optional cfg.webhook.enable "webhook-token:${toString cfg.webhook.tokenFile}";
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        NoNewPrivileges = true;
        RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
        CapabilityBoundingSet = "";
        SystemCallFilter = [ "@system-service" ];
      };
    };
  };
}
