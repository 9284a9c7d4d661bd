#!/usr/bin/env bash
# Installs Slurm (with slurmdbd and MariaDB for accounting), munge and PMIx
# from Debian when missing (for ci/slurm/start.sh).
set -euo pipefail
need=()
for pkg in slurm-wlm slurmctld slurmd slurm-client slurmdbd mariadb-server munge libpmix-dev iproute2 util-linux; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "== apt-get install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
