# shellcheck shell=bash
# Shared helpers for the ops/ scripts. Source it; do not execute it:
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Sets:
#   MAILFLEET_ROOT  the repository root (derived from this file's location)
#   RUN_DIR         runtime state (data, logs, pid files); ${MAILFLEET_RUN_DIR:-$MAILFLEET_ROOT/run}.
#                   /run/ is git-ignored. Nothing is ever kept in /tmp.
# Functions:
#   log MSG...                     timestamped message on stderr
#   die MSG...                     log and exit 1
#   port_open HOST PORT            true if a TCP connect succeeds right now
#   wait_port HOST PORT TIMEOUT_S  wait until HOST:PORT accepts TCP connections
#   apt_install PKG...             install only the Debian packages not yet installed

MAILFLEET_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
RUN_DIR="${MAILFLEET_RUN_DIR:-$MAILFLEET_ROOT/run}"
case "$RUN_DIR" in
  /*) ;;
  *) RUN_DIR="$PWD/$RUN_DIR" ;;  # config files need absolute paths
esac
export MAILFLEET_ROOT RUN_DIR

log() {
  printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

die() {
  log "ERROR: $*"
  exit 1
}

# One connect attempt, bounded to 2 s so a filtered port cannot hang us.
port_open() {
  local host=$1 port=$2
  # shellcheck disable=SC2016  # $0/$1 are expanded by the inner bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$host" "$port" 2>/dev/null
}

wait_port() {
  local host=$1 port=$2 timeout_s=${3:-30}
  local deadline=$((SECONDS + timeout_s))
  until port_open "$host" "$port"; do
    if ((SECONDS >= deadline)); then
      log "timed out after ${timeout_s}s waiting for $host:$port"
      return 1
    fi
    sleep 0.5
  done
}

_MAILFLEET_APT_UPDATED=${_MAILFLEET_APT_UPDATED:-0}

# apt_install PKG... : installs only what is missing; `apt-get update` runs at
# most once per process, and only when something has to be installed.
apt_install() {
  local pkg missing=()
  for pkg in "$@"; do
    # dpkg -s alone also succeeds for removed-but-not-purged packages, so check
    # the state; dpkg-query prints only that (a `dpkg -s | grep -q` pipe fails
    # under pipefail when grep stops reading a long record early).
    if [[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) != "install ok installed" ]]; then
      missing+=("$pkg")
    fi
  done
  ((${#missing[@]})) || return 0

  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "need root (or sudo) to install: ${missing[*]}"
    sudo=(sudo)
  fi
  log "apt: installing ${missing[*]}"
  if [[ $_MAILFLEET_APT_UPDATED != 1 ]]; then
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    _MAILFLEET_APT_UPDATED=1
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}
