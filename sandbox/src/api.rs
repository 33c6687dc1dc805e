//! The slirp4netns API socket on the reactor: one request per connection
//! (at most 4096 bytes; the client then shuts down its write side), the
//! reply in one write, then close.
//!
//! Unlike slirp4netns, a request never stops the world: each connection is
//! a registration like any other, so frames keep flowing while a client is
//! slow, and a client that has not finished its request within
//! [`REQUEST_TIMEOUT`] is dropped.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::rc::Rc;
use std::time::Duration;

use caploop::reactor::{Handle, Interest, Reactor, TimerHandle};
use caploop::slirp::{Proto, Rule, Stack};
use caploop::wire::api::{self, Entry, Reply, Request, MAX_REQUEST};
use caploop::Rights;

/// How long a client may take to send its whole request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The forwards added through the API, by id.
pub struct Forwards {
    stack: Rc<Stack>,
    default_guest: Ipv4Addr,
    next_id: u64,
    table: BTreeMap<u64, Rule>,
}

impl Forwards {
    /// An empty table over `stack`; forwards without a guest address go to
    /// `default_guest` (the network's .100).
    pub fn new(stack: Rc<Stack>, default_guest: Ipv4Addr) -> Forwards {
        Forwards {
            stack,
            default_guest,
            next_id: 1,
            table: BTreeMap::new(),
        }
    }

    /// Answers one request.
    pub fn handle(&mut self, req: Request) -> Reply {
        match req {
            Request::AddHostfwd {
                proto,
                host_addr,
                host_port,
                guest_addr,
                guest_port,
            } => {
                let rule = Rule {
                    proto: match proto {
                        api::Proto::Tcp => Proto::Tcp,
                        api::Proto::Udp => Proto::Udp,
                    },
                    host_addr: Some(host_addr.unwrap_or(api::DEFAULT_HOST_ADDR)),
                    host_port,
                    guest_addr: Some(guest_addr.unwrap_or(IpAddr::V4(self.default_guest))),
                    guest_port,
                };
                match self.stack.add_hostfwd(&rule) {
                    Ok(()) => {
                        let id = self.next_id;
                        self.next_id += 1;
                        self.table.insert(id, rule);
                        log::info!("api: forward {id}: {rule}");
                        Reply::Id(id)
                    }
                    Err(e) => {
                        log::info!("api: add_hostfwd {rule}: {e}");
                        Reply::Error(format!(
                            "bad request: add_hostfwd: slirp_add_hostfwd failed ({e})"
                        ))
                    }
                }
            }
            Request::ListHostfwd => Reply::Entries(
                self.table
                    .iter()
                    .map(|(&id, r)| Entry {
                        id,
                        proto: match r.proto {
                            Proto::Tcp => api::Proto::Tcp,
                            Proto::Udp => api::Proto::Udp,
                        },
                        host_addr: r.host_addr.unwrap_or(api::DEFAULT_HOST_ADDR),
                        host_port: r.host_port,
                        guest_addr: r.guest_addr.unwrap_or(IpAddr::V4(self.default_guest)),
                        guest_port: r.guest_port,
                    })
                    .collect(),
            ),
            Request::RemoveHostfwd { id } => match self.table.get(&id) {
                None => Reply::Error("bad request: remove_hostfwd: bad arguments.id".into()),
                Some(rule) => match self.stack.remove_hostfwd(rule) {
                    Ok(()) => {
                        log::info!("api: forward {id} removed");
                        self.table.remove(&id);
                        Reply::Ok
                    }
                    Err(e) => Reply::Error(format!(
                        "bad request: remove_hostfwd: slirp_remove_hostfwd failed ({e})"
                    )),
                },
            },
        }
    }
}

/// One client connection.
struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
    timer: Option<TimerHandle>,
}

type Clients = Rc<RefCell<BTreeMap<RawFd, Client>>>;

/// Registers the API listener: each accepted client becomes a registration
/// with a deadline.
pub fn register<D: 'static>(
    reactor: &mut Reactor<D>,
    listener: UnixListener,
    forwards: Rc<RefCell<Forwards>>,
) -> caploop::reactor::Result<Handle> {
    listener
        .set_nonblocking(true)
        .map_err(|e| caploop::reactor::Error::Io {
            op: "making the API listener non-blocking".into(),
            source: e,
        })?;
    let clients: Clients = Rc::new(RefCell::new(BTreeMap::new()));
    let fd = caploop::Source::from(&listener);
    reactor.add(fd, Interest::READ, Rights::LISTENER, move |r, _, _| {
        for _ in 0..16 {
            match listener.accept() {
                Ok((stream, _)) => accept(r, stream, &clients, &forwards),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    log::warn!("api: accept: {e}");
                    break;
                }
            }
        }
    })
}

fn accept<D: 'static>(
    r: &mut Reactor<D>,
    stream: UnixStream,
    clients: &Clients,
    forwards: &Rc<RefCell<Forwards>>,
) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let fd = stream.as_raw_fd();
    let (c_read, f_read) = (clients.clone(), forwards.clone());
    let handle = match r.add(&stream, Interest::READ, Rights::SOCKET, move |r, _, ev| {
        on_readable(r, ev.handle, ev.fd, &c_read, &f_read)
    }) {
        Ok(h) => h,
        Err(e) => {
            log::warn!("api: {e}");
            return;
        }
    };
    let c_timer = clients.clone();
    let timer = r.add_timer(REQUEST_TIMEOUT, move |r, _, _| {
        if let Some(c) = c_timer.borrow_mut().remove(&fd) {
            log::info!(
                "api: dropping a client that sent {} bytes in {REQUEST_TIMEOUT:?}",
                c.buf.len()
            );
            let _ = r.delete(handle);
        }
    });
    clients.borrow_mut().insert(
        fd,
        Client {
            stream,
            buf: Vec::new(),
            timer: Some(timer),
        },
    );
}

fn on_readable<D: 'static>(
    r: &mut Reactor<D>,
    handle: Handle,
    fd: RawFd,
    clients: &Clients,
    forwards: &Rc<RefCell<Forwards>>,
) {
    let mut map = clients.borrow_mut();
    let Some(client) = map.get_mut(&fd) else {
        let _ = r.delete(handle);
        return;
    };
    let mut chunk = [0u8; 1024];
    let complete = loop {
        match client.stream.read(&mut chunk) {
            Ok(0) => break true,
            Ok(n) => {
                client.buf.extend_from_slice(&chunk[..n]);
                if client.buf.len() > MAX_REQUEST {
                    break true;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break true,
        }
    };
    if !complete {
        return;
    }
    let mut client = map.remove(&fd).expect("present");
    drop(map);
    if let Some(t) = client.timer.take() {
        let _ = r.cancel_timer(t);
    }
    let reply = match api::parse_request(&client.buf) {
        Ok(req) => {
            let reply = forwards.borrow_mut().handle(req);
            // remove_hostfwd closes a socket of libslirp's: drop its
            // registration before a later callback reuses the number.
            forwards.borrow().stack.sync(r);
            reply
        }
        Err(e) => e.reply(),
    };
    let _ = r.delete(handle);
    // One write: clients (Podman) read the reply with a single read. A
    // reply is far smaller than a socket buffer, so it is never partial.
    let json = reply.to_json();
    match client.stream.write(json.as_bytes()) {
        Ok(n) if n == json.len() => {}
        Ok(n) => log::info!("api: reply cut at {n} of {} bytes", json.len()),
        Err(e) => log::info!("api: writing the reply: {e}"),
    }
}
