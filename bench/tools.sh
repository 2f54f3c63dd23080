# Sourced by the bench scripts: installs a Debian package when its command is missing
# (idempotent; as root or through sudo).
#   need wrk wrk; need perf linux-perf
need() {
    command -v "$1" >/dev/null && return 0
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    echo "==> installing $2 (apt-get) for $1" >&2
    $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$2" >/dev/null
    command -v "$1" >/dev/null || { echo "$0: $1 is still missing after installing $2" >&2; exit 1; }
}
