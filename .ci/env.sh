# Shared by `.ci/run` (the tests) and `.ci/journaldb` (the CLI): one build directory and
# one set of flags, so that RocksDB's C++ is compiled once for both (docs/BUILD.md).
# Sourced, not run.

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/journaldb-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# RUSTFLAGS in the environment would override .cargo/config.toml and recompile RocksDB.
unset RUSTFLAGS

# What a build needs beyond Rust: libclang for bindgen (librocksdb-sys); gcc/g++ come
# with the machine image. Idempotent.
install_build_packages() {
    local pkgs=(libclang1-14 libclang-common-14-dev)
    if ! dpkg -s "${pkgs[@]}" >/dev/null 2>&1; then
        local sudo=()
        [ "$(id -u)" -eq 0 ] || sudo=(sudo)
        "${sudo[@]}" apt-get update -qq
        "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
    fi
}
