{
  description = "Lifeboat: verified backups for homelab and small clusters";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.11";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      # What the tests and the demo need: Node 20+, Redis, PostgreSQL 15 (client and server binaries).
      # The RGW the tests start comes from Debian's ceph packages (see .ci/run).
      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [ nodejs_20 redis postgresql_15 rclone ];
        };
      });
    };
}
