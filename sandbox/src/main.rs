//! `caploop-sandbox`: serves one VM's or one network namespace's user-mode
//! network from inside caploop's sandbox.
//!
//! Every front end goes the same way: parse and check the command line
//! (mistakes are one line on stderr, exit 1), close every descriptor it was
//! not given, set up the link and the slirp stack with its host forwards,
//! drop root, point stdio at /dev/null unless `RUST_LOG` asks for logs,
//! limit every descriptor and enter the sandbox, and only then read frames.
//! The peer hanging up or SIGTERM ends it with exit 0.

mod api;
mod bhyve;
mod cli;
mod netns;
mod qemu;
mod record;
mod serve;
mod slirp4netns;
mod startup;

use cli::{Cli, FrontEnd};
use serve::{ServeError, Session};

fn main() {
    let cli = match Cli::parse_from_args(std::env::args_os()) {
        Ok(cli) => cli,
        Err(Ok(text)) => {
            print!("{text}");
            std::process::exit(0);
        }
        Err(Err(e)) => fail(e),
    };
    let front = cli.front_end().unwrap_or_else(|e| fail(e));
    let mtu = cli.mtu_for(&front).unwrap_or_else(|e| fail(e)) as usize;
    let logging = std::env::var_os("RUST_LOG").is_some();
    if logging {
        env_logger::init();
    }
    if let Err(e) = run(&cli, front, mtu, logging) {
        fail(e);
    }
}

fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!("caploop-sandbox: {e}");
    std::process::exit(1);
}

/// The session the hypervisor command line describes.
fn hypervisor_session(
    cli: &Cli,
    mtu: usize,
    logging: bool,
    name: &str,
) -> Result<Session, ServeError> {
    let config = serve::hypervisor_config(cli.open, mtu, cli.ipv6);
    config.validate().map_err(caploop::slirp::Error::from)?;
    let rules = match cli.hostfwd.as_deref() {
        Some(r) => caploop::slirp::parse_rules(r)
            .map_err(|e| ServeError::Protocol(format!("--hostfwd: {e}")))?,
        None => Vec::new(),
    };
    Ok(Session {
        config,
        rules,
        user: cli.user.clone(),
        logging,
        name: cli.vmname.clone().unwrap_or_else(|| name.to_string()),
    })
}

fn run(cli: &Cli, front: FrontEnd, mtu: usize, logging: bool) -> Result<(), ServeError> {
    match front {
        FrontEnd::QemuStream { path } => {
            let session = hypervisor_session(cli, mtu, logging, "qemu")?;
            startup::close_other_fds(&[])?;
            let listener = qemu::listen(&path)?;
            eprintln!(
                "caploop-sandbox: waiting for QEMU on {p}: qemu-system-x86_64 ... \
                 -netdev stream,id=n0,server=off,addr.type=unix,addr.path={p} \
                 -device virtio-net-pci,netdev=n0",
                p = path.display()
            );
            let conn = qemu::accept(listener, &path)?;
            let outcome = qemu::serve(conn, session)?;
            log::info!("qemu: {outcome:?}");
            Ok(())
        }
        FrontEnd::QemuDgram { path } => {
            let session = hypervisor_session(cli, mtu, logging, "qemu")?;
            startup::close_other_fds(&[])?;
            eprintln!(
                "caploop-sandbox: waiting for QEMU on {p}: qemu-system-x86_64 ... \
                 -netdev dgram,id=n0,local.type=unix,local.path=QEMU.sock,remote.type=unix,remote.path={p} \
                 -device virtio-net-pci,netdev=n0",
                p = path.display()
            );
            let sock = qemu::dgram(&path)?;
            let outcome = qemu::serve_dgram(sock, session)?;
            log::info!("qemu: {outcome:?}");
            Ok(())
        }
        FrontEnd::Bhyve { fd } => {
            startup::close_other_fds(&[fd])?;
            let sock = bhyve::take_socket(fd)?;
            let session = hypervisor_session(cli, mtu, logging, "bhyve")?;
            let config = bhyve::read_config(&sock)?;
            let outcome = bhyve::serve(sock, config, session)?;
            log::info!("bhyve: {outcome:?}");
            Ok(())
        }
        FrontEnd::Slirp4netns { target, tapname } => {
            let outcome = slirp4netns::run(cli, &target, &tapname, mtu)?;
            log::info!("slirp4netns: {outcome:?}");
            Ok(())
        }
    }
}
