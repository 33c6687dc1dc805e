//! `caploop-sandbox`: serves one VM's or one network namespace's user-mode
//! network from inside caploop's sandbox.
//!
//! Every front end goes the same way: parse and check the command line
//! (mistakes are one line on stderr, exit 1), then the front end opens its
//! link (closing every descriptor it was not given) and hands it to the one
//! serve loop ([`serve::run`]), which sets up the slirp stack with its host
//! forwards, gives up root or its capabilities, points stdin and stdout at
//! /dev/null, limits every descriptor and enters the sandbox, and only then
//! reads frames. The peer hanging up or SIGTERM ends it with exit 0 (a
//! second SIGTERM at once, by the signal: [`terminate`]); a failure is one
//! line on stderr and exit 1, as is every warning (a missing Landlock)
//! whether or not `RUST_LOG` asks for more.

mod ack;
mod api;
mod bhyve;
mod cli;
mod core;
mod error;
#[cfg(debug_assertions)]
mod fault;
mod inbound;
mod link;
#[cfg(target_os = "linux")]
mod netns;
#[cfg(all(test, target_os = "linux"))]
mod plan_table;
mod privileges;
mod qemu;
mod record;
mod serve;
#[cfg(target_os = "linux")]
mod slirp4netns;
mod source;
mod startup;
mod stream;
mod terminate;
#[cfg(target_os = "linux")]
mod vhost_user;

use std::io::Write;

use cli::{Cli, FrontEnd, UsageError};
use error::ServeError;
use privileges::Privileges;
use serve::{Extras, Session};

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
    init_logging();
    if let Err(e) = run(&cli, front, mtu) {
        // caploop's slirp-helper back end, if it asked, hears why too.
        ack::fail(&e.to_string());
        fail(e);
    }
}

/// `RUST_LOG` as asked; without it, warnings and errors only, each as one
/// plain line (`caploop-sandbox: warning: ...`).
fn init_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        env_logger::init();
        return;
    }
    env_logger::Builder::new()
        .filter_level(log::LevelFilter::Warn)
        .format(|buf, record| {
            let level = match record.level() {
                log::Level::Error => "error",
                _ => "warning",
            };
            writeln!(buf, "caploop-sandbox: {level}: {}", record.args())
        })
        .init();
}

fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!("caploop-sandbox: {e}");
    std::process::exit(1);
}

/// The session a hypervisor's command line describes.
fn hypervisor_session(cli: &Cli, mtu: usize, name: &str) -> Result<Session, ServeError> {
    let config = caploop::slirp::Config {
        restricted: !cli.open,
        mtu,
        mru: mtu,
        ipv6: cli.ipv6,
        tcp: cli.tcp,
        hostfwd_real_source: cli.hostfwd_real_source,
        tcp_idle_timeout: std::time::Duration::from_secs(cli.tcp_idle_timeout),
        tcp_fin_timeout: std::time::Duration::from_secs(cli.tcp_fin_timeout),
        ..caploop::slirp::Config::default()
    };
    config
        .validate()
        .map_err(|e| UsageError(format!("network: {e}")))?;
    let rules = match cli.hostfwd.as_deref() {
        Some(r) => {
            caploop::slirp::parse_rules(r).map_err(|e| UsageError(format!("--hostfwd: {e}")))?
        }
        None => Vec::new(),
    };
    Ok(Session {
        name: cli.vmname.clone().unwrap_or_else(|| name.to_string()),
        config,
        rules,
        privileges: Privileges::DropToUser(cli.user.clone()),
        vm: true,
    })
}

fn run(cli: &Cli, front: FrontEnd, mtu: usize) -> Result<(), ServeError> {
    let (session, link, extras) = match front {
        FrontEnd::QemuStream { path } => {
            let session = hypervisor_session(cli, mtu, "qemu")?;
            (session, qemu::open_stream(&path)?, Extras::default())
        }
        FrontEnd::QemuDgram { path } => {
            let session = hypervisor_session(cli, mtu, "qemu")?;
            (session, qemu::open_dgram(&path, mtu)?, Extras::default())
        }
        #[cfg(target_os = "linux")]
        FrontEnd::VhostUser { path } => {
            let session = hypervisor_session(cli, mtu, "vhost-user")?;
            let link = vhost_user::open(&path, mtu, !cli.no_offload)?;
            (session, link, Extras::default())
        }
        #[cfg(not(target_os = "linux"))]
        FrontEnd::VhostUser { .. } => {
            return Err(UsageError(format!(
                "--vhost-user: Unsupported on {}: the vhost-user back end (rust-vmm's vhost \
                 crate) is Linux-only; use --qemu-stream or --qemu-dgram",
                std::env::consts::OS
            ))
            .into())
        }
        FrontEnd::Bhyve { fd } => {
            let mut session = hypervisor_session(cli, mtu, "bhyve")?;
            let link = bhyve::open(fd, &mut session)?;
            (session, link, Extras::default())
        }
        #[cfg(target_os = "linux")]
        FrontEnd::Slirp4netns { target, tapname } => {
            slirp4netns::open(cli, &target, &tapname, mtu)?
        }
        #[cfg(not(target_os = "linux"))]
        FrontEnd::Slirp4netns { .. } => {
            return Err(UsageError(format!(
                "PID|PATH [TAPNAME]: the slirp4netns front end needs Linux network namespaces; \
                 on {} use -S FD (bhyve), --qemu-stream or --qemu-dgram",
                std::env::consts::OS
            ))
            .into())
        }
    };
    serve::run(session, link, extras)?;
    Ok(())
}
