//! The slirp4netns API socket on the reactor: one request per connection
//! (at most 4095 bytes), answered as soon as one whole JSON object has
//! arrived, the reply written whole, then the connection closed.
//!
//! Unlike slirp4netns, a request never stops the world: each connection is
//! a registration like any other, so frames keep flowing while a client is
//! slow. A client that has not finished its exchange within
//! [`REQUEST_TIMEOUT`] is dropped; at most [`MAX_CLIENTS`] are served at
//! once (the rest wait in the listen backlog); a failing `accept` (out of
//! descriptors) pauses the listener for [`ACCEPT_RETRY`] instead of
//! spinning.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::net::{UnixListener, UnixStream};
use std::rc::Rc;
use std::time::Duration;

use caploop::reactor::{Handle, Interest, Reactor, TimerHandle};
use caploop::slirp::{Proto, Rule, Stack};
use caploop::wire::api::{self, Entry, Reply, Request};
use caploop::Rights;

fn slirp_proto(p: api::Proto) -> Proto {
    match p {
        api::Proto::Tcp => Proto::Tcp,
        api::Proto::Udp => Proto::Udp,
    }
}

fn api_proto(p: Proto) -> api::Proto {
    match p {
        Proto::Tcp => api::Proto::Tcp,
        Proto::Udp => api::Proto::Udp,
    }
}

/// How long a client may take to send its request and read the reply.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Clients served at once.
pub const MAX_CLIENTS: usize = 64;

/// How long the listener rests after `accept` failed (no descriptors left).
pub const ACCEPT_RETRY: Duration = Duration::from_millis(250);

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
    pub fn handle<D: 'static>(&mut self, r: &mut Reactor<D>, req: Request) -> Reply {
        match req {
            Request::AddHostfwd {
                proto,
                host_addr,
                host_port,
                guest_addr,
                guest_port,
                real_source,
            } => {
                let rule = Rule {
                    proto: slirp_proto(proto),
                    host_addr: Some(host_addr.unwrap_or(api::DEFAULT_HOST_ADDR)),
                    host_port,
                    guest_addr: Some(guest_addr.unwrap_or(IpAddr::V4(self.default_guest))),
                    guest_port,
                    real_source,
                };
                match self.stack.add_hostfwd(r, &rule) {
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
                        proto: api_proto(r.proto),
                        host_addr: r.host_addr.unwrap_or(api::DEFAULT_HOST_ADDR),
                        host_port: r.host_port,
                        guest_addr: r.guest_addr.unwrap_or(IpAddr::V4(self.default_guest)),
                        guest_port: r.guest_port,
                        real_source: r.real_source,
                    })
                    .collect(),
            ),
            Request::RemoveHostfwd { id } => match self.table.get(&id) {
                None => Reply::Error("bad request: remove_hostfwd: bad arguments.id".into()),
                Some(rule) => match self.stack.remove_hostfwd(r, rule) {
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

/// One client connection: its request so far, then its reply.
struct Client {
    /// Shared with the client's registration.
    stream: Rc<UnixStream>,
    request: Vec<u8>,
    /// The reply, once the request is complete, and how much is written.
    reply: Option<(Vec<u8>, usize)>,
    timer: TimerHandle,
}

/// The API's state: the listener's registration, the clients by their
/// registration, and the forwards.
struct Api {
    listener: Option<Handle>,
    clients: HashMap<Handle, Client>,
    forwards: Forwards,
    /// The listener is resting after a failed accept.
    resting: bool,
}

type Shared = Rc<RefCell<Api>>;

/// Registers the API listener (non-blocking, already bound); each accepted
/// client becomes a registration with a deadline.
pub fn register<D: 'static>(
    reactor: &mut Reactor<D>,
    listener: UnixListener,
    forwards: Forwards,
) -> caploop::reactor::Result<()> {
    listener
        .set_nonblocking(true)
        .map_err(|e| caploop::reactor::Error::Io {
            op: "making the API listener non-blocking".into(),
            source: e,
        })?;
    let api: Shared = Rc::new(RefCell::new(Api {
        listener: None,
        clients: HashMap::new(),
        forwards,
        resting: false,
    }));
    let a = api.clone();
    let handle = reactor.add(
        std::os::fd::OwnedFd::from(listener),
        Interest::READ,
        Rights::LISTENER,
        move |r, _, ev| on_listener(r, ev.fd, &a),
    )?;
    api.borrow_mut().listener = Some(handle);
    Ok(())
}

fn on_listener<D: 'static>(r: &mut Reactor<D>, fd: std::os::fd::RawFd, api: &Shared) {
    for _ in 0..16 {
        if api.borrow().clients.len() >= MAX_CLIENTS {
            // The rest wait in the backlog until a client is done.
            pause_listener(r, api);
            return;
        }
        // SAFETY: accept4 on the listener the reactor holds open for this
        // callback; the new descriptor, if any, is owned at once below.
        let s = unsafe {
            libc::accept4(
                fd,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            )
        };
        if s < 0 {
            let e = std::io::Error::last_os_error();
            match e.kind() {
                ErrorKind::WouldBlock => return,
                ErrorKind::Interrupted | ErrorKind::ConnectionAborted => continue,
                _ => {
                    // Out of descriptors or memory: the connection stays in
                    // the backlog; rest instead of spinning on it.
                    log::warn!("api: accept: {e}; pausing the API for {ACCEPT_RETRY:?}");
                    rest_listener(r, api);
                    return;
                }
            }
        }
        // SAFETY: accept4 returned a new descriptor nothing else owns.
        let stream = unsafe { <UnixStream as std::os::fd::FromRawFd>::from_raw_fd(s) };
        accept(r, stream, api);
    }
}

fn pause_listener<D: 'static>(r: &mut Reactor<D>, api: &Shared) {
    if let Some(h) = api.borrow().listener {
        let _ = r.disable(h);
    }
}

fn resume_listener<D: 'static>(r: &mut Reactor<D>, api: &Shared) {
    let a = api.borrow();
    if let (Some(h), false) = (a.listener, a.resting) {
        if a.clients.len() < MAX_CLIENTS {
            let _ = r.enable(h);
        }
    }
}

fn rest_listener<D: 'static>(r: &mut Reactor<D>, api: &Shared) {
    pause_listener(r, api);
    api.borrow_mut().resting = true;
    let a = api.clone();
    r.add_timer(ACCEPT_RETRY, move |r, _, _| {
        a.borrow_mut().resting = false;
        resume_listener(r, &a);
    });
}

fn accept<D: 'static>(r: &mut Reactor<D>, stream: UnixStream, api: &Shared) {
    let a = api.clone();
    let stream = Rc::new(stream);
    let source = Rc::clone(&stream);
    let handle = match r.add(source, Interest::READ, Rights::SOCKET, move |r, _, ev| {
        on_client(r, ev.handle, &a)
    }) {
        Ok(h) => h,
        Err(e) => {
            log::warn!("api: {e}");
            return;
        }
    };
    let a = api.clone();
    let timer = r.add_timer(REQUEST_TIMEOUT, move |r, _, _| {
        let client = a.borrow_mut().clients.remove(&handle);
        if let Some(c) = client {
            log::info!(
                "api: dropping a client that sent {} bytes and was sent {} in {REQUEST_TIMEOUT:?}",
                c.request.len(),
                c.reply.as_ref().map_or(0, |(_, n)| *n)
            );
            let _ = r.delete(handle);
            resume_listener(r, &a);
        }
    });
    api.borrow_mut().clients.insert(
        handle,
        Client {
            stream,
            request: Vec::new(),
            reply: None,
            timer,
        },
    );
}

/// Reads the request until it is whole, answers it, then writes the
/// reply as the socket takes it.
fn on_client<D: 'static>(r: &mut Reactor<D>, handle: Handle, api: &Shared) {
    let mut a = api.borrow_mut();
    let Api {
        clients, forwards, ..
    } = &mut *a;
    let Some(client) = clients.get_mut(&handle) else {
        let _ = r.delete(handle);
        return;
    };
    if client.reply.is_none() {
        // Everything the client has sent so far (as slirp4netns's one read
        // sees it: more than 4095 bytes is "too large" even if it begins
        // with a whole request), then answer if it holds a whole request.
        let mut chunk = [0u8; 1024];
        let ended = loop {
            match (&*client.stream).read(&mut chunk) {
                Ok(0) => break true,
                Ok(n) => {
                    client.request.extend_from_slice(&chunk[..n]);
                    if client.request.len() > api::MAX_REQUEST {
                        break true;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break true,
            }
        };
        if !ended && !api::request_complete(&client.request) {
            return;
        }
        let reply = match api::parse_request(&client.request) {
            Ok(req) => forwards.handle(r, req),
            Err(e) => e.reply(),
        };
        client.reply = Some((reply.to_json().into_bytes(), 0));
    }
    let Some((out, sent)) = client.reply.as_mut() else {
        return;
    };
    while *sent < out.len() {
        match (&*client.stream).write(&out[*sent..]) {
            Ok(n) => *sent += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                // The rest when the client has read some.
                let _ = r.set_interest(handle, Interest::WRITE);
                return;
            }
            Err(e) => {
                log::info!("api: writing the reply: {e}");
                break;
            }
        }
    }
    let client = clients.remove(&handle).expect("present");
    drop(a);
    let _ = r.cancel_timer(client.timer);
    let _ = r.delete(handle);
    drop(client);
    resume_listener(r, api);
}
