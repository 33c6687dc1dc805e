//! `caploop-sandbox`: the harness that serves one VM's or one network
//! namespace's user-mode network from inside caploop's sandbox.
//!
//! This is a placeholder until the harness lands: it prints its version.

fn main() {
    println!("caploop-sandbox {}", env!("CARGO_PKG_VERSION"));
}
