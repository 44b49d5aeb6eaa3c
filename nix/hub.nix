# services.lifeboat-hub: the Raspberry Pi's S3 hub (MinIO on an external drive) for Lifeboat and Velero.
#
#   services.lifeboat-hub = {
#     enable = true;
#     dataDir = "/mnt/backup/minio";
#     rootCredentialsFile = "/run/secrets/minio-root";        # MINIO_ROOT_USER=... / MINIO_ROOT_PASSWORD=...
#     # allowDelete: pruneCheck's retention (and mirror.deletion: delete) delete old backups.
#     writers.lifeboat = { buckets = [ "postgres" "rgw" "etcd" "velero" ]; secretKeyFile = "/run/secrets/hub-lifeboat"; allowDelete = true; };
#     writers.velero   = { buckets = [ "velero" ]; secretKeyFile = "/run/secrets/hub-velero"; allowDelete = true; };
#     webhook = { enable = true; endpoint = "http://lifeboat.lan:9465/hooks/s3"; tokenFile = "/run/secrets/lifeboat-webhook"; };
#   };
#
# What it sets up (lifeboat-hub-provision.service, a oneshot after minio.service running
# ./hub-provision.sh; a re-run adds nothing, and a failed run is retried every 30 s):
# - every bucket in `buckets`, with versioning on: a delete (Lifeboat's prune, Velero's TTL, a stolen key)
#   only adds a delete marker, the bytes stay as a noncurrent version;
# - per writer a user (access key = the writer's name, secret key from secretKeyFile) and a policy
#   `lifeboat-writer-<name>` limited to its buckets: s3:PutObject, s3:GetObject, s3:ListBucket,
#   s3:ListBucketMultipartUploads, s3:ListMultipartUploadParts, s3:AbortMultipartUpload, and no
#   s3:DeleteObject unless allowDelete;
# - optionally the webhook notification target `lifeboat` (MinIO notify_webhook, ARN
#   arn:minio:sqs:<services.minio.region>:lifeboat:webhook) and a put event on every bucket, so
#   `lifeboat serve` verifies each object as it arrives. MinIO refuses the target while serve is
#   unreachable: the unit then fails after everything else is in place and systemd retries it
#   (Restart=on-failure), and once the target exists queue_dir keeps events while serve is down;
# - optionally a lifecycle rule expiring noncurrent versions (see `lifecycle`).
#
# Secrets never enter the Nix store: every secret option is a path read at runtime.
{ config, lib, pkgs, ... }:

let
  cfg = config.services.lifeboat-hub;
  inherit (lib) mkOption mkEnableOption mkIf types literalExpression;

  # MinIO listens on listenAddress (":9000" = all addresses); the provisioning talks to it on loopback.
  port = lib.last (lib.splitString ":" cfg.listenAddress);
  localUrl = "http://127.0.0.1:${port}";

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
          # s3:ListMultipartUploadParts: velero-plugin-for-aws's documented policy has it.
          Action = [ "s3:PutObject" "s3:GetObject" "s3:AbortMultipartUpload" "s3:ListMultipartUploadParts" ]
            ++ lib.optional writer.allowDelete "s3:DeleteObject";
          Resource = map (b: "arn:aws:s3:::${b}/*") writer.buckets;
        }
      ];
    });

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
          lifeboat = { buckets = [ "postgres" "rgw" "etcd" "velero" ]; secretKeyFile = "/run/secrets/hub-lifeboat"; allowDelete = true; };
          velero = { buckets = [ "velero" ]; secretKeyFile = "/run/secrets/hub-velero"; allowDelete = true; };
        }
      '';
      description = ''
        S3 users, by access key (the attribute name). Each gets a policy on its buckets only:
        s3:PutObject, s3:GetObject, s3:ListBucket, s3:ListBucketMultipartUploads,
        s3:ListMultipartUploadParts and s3:AbortMultipartUpload, and no s3:DeleteObject unless
        allowDelete.
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
      # The script's inputs (see its header). No secrets here: those are files, passed with LoadCredential.
      environment = {
        HUB_ALIAS = "hub";
        HUB_ENDPOINT = localUrl;
        # MinIO puts its region into the target's ARN; the nixpkgs module always sets MINIO_REGION.
        HUB_REGION = config.services.minio.region;
        HUB_BUCKETS = toString cfg.buckets;
        HUB_NONCURRENT_EXPIRY_DAYS = lib.optionalString cfg.lifecycle.enable (toString cfg.lifecycle.expireDays);
        HUB_WRITERS = toString (lib.mapAttrsToList (name: writer: "${name}:${writerPolicy name writer}") cfg.writers);
        HUB_WEBHOOK_ENDPOINT = lib.optionalString cfg.webhook.enable cfg.webhook.endpoint;
        HUB_WEBHOOK_QUEUE_DIR = cfg.webhook.queueDir;
        HUB_WEBHOOK_QUEUE_LIMIT = toString cfg.webhook.queueLimit;
        HUB_WEBHOOK_BUCKETS = toString cfg.webhook.buckets;
      };
      # Keep retrying (every RestartSec) until the hub is complete, e.g. once `lifeboat serve` is up.
      unitConfig.StartLimitIntervalSec = 0;
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        ExecStart = "${pkgs.runtimeShell} ${./hub-provision.sh}";
        Restart = "on-failure";
        RestartSec = 30;
        TimeoutStartSec = "5min";
        EnvironmentFile = lib.mkIf (cfg.rootCredentialsFile != null) (toString cfg.rootCredentialsFile);
        DynamicUser = true;
        RuntimeDirectory = "lifeboat-hub-provision";
        # Hashes of what was last written (secret keys, webhook settings), so a re-run skips them.
        StateDirectory = "lifeboat-hub-provision";
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
