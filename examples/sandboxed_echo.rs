//! An echo server on the reactor, limited and sandboxed before it serves.
//!
//! ```text
//! cargo run --example sandboxed_echo -- /tmp/echo.sock [SECONDS]   # serve a unix socket
//! cargo run --example sandboxed_echo -- --demo                     # socketpair round trip
//! ```
//!
//! After entering it shows what it can no longer do (open a file, execute a
//! program, connect to 127.0.0.1:9), each with the errno it got, then echoes
//! until SIGTERM/SIGINT or the timeout (default 30 s).

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use caploop::sandbox::{self, Plan, Policy};
use caploop::{Interest, Reactor, Rights};

fn errno_of(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).to_string(),
        None => e.to_string(),
    }
}

/// Echoes whatever arrives on a registered stream; closes it on end of file.
fn echo(r: &mut Reactor<()>, _: &mut (), ev: caploop::Event) {
    let mut buf = [0u8; 4096];
    let fd = ev.fd;
    // SAFETY: the registration owns `fd` and keeps it open while its
    // callback runs; ManuallyDrop keeps this temporary from closing it.
    let mut s = std::mem::ManuallyDrop::new(unsafe {
        <UnixStream as std::os::fd::FromRawFd>::from_raw_fd(fd)
    });
    match s.read(&mut buf) {
        Ok(0) => {
            let _ = r.delete_close(ev.handle);
        }
        Ok(n) => {
            if let Err(e) = s.write_all(&buf[..n]) {
                eprintln!("echo: write on fd {fd}: {}", errno_of(&e));
                let _ = r.delete_close(ev.handle);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Err(e) => {
            eprintln!("echo: read on fd {fd}: {}", errno_of(&e));
            let _ = r.delete_close(ev.handle);
        }
    }
}

fn show_refusals() {
    match std::fs::File::open("/etc/passwd") {
        Ok(_) => println!("open(/etc/passwd): ALLOWED (sandbox broken?)"),
        Err(e) => println!("open(/etc/passwd): refused, {}", errno_of(&e)),
    }
    let prog = c"/bin/true";
    match nix::unistd::execv(prog, &[prog]) {
        Ok(never) => match never {},
        Err(e) => println!("execve(/bin/true): refused, {e}"),
    }
    match std::net::TcpStream::connect_timeout(
        &"127.0.0.1:9".parse().expect("address"),
        Duration::from_secs(1),
    ) {
        Ok(_) => println!("connect(127.0.0.1:9): ALLOWED (sandbox broken?)"),
        Err(e) => println!("connect(127.0.0.1:9): refused, {}", errno_of(&e)),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let demo = args.first().map(String::as_str) == Some("--demo");
    let secs: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(30);

    let mut reactor: Reactor<()> = Reactor::new()?;
    for sig in [libc::SIGTERM, libc::SIGINT] {
        reactor.add_signal(sig, |r, _, signo| {
            println!("signal {signo}: stopping");
            r.stop();
        })?;
    }
    reactor.add_timer(Duration::from_secs(secs), |r, _, _| {
        println!("timeout: stopping");
        r.stop();
    });

    let client: Option<UnixStream> = if demo {
        let (a, b) = UnixStream::pair()?;
        a.set_nonblocking(true)?;
        reactor.add(OwnedFd::from(a), Interest::READ, Rights::SOCKET, echo)?;
        Some(b)
    } else {
        let path = args
            .first()
            .ok_or("usage: sandboxed_echo PATH [SECONDS] | --demo")?;
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        println!("listening on {path} for {secs} s");
        reactor.add(
            OwnedFd::from(listener),
            Interest::READ,
            Rights::LISTENER,
            |r, _, ev| {
                // SAFETY: the registration owns the listener and keeps it
                // open while this callback runs; ManuallyDrop keeps it so.
                let l = std::mem::ManuallyDrop::new(unsafe {
                    <UnixListener as std::os::fd::FromRawFd>::from_raw_fd(ev.fd)
                });
                match l.accept() {
                    Ok((s, _)) => {
                        if let Err(e) = s.set_nonblocking(true) {
                            eprintln!("set_nonblocking: {}", errno_of(&e));
                        }
                        if let Err(e) =
                            r.add(OwnedFd::from(s), Interest::READ, Rights::SOCKET, echo)
                        {
                            eprintln!("registering a client: {e}");
                        }
                    }
                    Err(e) => eprintln!("accept: {}", errno_of(&e)),
                }
            },
        )?;
        None
    };

    let mut plan = Plan::from_reactor(&reactor);
    plan.add(&std::io::stdout(), Rights::WRITE_ONLY, "stdout")
        .add(&std::io::stderr(), Rights::WRITE_ONLY, "stderr");
    if let Some(c) = &client {
        plan.add(c, Rights::SOCKET, "demo client");
    }
    let report = plan.apply_and_enter(&Policy::restricted())?;
    println!(
        "sandbox entered: {} fds limited, landlock {:?}, seccomp {} syscalls, warnings {:?}",
        report.limited.len(),
        report.landlock.as_ref().map(|l| (l.abi, l.enforcement)),
        report.seccomp.as_ref().map_or(0, |s| s.syscalls.len()),
        report.warnings
    );
    let st = sandbox::status();
    println!(
        "status: seccomp {:?}, no_new_privs {:?}, capability mode {:?}",
        st.seccomp, st.no_new_privs, st.capability_mode
    );
    show_refusals();

    if let Some(mut c) = client {
        c.write_all(b"ping through the sandbox")?;
        let c = std::rc::Rc::new(c);
        let reader = std::rc::Rc::clone(&c);
        reactor.add(c, Interest::READ, Rights::SOCKET, move |r, _, _| {
            let mut buf = [0u8; 64];
            match (&*reader).read(&mut buf) {
                Ok(n) => println!("echoed: {:?}", String::from_utf8_lossy(&buf[..n])),
                Err(e) => println!("reading the echo: {}", errno_of(&e)),
            }
            r.stop();
        })?;
        reactor.run(&mut ())?;
    } else {
        reactor.run(&mut ())?;
    }
    println!("done");
    Ok(())
}
