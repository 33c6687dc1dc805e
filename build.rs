//! With the `slirp` feature (the default): links the C libslirp (4.7 or
//! newer) through pkg-config, and reads the highest configuration version
//! its header declares (`SLIRP_CONFIG_VERSION_MAX`, shown by
//! `caploop-sandbox --version` as slirp4netns shows it). Without it, nothing
//! is probed or linked.
//!
//! On docs.rs (`DOCS_RS` set) libslirp is neither probed nor linked, so the
//! documentation builds without the C library; the version reads as 0.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "slirp")]
    slirp();
}

#[cfg(feature = "slirp")]
fn slirp() {
    println!("cargo:rerun-if-env-changed=DOCS_RS");
    if std::env::var_os("DOCS_RS").is_some() {
        println!("cargo:rustc-env=CAPLOOP_SLIRP_CONFIG_VERSION_MAX=0");
        return;
    }
    let lib = match pkg_config::Config::new()
        .atleast_version("4.7.0")
        .probe("slirp")
    {
        Ok(lib) => lib,
        Err(e) => {
            println!(
                "cargo:warning=libslirp >= 4.7 not found through pkg-config ({e}); \
                 install libslirp-dev (Debian) or net/libslirp (FreeBSD), \
                 or build without the `slirp` feature (--no-default-features)"
            );
            std::process::exit(1);
        }
    };
    let max = lib
        .include_paths
        .iter()
        .flat_map(|dir| [dir.join("libslirp.h"), dir.join("slirp/libslirp.h")])
        .find_map(|h| std::fs::read_to_string(h).ok())
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.trim()
                    .strip_prefix("#define SLIRP_CONFIG_VERSION_MAX")
                    .and_then(|v| v.trim().parse::<u32>().ok())
            })
        })
        .unwrap_or(0);
    println!("cargo:rustc-env=CAPLOOP_SLIRP_CONFIG_VERSION_MAX={max}");
}
