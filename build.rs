//! Links the C libslirp (4.7 or newer) through pkg-config.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if let Err(e) = pkg_config::Config::new()
        .atleast_version("4.7.0")
        .probe("slirp")
    {
        println!(
            "cargo:warning=libslirp >= 4.7 not found through pkg-config ({e}); \
             install libslirp-dev (Debian) or net/libslirp (FreeBSD)"
        );
        std::process::exit(1);
    }
}
