#!/usr/bin/env bash
# Stops what ci/slurm/start.sh started, by the PIDs it recorded, and removes
# its network namespaces and /etc/hosts lines.   ci/slurm/stop.sh [--dir DIR]
set -uo pipefail
dir=/tmp/nismooth-slurm
[ "${1:-}" = --dir ] && dir="$2"
[ -e "$dir/pids" ] || exit 0
# Daemons first (slurmd before slurmctld before munged), in reverse order of start.
tac "$dir/pids" | while read -r kind what; do
  case "$kind" in
    netns) ;;
    *) kill -TERM "$what" 2>/dev/null ;;
  esac
done
for _ in $(seq 50); do
  alive=0
  while read -r kind what; do
    [ "$kind" = netns ] || ! kill -0 "$what" 2>/dev/null || alive=1
  done < "$dir/pids"
  [ "$alive" = 0 ] && break
  sleep 0.1
done
while read -r kind what; do
  [ "$kind" = netns ] || kill -KILL "$what" 2>/dev/null
done < "$dir/pids"
while read -r kind what; do
  [ "$kind" = netns ] && ip netns del "$what" 2>/dev/null
done < "$dir/pids"
sed -i '/# nismooth-slurm$/d' /etc/hosts 2>/dev/null
rm -f "$dir/pids"
echo "== slurm: stopped"
