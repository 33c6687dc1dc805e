//! A mevent-style TCP echo server on caploop's reactor.
//!
//! ```text
//! cargo run --example echo -- 127.0.0.1:7777
//! printf hello | nc -q1 127.0.0.1 7777
//! ```
//!
//! One thread: the listener's callback accepts and registers each
//! connection (owned by the reactor); a connection's callback reads, echoes
//! what it can write at once and waits for writability for the rest, and
//! closes on end of file. SIGINT or SIGTERM stops the loop with a count of
//! bytes echoed.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

use caploop::reactor::{Event, Handle, Interest, Reactor};
use caploop::Rights;

/// The server's state, handed to every callback.
#[derive(Default)]
struct Echo {
    conns: HashMap<RawFd, Conn>,
    echoed: u64,
}

struct Conn {
    /// Shared with the registration, which keeps it open while registered.
    stream: Rc<TcpStream>,
    /// Bytes read but not yet written back.
    backlog: Vec<u8>,
}

fn on_conn(r: &mut Reactor<Echo>, echo: &mut Echo, ev: Event) {
    let Some(conn) = echo.conns.get_mut(&ev.fd) else {
        return;
    };
    let mut closed = ev.hangup && !ev.readable;
    if ev.readable && conn.backlog.is_empty() {
        let mut buf = [0u8; 16 * 1024];
        match (&*conn.stream).read(&mut buf) {
            Ok(0) => closed = true,
            Ok(n) => conn.backlog.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => closed = true,
        }
    }
    while !closed && !conn.backlog.is_empty() {
        match (&*conn.stream).write(&conn.backlog) {
            Ok(n) => {
                echo.echoed += n as u64;
                conn.backlog.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(_) => closed = true,
        }
    }
    if closed {
        // Delete the registration before the stream (and its fd) is dropped.
        let _ = r.delete(ev.handle);
        echo.conns.remove(&ev.fd);
        return;
    }
    // Read again only once everything read has been written back.
    let want = if conn.backlog.is_empty() {
        Interest::READ
    } else {
        Interest::WRITE
    };
    if let Err(e) = r.set_interest(ev.handle, want) {
        eprintln!("echo: {e}");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = TcpListener::bind(&addr)?;
    listener.set_nonblocking(true)?;
    println!("echo: listening on {}", listener.local_addr()?);

    let mut r: Reactor<Echo> = Reactor::new()?;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        r.add_signal(sig, |r, _, _| r.stop())?;
    }
    // The callback and the registration share the listener.
    let listener = Rc::new(listener);
    let _listen: Handle = r.add(
        Rc::clone(&listener),
        Interest::READ,
        Rights::LISTENER,
        move |r, echo: &mut Echo, _| loop {
            match listener.accept() {
                Ok((stream, peer)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let fd = stream.as_raw_fd();
                    let stream = Rc::new(stream);
                    match r.add(Rc::clone(&stream), Interest::READ, Rights::SOCKET, on_conn) {
                        Ok(_) => {
                            echo.conns.insert(
                                fd,
                                Conn {
                                    stream,
                                    backlog: Vec::new(),
                                },
                            );
                        }
                        Err(e) => eprintln!("echo: dropping {peer}: {e}"),
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    eprintln!("echo: accept: {e}");
                    break;
                }
            }
        },
    )?;

    let mut echo = Echo::default();
    r.run(&mut echo)?;
    println!(
        "echo: stopped, {} bytes echoed, {} connections open",
        echo.echoed,
        echo.conns.len()
    );
    Ok(())
}
