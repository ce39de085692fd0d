#!/bin/sh
# Make sure the servers that `make test` and `make demo` start are installed: PostgreSQL (initdb,
# pg_ctl, pg_basebackup, postgres), Redis (redis-server) and PgBouncer (pgbouncer); and, before the
# first `make`, what `python3 -m venv` needs.
#
#   sh scripts/ensure-servers.sh           install what is missing: apt-get as root, sudo apt-get
#                                          otherwise, brew on macOS; or stop with the command to run
#   sh scripts/ensure-servers.sh --check   only say what is missing and the command that installs it
#                                          (exit 1 when something is); installs nothing
#   sh scripts/ensure-servers.sh --tests   also what only the suite needs: Chromium (the browser
#                                          tests) and promtool (the /metrics test); with --check too
#
# It looks where the launcher (django_scaleops/testing/services.py) looks: PG_BINDIR, then
# /usr/lib/postgresql/*/bin (Debian), /usr/pgsql-*/bin (RHEL), Homebrew's postgresql@*, then PATH;
# redis-server and pgbouncer on PATH, in /usr/sbin or in /usr/bin. Silent when nothing is missing.
#
# Environment: SCALEOPS_NO_INSTALL=1 never installs (as --check). VENV and PYTHON (the Makefile's)
# turn on the check for `python3 -m venv`. DATABASE_URL, REPLICA_URL, REDIS_URL and PGBOUNCER_URL all
# set: nothing is checked (the launcher then uses those servers). ENSURE_SERVERS_ROOT is put in front
# of the fixed folders above (the tests point it at an empty folder).

set -u

me="ensure-servers"
check_only=0
for_tests=0
for arg in "$@"; do
    case "$arg" in
        --check | --dry-run) check_only=1 ;;
        --tests) for_tests=1 ;;
        *)
            echo "usage: sh scripts/ensure-servers.sh [--check] [--tests]" >&2
            exit 2
            ;;
    esac
done
if [ "${SCALEOPS_NO_INSTALL:-}" = 1 ]; then
    check_only=1
fi

own_servers=0
if [ -n "${DATABASE_URL:-}" ] && [ -n "${REPLICA_URL:-}" ] && [ -n "${REDIS_URL:-}" ] && [ -n "${PGBOUNCER_URL:-}" ]; then
    own_servers=1
    [ "$for_tests" = 1 ] || exit 0
fi

root="${ENSURE_SERVERS_ROOT:-}"

has_pg_tools() {
    for tool in initdb pg_ctl pg_basebackup postgres; do
        [ -e "$1/$tool" ] || return 1
    done
    return 0
}

have_postgres() {
    if [ -n "${PG_BINDIR:-}" ] && has_pg_tools "$PG_BINDIR"; then
        return 0
    fi
    for dir in "$root"/usr/lib/postgresql/*/bin "$root"/usr/pgsql-*/bin \
        "$root"/opt/homebrew/opt/postgresql@*/bin "$root"/usr/local/opt/postgresql@*/bin; do
        if [ -d "$dir" ] && has_pg_tools "$dir"; then
            return 0
        fi
    done
    initdb=$(command -v initdb 2>/dev/null) || return 1
    # The launcher follows the link (Debian's /usr/local/bin/initdb may point into /usr/lib/postgresql).
    if command -v readlink >/dev/null 2>&1; then
        initdb=$(readlink -f "$initdb" 2>/dev/null || echo "$initdb")
    fi
    has_pg_tools "${initdb%/*}"
}

have_binary() {
    command -v "$1" >/dev/null 2>&1 || [ -e "$root/usr/sbin/$1" ] || [ -e "$root/usr/bin/$1" ]
}

# What is missing: human names, and package names for apt-get, brew and dnf.
missing=""
apt=""
brew=""
dnf=""
need() {
    missing="${missing:+$missing, }$1"
    apt="${apt:+$apt }$2"
    brew="${brew:+$brew }$3"
    dnf="${dnf:+$dnf }$4"
}

find_missing() {
    missing="" apt="" brew="" dnf=""
    if [ "$own_servers" = 0 ]; then
        have_postgres || need "PostgreSQL server (initdb, pg_ctl, pg_basebackup, postgres)" postgresql postgresql@17 postgresql-server
        have_binary redis-server || need "Redis (redis-server)" redis-server redis redis
        have_binary pgbouncer || need "PgBouncer (pgbouncer)" pgbouncer pgbouncer pgbouncer
    fi
    if [ "$for_tests" = 1 ]; then
        have_binary chromium || need "Chromium (the browser tests)" chromium "--cask chromium" chromium
        have_binary promtool || need "promtool (the /metrics test)" prometheus prometheus golang-github-prometheus
    fi
    if [ -n "${VENV:-}" ] && [ ! -e "$VENV/.installed" ] && ! "${PYTHON:-python3}" -c "import ensurepip" >/dev/null 2>&1; then
        need "Python's venv module (for ${PYTHON:-python3} -m venv)" python3-venv "" python3
    fi
}

is_root() {
    [ "$(id -u 2>/dev/null || echo 1)" = 0 ]
}

# The one command that installs what is missing here, or nothing when we know none.
install_command() {
    if command -v apt-get >/dev/null 2>&1; then
        if is_root; then
            echo "apt-get update && apt-get install -y $apt"
        else
            echo "sudo apt-get update && sudo apt-get install -y $apt"
        fi
    elif command -v brew >/dev/null 2>&1; then
        echo "brew install $brew"
    elif command -v dnf >/dev/null 2>&1; then
        echo "sudo dnf install -y $dnf"
    fi
}

# say_how LEAD: "LEAD:" and the command, or what to install where no package manager is known.
say_how() {
    command=$(install_command)
    if [ -n "$command" ]; then
        echo "$me: $1:"
        echo "    $command"
    else
        echo "$me: install these with this machine's package manager (PostgreSQL 14 or newer, Redis 6.2"
        echo "$me: or newer), or set PG_BINDIR to the folder holding initdb; then make again."
    fi
}

find_missing
if [ -z "$missing" ]; then
    if [ "$own_servers" = 0 ] && is_root && have_postgres && command -v id >/dev/null 2>&1 && ! id postgres >/dev/null 2>&1; then
        echo "$me: running as root, the launcher runs PostgreSQL as the 'postgres' user, and there is none."
        say_how "create it (the Debian package does), or run as an ordinary user; e.g."
        exit 1
    fi
    exit 0
fi

echo "$me: missing: $missing"
if [ "$check_only" = 1 ]; then
    say_how "install with"
    exit 1
fi

# Install, with the package manager this machine has.
if command -v apt-get >/dev/null 2>&1; then
    if is_root; then
        sudo=""
    elif command -v sudo >/dev/null 2>&1; then
        sudo="sudo"
    else
        say_how "not root and no sudo: as root, run"
        exit 1
    fi
    echo "$me: installing with apt-get: $apt"
    # shellcheck disable=SC2086 # $sudo and $apt are word lists on purpose
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $apt
    status=$?
elif command -v brew >/dev/null 2>&1; then
    echo "$me: installing with Homebrew: $brew"
    # shellcheck disable=SC2086
    brew install $brew
    status=$?
else
    say_how "install them"
    exit 1
fi

find_missing
if [ "$status" != 0 ] || [ -n "$missing" ]; then
    echo "$me: the installation did not finish${missing:+ (still missing: $missing)}."
    say_how "run this, then make again"
    exit 1
fi
echo "$me: installed. Tests and the demo run their own servers on free ports; the system services"
echo "$me: the packages may have started are not used."
