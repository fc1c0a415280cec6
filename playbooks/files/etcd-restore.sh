#!/bin/sh
# upgrader's one etcd restore: a snapshot restored as one member of a new cluster. rollback-etcd.yml
# runs it on every control-plane node (ansible.builtin.script); upgrader.etcd.tools.restore_member runs
# the same file locally (the restore test, the integration tests, the RTO floor), so what the tests
# prove is what a rollback runs.
#
#   etcd-restore.sh --snapshot FILE --data-dir DATA --run RUN --name MEMBER --initial-cluster NAME=URL,...
#                   --token TOKEN --peer-urls URLS [--bump N] [--tool PATH] [--root DIR]
#
# The snapshot is restored into DATA.upgrader-RUN, then the old DATA (if any) is renamed DATA.before-RUN
# and the restored directory takes its place; the old one is never deleted here. With --bump, the
# revision is raised by N and older revisions marked compacted when the tool lists --mark-compacted in
# its help (etcdutl 3.5.10+, 3.4.27+); otherwise upgrader moves the revision forward itself.
# Without --tool, the first of ROOT/var/lib/upgrader/bin/{etcdutl,etcdctl}, ROOT/usr/local/bin/etcdutl,
# ROOT/usr/bin/etcdutl, ROOT/usr/local/bin/etcdctl and ROOT/usr/bin/etcdctl that is executable.
#
# Prints bumps=yes|no, then restored=now (restored by this call) or restored=earlier (a previous call of
# the same run already did: safe to run again after a kill at any point). Exit 2 on bad arguments,
# 3 when no tool is found, 1 when the restore fails (its last lines on stderr, nothing left behind).
set -u

root="" snapshot="" data="" run="" name="" initial="" token="" peers="" bump="" tool=""
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || { echo "etcd-restore.sh: $1 needs a value" >&2; exit 2; }
    case "$1" in
        --root) root=$2 ;;
        --snapshot) snapshot=$2 ;;
        --data-dir) data=$2 ;;
        --run) run=$2 ;;
        --name) name=$2 ;;
        --initial-cluster) initial=$2 ;;
        --token) token=$2 ;;
        --peer-urls) peers=$2 ;;
        --bump) bump=$2 ;;
        --tool) tool=$2 ;;
        *) echo "etcd-restore.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift 2
done
for required in snapshot data run name initial token peers; do
    eval "value=\$$required"
    [ -n "$value" ] || { echo "etcd-restore.sh: --$required is required" >&2; exit 2; }
done
case "$bump" in
    "" | *[!0-9]*) [ -z "$bump" ] || { echo "etcd-restore.sh: --bump must be a number" >&2; exit 2; } ;;
esac

if [ -z "$tool" ]; then
    for t in "$root/var/lib/upgrader/bin/etcdutl" "$root/var/lib/upgrader/bin/etcdctl" \
        "$root/usr/local/bin/etcdutl" "$root/usr/bin/etcdutl" "$root/usr/local/bin/etcdctl" "$root/usr/bin/etcdctl"; do
        if [ -x "$t" ]; then tool=$t; break; fi
    done
    [ -n "$tool" ] || {
        echo "no etcdutl or etcdctl in $root/var/lib/upgrader/bin, /usr/local/bin or /usr/bin" >&2
        exit 3
    }
fi
export ETCDCTL_API=3

flags=""
if [ -n "$bump" ] && "$tool" snapshot restore --help 2>&1 | grep -q -e --mark-compacted; then
    flags="--bump-revision $bump --mark-compacted"
fi
echo "bumps=$([ -n "$flags" ] && echo yes || echo no)"

new="$data.upgrader-$run"
kept="$data.before-$run"
if [ -d "$kept" ] && [ -d "$new" ] && [ ! -e "$data" ]; then
    mv "$new" "$data" && echo restored=earlier
    exit $?
fi
if [ -d "$kept" ] && [ -d "$data" ]; then
    echo restored=earlier
    exit 0
fi

rm -rf "$new"
# $flags is split on purpose: two options and a number.
# shellcheck disable=SC2086
if ! out=$("$tool" snapshot restore "$snapshot" --data-dir "$new" --name "$name" --initial-cluster "$initial" \
    --initial-cluster-token "$token" --initial-advertise-peer-urls "$peers" $flags 2>&1); then
    printf '%s\n' "$out" | grep -v '^[[:space:]]*$' | tail -n 3 >&2
    rm -rf "$new"
    exit 1
fi
chmod 0700 "$new" && { [ ! -e "$data" ] || mv "$data" "$kept"; } && mv "$new" "$data" && sync && echo restored=now
