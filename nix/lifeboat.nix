# services.lifeboat: `lifeboat worker` and `lifeboat serve` as hardened systemd services, with a local,
# persistent Redis.
#
#   services.lifeboat = {
#     enable = true;
#     package = inputs.lifeboat.packages.${pkgs.system}.default;   # set for you by nixosModules.default
#     secrets = {
#       hub-secret-key = "/run/secrets/hub-lifeboat";              # root-only files, e.g. sops-nix/agenix
#       postgres-password = "/run/secrets/postgres-password";
#     };
#     settings = {
#       targets.hub = {
#         kind = "s3"; endpoint = "http://127.0.0.1:9000"; accessKeyId = "lifeboat";
#         secretAccessKey = "\${file:/run/credentials/lifeboat-worker.service/hub-secret-key}";
#       };
#       datasets = [ {
#         id = "main-postgres"; kind = "postgres";
#         source = { mode = "direct"; url = "postgres://postgres@db.lan:5432/postgres";
#                    password = "\${file:/run/credentials/lifeboat-worker.service/postgres-password}"; };
#         target = { name = "hub"; bucket = "postgres"; };
#         schedule = "0 2 * * *";
#       } ];
#     };
#   };
#
# Secrets: each entry of `secrets` is handed to both units with systemd's LoadCredential, so only the
# service can read it, as its own dynamic user. systemd gives every unit its own credentials directory
# (/run/credentials/<unit>/): lifeboat-worker.service and lifeboat-serve.service each get a copy. Write
# references as ${file:/run/credentials/lifeboat-worker.service/<name>}; before starting, each unit copies
# the config to its runtime directory with that prefix replaced by its own $CREDENTIALS_DIRECTORY, so one
# config serves both. (In Nix strings, write "\${file:...}" so Nix does not interpolate.)
{ config, lib, pkgs, ... }:

let
  cfg = config.services.lifeboat;
  inherit (lib) mkOption mkEnableOption mkIf types literalExpression;
  yaml = pkgs.formats.yaml { };

  redisDefaults = lib.optionalAttrs cfg.redis.createLocally {
    redis.url = "redis://127.0.0.1:${toString cfg.redis.port}";
  };
  configFile =
    if cfg.configFile != null then cfg.configFile
    else yaml.generate "lifeboat.yaml" (lib.recursiveUpdate redisDefaults cfg.settings);

  referencePrefix = "/run/credentials/lifeboat-worker.service/";

  # The unit's own copy of the config, with credential references pointing at its own directory.
  prepareConfig = pkgs.writeShellScript "lifeboat-prepare-config" ''
    set -euo pipefail
    ${pkgs.gnused}/bin/sed "s#${referencePrefix}#''${CREDENTIALS_DIRECTORY:-/nonexistent}/#g" ${configFile} \
      > "$RUNTIME_DIRECTORY/lifeboat.yaml"
  '';

  unit = name: args: {
    description = "Lifeboat ${name}";
    wantedBy = [ "multi-user.target" ];
    wants = [ "network-online.target" ];
    after = [ "network-online.target" ] ++ lib.optional cfg.redis.createLocally "redis-lifeboat.service";
    requires = lib.optional cfg.redis.createLocally "redis-lifeboat.service";
    # pg_dumpall/psql for direct-mode dumps and restores; initdb/pg_ctl/postgres for local-mode drills
    # (drill.binDir unset → PATH). A drill needs the dump's major version: match postgresqlPackage to it.
    path = [ cfg.postgresqlPackage ];
    environment = {
      LIFEBOAT_CONFIG = "/run/lifeboat-${name}/lifeboat.yaml";
      NODE_OPTIONS = "--max-semi-space-size=2";
      HOME = "/var/lib/lifeboat";
      LOG_LEVEL = cfg.logLevel;
    };
    serviceConfig = {
      ExecStartPre = [
        prepareConfig
        # Fails the start with every config problem listed, secrets resolved, before anything runs.
        "${cfg.package}/bin/lifeboat config check"
      ];
      ExecStart = "${cfg.package}/bin/lifeboat ${args}";
      Restart = "on-failure";
      RestartSec = 10;
      # A stopping worker drains for server.shutdownGraceMs (30 s by default); then a second signal aborts.
      TimeoutStopSec = 90;
      KillSignal = "SIGTERM";

      LoadCredential = lib.mapAttrsToList (n: path: "${n}:${toString path}") cfg.secrets;

      DynamicUser = true;
      User = "lifeboat"; # both units share the dynamic user (and so the state directory)
      StateDirectory = "lifeboat";
      RuntimeDirectory = "lifeboat-${name}";
      WorkingDirectory = "/var/lib/lifeboat";
      ProtectSystem = "strict";
      ProtectHome = true;
      PrivateTmp = true;
      PrivateDevices = true;
      NoNewPrivileges = true;
      ProtectKernelTunables = true;
      ProtectKernelModules = true;
      ProtectKernelLogs = true;
      ProtectControlGroups = true;
      ProtectClock = true;
      ProtectHostname = true;
      RestrictNamespaces = true;
      RestrictRealtime = true;
      RestrictSUIDSGID = true;
      LockPersonality = true;
      RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
      CapabilityBoundingSet = "";
      AmbientCapabilities = "";
      SystemCallArchitectures = "native";
      SystemCallFilter = [ "@system-service" ];
      UMask = "0077";
      # No MemoryDenyWriteExecute: V8's JIT needs writable executable memory.
    };
  };
in
{
  options.services.lifeboat = {
    enable = mkEnableOption "Lifeboat (verified backups: lifeboat worker and lifeboat serve)";

    package = mkOption {
      type = types.package;
      description = "The Lifeboat package (the flake's packages.default; nixosModules.default sets it).";
    };

    settings = mkOption {
      type = yaml.type;
      default = { };
      example = literalExpression ''{ targets.hub = { kind = "s3"; endpoint = "http://127.0.0.1:9000"; /* … */ }; datasets = [ /* … */ ]; }'';
      description = ''
        lifeboat.yaml as Nix attributes (the schema is lib/config/schema.ts; docs/lifeboat.example.yaml
        shows every section). Unset keys take Lifeboat's defaults: server on 127.0.0.1:9465, UTC
        schedules, 14 daily backups kept, gzip. With redis.createLocally, redis.url defaults to the local
        server. Secrets only as references: "\''${file:/run/credentials/lifeboat-worker.service/<name>}"
        for an entry of `secrets`, or "\''${env:NAME}". The file lands in the Nix store, which is
        world-readable: never put a secret value here.
      '';
    };

    configFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/etc/lifeboat/lifeboat.yaml";
      description = "An existing lifeboat.yaml instead of `settings` (not both).";
    };

    secrets = mkOption {
      type = types.attrsOf types.path;
      default = { };
      example = { hub-secret-key = "/run/secrets/hub-lifeboat"; webhook-token = "/run/secrets/lifeboat-webhook"; };
      description = ''
        Credentials by name → file (read by systemd as root, so the files can be root-only). Both units get
        all of them through LoadCredential; reference them in the config as
        ''${file:/run/credentials/lifeboat-worker.service/<name>} (each unit rewrites that prefix to its
        own credentials directory).
      '';
    };

    logLevel = mkOption {
      type = types.enum [ "trace" "debug" "info" "warn" "error" "fatal" ];
      default = "info";
      description = "LOG_LEVEL for both units.";
    };

    postgresqlPackage = mkOption {
      type = types.package;
      default = pkgs.postgresql_15;
      defaultText = literalExpression "pkgs.postgresql_15";
      description = ''
        PostgreSQL on the units' PATH: client tools for direct-mode dumps and restores (at least the
        server's major version), server binaries (initdb, pg_ctl) for local-mode restore drills (the
        dump's major version).
      '';
    };

    worker = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = "Run lifeboat-worker.service.";
      };
      functions = mkOption {
        type = types.listOf (types.enum [ "dumpPostgres" "verifyObject" "drillRestore" "mirrorBucket" "uploadEtcd" "pruneCheck" ]);
        default = [ ];
        example = [ "dumpPostgres" "verifyObject" "drillRestore" "pruneCheck" ];
        description = "Functions this worker consumes (lifeboat worker --functions); empty: all.";
      };
    };

    serve = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = "Run lifeboat-serve.service (/metrics, Bull Board, /healthz, the S3 webhook, the job schedulers).";
      };
      openFirewall = mkOption {
        type = types.bool;
        default = false;
        description = "Open server.port (settings.server.port, 9465) for Prometheus and the hub's webhook; set settings.server.host too.";
      };
    };

    redis = {
      createLocally = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Run a Redis for Lifeboat (services.redis.servers.lifeboat, loopback only, appendOnly = true so
          queued jobs and metric state survive restarts). Set false to use an existing Redis via
          settings.redis.url (which must persist too).
        '';
      };
      port = mkOption {
        type = types.port;
        default = 6379;
        description = "Port of the local Redis.";
      };
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.configFile == null || cfg.settings == { };
        message = "services.lifeboat: set either configFile or settings, not both (configFile would silently win).";
      }
      {
        assertion = cfg.worker.enable || cfg.serve.enable;
        message = "services.lifeboat: worker.enable and serve.enable are both false; nothing would run.";
      }
      {
        assertion = lib.all (n: builtins.match "[A-Za-z0-9_.-]+" n != null) (lib.attrNames cfg.secrets);
        message = "services.lifeboat.secrets: names must be letters, digits, dots, dashes or underscores (they become credential file names).";
      }
    ];

    services.redis.servers.lifeboat = mkIf cfg.redis.createLocally {
      enable = true;
      bind = "127.0.0.1";
      port = cfg.redis.port;
      appendOnly = true;
      appendFsync = "everysec";
    };

    systemd.services.lifeboat-worker = mkIf cfg.worker.enable (unit "worker"
      ("worker" + lib.optionalString (cfg.worker.functions != [ ]) " --functions ${lib.concatStringsSep "," cfg.worker.functions}"));

    systemd.services.lifeboat-serve = mkIf cfg.serve.enable (unit "serve" "serve");

    networking.firewall.allowedTCPPorts = lib.optional cfg.serve.openFirewall (cfg.settings.server.port or 9465);
  };
}
