//! The slirp4netns JSON API (`--api-socket`): one request per connection,
//! one reply, as rootlesskit and Podman speak it to slirp4netns 1.2.
//!
//! [`parse_request`] reads what one `read(4096)` returned and gives a
//! [`Request`] or an [`ApiError`] whose [`desc`](ApiError::desc) is the
//! exact string slirp4netns replies with. [`Reply`] encodes the answers
//! byte for byte as slirp4netns writes them: compact JSON, no newline.
//!
//! Needs the `api` feature (off by default), which brings in serde and
//! serde_json.

use std::net::{IpAddr, Ipv4Addr};

use serde::Serialize;
use serde_json::{Map, Value};

/// slirp4netns reads a request with one `read` into a 4096-byte buffer and
/// refuses it ("too large message") if the buffer fills: a request is at
/// most 4095 bytes.
pub const MAX_REQUEST: usize = 4095;

/// The default host address of a forward (slirp4netns: missing or empty
/// `host_addr` means `0.0.0.0`).
pub const DEFAULT_HOST_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// Transport of a host forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// `"tcp"`.
    Tcp,
    /// `"udp"`.
    Udp,
}

impl Proto {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A request on the API socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `{"execute":"add_hostfwd","arguments":{...}}`.
    AddHostfwd {
        /// `arguments.proto`.
        proto: Proto,
        /// `arguments.host_addr`; `None` when missing or `""`, which
        /// means [`DEFAULT_HOST_ADDR`] (see
        /// [`Request::host_addr_or_default`]).
        host_addr: Option<IpAddr>,
        /// `arguments.host_port` (1 to 65535).
        host_port: u16,
        /// `arguments.guest_addr`; `None` when missing or `""`, which
        /// means the default guest address (the network's `.100`).
        guest_addr: Option<IpAddr>,
        /// `arguments.guest_port` (1 to 65535).
        guest_port: u16,
        /// `arguments.real_source` (ours; a boolean): whether a TCP
        /// connection through the forward reaches the guest from the real
        /// client's address. `None` when missing or null: the helper's
        /// `--hostfwd-real-source` decides.
        real_source: Option<bool>,
    },
    /// `{"execute":"list_hostfwd"}`.
    ListHostfwd,
    /// `{"execute":"remove_hostfwd","arguments":{"id":N}}`.
    RemoveHostfwd {
        /// `arguments.id`.
        id: u64,
    },
}

impl Request {
    /// The request as a client could write it (compact JSON, keys sorted,
    /// no newline; rootlesskit appends one). Default addresses are written
    /// as `""`, as Podman does, which parses back to `None`.
    pub fn to_json(&self) -> String {
        let addr = |a: &Option<IpAddr>| a.map(|a| a.to_string()).unwrap_or_default();
        let v = match self {
            Request::AddHostfwd {
                proto,
                host_addr,
                host_port,
                guest_addr,
                guest_port,
                real_source,
            } => {
                let mut v = serde_json::json!({
                    "execute": "add_hostfwd",
                    "arguments": {
                        "proto": proto.as_str(),
                        "host_addr": addr(host_addr),
                        "host_port": host_port,
                        "guest_addr": addr(guest_addr),
                        "guest_port": guest_port,
                    }
                });
                if let Some(b) = real_source {
                    v["arguments"]["real_source"] = Value::Bool(*b);
                }
                v
            }
            Request::ListHostfwd => serde_json::json!({ "execute": "list_hostfwd" }),
            Request::RemoveHostfwd { id } => serde_json::json!({
                "execute": "remove_hostfwd",
                "arguments": { "id": id }
            }),
        };
        v.to_string()
    }

    /// For [`Request::AddHostfwd`], the host address with the default
    /// applied; `None` for other requests.
    pub fn host_addr_or_default(&self) -> Option<IpAddr> {
        match self {
            Request::AddHostfwd { host_addr, .. } => Some(host_addr.unwrap_or(DEFAULT_HOST_ADDR)),
            _ => None,
        }
    }
}

/// A request that cannot be served, with slirp4netns's description.
///
/// [`desc`](ApiError::desc) is the string for the reply, exactly as
/// slirp4netns 1.2 words it; `Display` adds the offending value for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The request filled slirp4netns's 4096-byte buffer.
    #[error("{} ({len} bytes, at most {MAX_REQUEST})", self.desc())]
    TooLarge {
        /// Bytes received.
        len: usize,
    },
    /// Not JSON.
    #[error("{} ({detail})", self.desc())]
    CannotParse {
        /// serde_json's message (line and column).
        detail: String,
    },
    /// JSON, but not an object.
    #[error("{}", self.desc())]
    NotObject,
    /// No string `execute`.
    #[error("{}", self.desc())]
    NoExecute,
    /// An `execute` other than the three known.
    #[error("{} ({execute:?})", self.desc())]
    UnknownExecute {
        /// The value given.
        execute: String,
    },
    /// An argument missing, of the wrong type or out of range.
    #[error("{} (got {value})", self.desc())]
    BadArgument {
        /// `"add_hostfwd"` or `"remove_hostfwd"`.
        execute: &'static str,
        /// The argument: `"proto"`, `"host_addr"`, `"host_port"`,
        /// `"guest_addr"`, `"guest_port"` or `"id"`.
        field: &'static str,
        /// The value given, as JSON (`missing` if absent).
        value: String,
    },
}

impl ApiError {
    /// The `desc` slirp4netns replies with.
    pub fn desc(&self) -> String {
        match self {
            ApiError::TooLarge { .. } => "bad request: too large message".into(),
            ApiError::CannotParse { .. } => "bad request: cannot parse JSON".into(),
            ApiError::NotObject => "bad request: json_object() failed".into(),
            ApiError::NoExecute => "bad request: no execute found".into(),
            ApiError::UnknownExecute { .. } => "bad request: unknown execute".into(),
            ApiError::BadArgument { execute, field, .. } => {
                format!("bad request: {execute}: bad arguments.{field}")
            }
        }
    }

    /// The reply for this error.
    pub fn reply(&self) -> Reply {
        Reply::Error(self.desc())
    }
}

/// Parses one request: what a single `read` of at most 4096 bytes returned.
///
/// As in slirp4netns, the request ends at the first NUL if any, and
/// whitespace (the clients' trailing newline) around the JSON is ignored.
/// Unlike slirp4netns, a missing or non-string `proto` is an error rather
/// than a crash, ports must be integers in 1..=65535 rather than anything
/// that truncates to a non-zero `int`, and IPv6 addresses are accepted
/// (slirp4netns 1.2 takes IPv4 only; the caller decides).
pub fn parse_request(bytes: &[u8]) -> Result<Request, ApiError> {
    if bytes.len() > MAX_REQUEST {
        return Err(ApiError::TooLarge { len: bytes.len() });
    }
    let text = match bytes.iter().position(|&b| b == 0) {
        Some(nul) => &bytes[..nul],
        None => bytes,
    };
    let json: Value = serde_json::from_slice(text).map_err(|e| ApiError::CannotParse {
        detail: e.to_string(),
    })?;
    let Value::Object(obj) = json else {
        return Err(ApiError::NotObject);
    };
    let Some(Value::String(execute)) = obj.get("execute") else {
        return Err(ApiError::NoExecute);
    };
    let args = match obj.get("arguments") {
        Some(Value::Object(a)) => Some(a),
        _ => None,
    };
    match execute.as_str() {
        "add_hostfwd" => add_hostfwd(args),
        "list_hostfwd" => Ok(Request::ListHostfwd),
        "remove_hostfwd" => {
            let id = arg(args, "id");
            match id.and_then(Value::as_u64) {
                Some(id) => Ok(Request::RemoveHostfwd { id }),
                None => Err(bad("remove_hostfwd", "id", id)),
            }
        }
        other => Err(ApiError::UnknownExecute {
            execute: other.to_owned(),
        }),
    }
}

/// Whether `bytes` (what a client has sent so far) holds a whole request
/// to answer now: one complete JSON value (whitespace around it allowed),
/// or something that can never become one (malformed, or more than
/// [`MAX_REQUEST`] bytes), which [`parse_request`] then refuses. `false`
/// while it is a valid JSON prefix, or only whitespace. slirp4netns answers
/// what one `read` returned; clients send the whole request and a newline
/// in one write, so answering at the first complete value loses nothing
/// and does not wait for the client to shut down its side.
pub fn request_complete(bytes: &[u8]) -> bool {
    if bytes.len() > MAX_REQUEST || bytes.contains(&0) {
        return true;
    }
    let mut values =
        serde_json::Deserializer::from_slice(bytes).into_iter::<serde::de::IgnoredAny>();
    match values.next() {
        None => false,
        Some(Ok(_)) => true,
        Some(Err(e)) => !e.is_eof(),
    }
}

fn arg<'a>(args: Option<&'a Map<String, Value>>, name: &str) -> Option<&'a Value> {
    args.and_then(|a| a.get(name))
}

fn bad(execute: &'static str, field: &'static str, value: Option<&Value>) -> ApiError {
    let value = match value {
        None => "missing".to_owned(),
        Some(v) => {
            let s = v.to_string();
            if s.chars().count() > 64 {
                let cut: String = s.chars().take(64).collect();
                format!("{cut}...")
            } else {
                s
            }
        }
    };
    ApiError::BadArgument {
        execute,
        field,
        value,
    }
}

fn add_hostfwd(args: Option<&Map<String, Value>>) -> Result<Request, ApiError> {
    const EX: &str = "add_hostfwd";
    // The order of the checks is slirp4netns's, so the first error
    // reported is the same.
    let proto = arg(args, "proto");
    let proto = match proto.and_then(Value::as_str) {
        Some("tcp") => Proto::Tcp,
        Some("udp") => Proto::Udp,
        _ => return Err(bad(EX, "proto", proto)),
    };
    let address = |field: &'static str| -> Result<Option<IpAddr>, ApiError> {
        let v = arg(args, field);
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => s.parse().map(Some).map_err(|_| bad(EX, field, v)),
            Some(_) => Err(bad(EX, field, v)),
        }
    };
    let port = |field: &'static str| -> Result<u16, ApiError> {
        let v = arg(args, field);
        let n = match v {
            Some(Value::Number(n)) => n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                    .map(|f| f as u64)
            }),
            _ => None,
        };
        match n.and_then(|n| u16::try_from(n).ok()) {
            Some(p) if p != 0 => Ok(p),
            _ => Err(bad(EX, field, v)),
        }
    };
    let host_addr = address("host_addr")?;
    let host_port = port("host_port")?;
    let guest_addr = address("guest_addr")?;
    let guest_port = port("guest_port")?;
    let real_source = match arg(args, "real_source") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        v => return Err(bad(EX, "real_source", v)),
    };
    Ok(Request::AddHostfwd {
        proto,
        host_addr,
        host_port,
        guest_addr,
        guest_port,
        real_source,
    })
}

/// One entry of a `list_hostfwd` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The forward's id.
    pub id: u64,
    /// Its transport.
    pub proto: Proto,
    /// The host address it listens on.
    pub host_addr: IpAddr,
    /// The host port.
    pub host_port: u16,
    /// The guest address it forwards to.
    pub guest_addr: IpAddr,
    /// The guest port.
    pub guest_port: u16,
    /// `real_source` as the request gave it (ours; left out when it did
    /// not, so the entry is slirp4netns's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub real_source: Option<bool>,
}

/// A reply on the API socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `{"return":{"id":N}}`: a forward was added.
    Id(u64),
    /// `{"return":{}}`: a forward was removed.
    Ok,
    /// `{"entries":[...]}` (no `return` wrapper, as slirp4netns writes it).
    Entries(Vec<Entry>),
    /// `{"error":{"desc":"..."}}`.
    Error(String),
}

impl Reply {
    /// The reply's bytes: compact JSON, no trailing newline, one `write`.
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Id {
            id: u64,
        }
        #[derive(Serialize)]
        struct Empty {}
        #[derive(Serialize)]
        struct Desc<'a> {
            desc: &'a str,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "lowercase")]
        enum Top<'a> {
            Return(Id),
            #[serde(rename = "return")]
            ReturnEmpty(Empty),
            Entries(&'a [Entry]),
            Error(Desc<'a>),
        }
        let top = match self {
            Reply::Id(id) => Top::Return(Id { id: *id }),
            Reply::Ok => Top::ReturnEmpty(Empty {}),
            Reply::Entries(e) => Top::Entries(e),
            Reply::Error(desc) => Top::Error(Desc { desc }),
        };
        // Serialising these types cannot fail: no maps with non-string
        // keys, no floats.
        serde_json::to_string(&top)
            .unwrap_or_else(|_| r#"{"error":{"desc":"internal error: reply encoding"}}"#.to_owned())
    }
}

impl From<&ApiError> for Reply {
    fn from(e: &ApiError) -> Reply {
        e.reply()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_complete_at_its_closing_brace() {
        let req = br#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":8080,"guest_port":80}}"#;
        for cut in 0..req.len() {
            assert!(!request_complete(&req[..cut]), "complete at {cut}");
        }
        assert!(request_complete(req));
        let mut nl = req.to_vec();
        nl.push(b'\n');
        assert!(request_complete(&nl));
        assert!(!request_complete(b"  \n"));
        assert!(request_complete(b"not json"), "malformed: answer at once");
        assert!(request_complete(b"{\"a\":1} trailing"));
        assert!(request_complete(&[b' '; MAX_REQUEST + 1]));
        assert!(request_complete(b"{\"a\0"));
    }
    use proptest::prelude::*;

    fn desc(req: &str) -> String {
        parse_request(req.as_bytes()).unwrap_err().desc()
    }

    #[test]
    fn real_source_is_ours_a_boolean_and_kept_out_of_slirp4netns_replies() {
        let add = |extra: &str| {
            format!(
                r#"{{"execute":"add_hostfwd","arguments":{{"proto":"tcp","host_port":8080,"guest_port":80{extra}}}}}"#
            )
        };
        for (extra, want) in [
            ("", None),
            (r#","real_source":null"#, None),
            (r#","real_source":true"#, Some(true)),
            (r#","real_source":false"#, Some(false)),
        ] {
            let req = parse_request(add(extra).as_bytes()).unwrap();
            match &req {
                Request::AddHostfwd { real_source, .. } => {
                    assert_eq!(*real_source, want, "{extra}")
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(parse_request(req.to_json().as_bytes()).unwrap(), req);
        }
        assert_eq!(
            desc(&add(r#","real_source":"yes""#)),
            "bad request: add_hostfwd: bad arguments.real_source"
        );
        let entry = |real_source| Entry {
            id: 1,
            proto: Proto::Tcp,
            host_addr: DEFAULT_HOST_ADDR,
            host_port: 8080,
            guest_addr: "10.0.2.100".parse().unwrap(),
            guest_port: 80,
            real_source,
        };
        let plain = serde_json::to_string(&entry(None)).unwrap();
        assert!(!plain.contains("real_source"), "{plain}");
        let asked = serde_json::to_string(&entry(Some(true))).unwrap();
        assert!(asked.contains(r#""real_source":true"#), "{asked}");
    }

    #[test]
    fn what_rootlesskit_and_podman_send() {
        let r = parse_request(
            b"{\"execute\":\"add_hostfwd\",\"arguments\":{\"proto\":\"tcp\",\"host_addr\":\"127.0.0.1\",\"host_port\":18080,\"guest_addr\":\"10.0.2.100\",\"guest_port\":8080}}\n",
        )
        .unwrap();
        assert_eq!(
            r,
            Request::AddHostfwd {
                proto: Proto::Tcp,
                host_addr: Some("127.0.0.1".parse().unwrap()),
                host_port: 18080,
                guest_addr: Some("10.0.2.100".parse().unwrap()),
                guest_port: 8080,
                real_source: None,
            }
        );
        // Podman: guest_addr "" means the default.
        let r = parse_request(
            br#"{"execute":"add_hostfwd","arguments":{"proto":"udp","host_addr":"127.0.0.1","host_port":18087,"guest_addr":"","guest_port":8085}}"#,
        )
        .unwrap();
        assert!(matches!(
            r,
            Request::AddHostfwd {
                proto: Proto::Udp,
                guest_addr: None,
                ..
            }
        ));
        // Missing addresses: host defaults to 0.0.0.0.
        let r = parse_request(
            br#" {"execute": "add_hostfwd", "arguments":{"proto": "tcp","host_port":8080,"guest_port":80}} "#,
        )
        .unwrap();
        assert_eq!(r.host_addr_or_default(), Some(DEFAULT_HOST_ADDR));
        assert!(matches!(
            r,
            Request::AddHostfwd {
                host_addr: None,
                guest_addr: None,
                ..
            }
        ));
        assert_eq!(
            parse_request(b"{\"execute\":\"remove_hostfwd\",\"arguments\":{\"id\":2}}\n").unwrap(),
            Request::RemoveHostfwd { id: 2 }
        );
        assert_eq!(
            parse_request(b"{\"execute\":\"list_hostfwd\"}\r\n\t ").unwrap(),
            Request::ListHostfwd
        );
        // Everything after a NUL is ignored, as by slirp4netns's strlen.
        assert_eq!(
            parse_request(b"{\"execute\":\"list_hostfwd\"}\0garbage").unwrap(),
            Request::ListHostfwd
        );
        assert_eq!(
            parse_request(br#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"::1","host_port":1,"guest_port":2}}"#)
                .unwrap()
                .host_addr_or_default(),
            Some("::1".parse().unwrap())
        );
    }

    #[test]
    fn errors_word_for_word() {
        assert_eq!(desc("badjson"), "bad request: cannot parse JSON");
        assert_eq!(desc(""), "bad request: cannot parse JSON");
        assert_eq!(desc("{} x"), "bad request: cannot parse JSON");
        assert_eq!(desc("[1]"), "bad request: json_object() failed");
        assert_eq!(
            desc(r#"{"unexpectedjson": 42}"#),
            "bad request: no execute found"
        );
        assert_eq!(desc(r#"{"execute": 42}"#), "bad request: no execute found");
        assert_eq!(
            desc(r#"{"execute": "bad"}"#),
            "bad request: unknown execute"
        );
        assert_eq!(
            desc(r#"{"execute": "add_hostfwd", "arguments":{"proto": "bad"}}"#),
            "bad request: add_hostfwd: bad arguments.proto"
        );
        assert_eq!(
            desc(r#"{"execute": "add_hostfwd"}"#),
            "bad request: add_hostfwd: bad arguments.proto"
        );
        let add = |args: &str| {
            desc(&format!(
                r#"{{"execute":"add_hostfwd","arguments":{{"proto":"tcp",{args}}}}}"#
            ))
        };
        assert_eq!(
            add(r#""host_addr":"1.2.3""#),
            "bad request: add_hostfwd: bad arguments.host_addr"
        );
        assert_eq!(
            add(r#""host_port":0"#),
            "bad request: add_hostfwd: bad arguments.host_port"
        );
        assert_eq!(
            add(r#""host_port":65536"#),
            "bad request: add_hostfwd: bad arguments.host_port"
        );
        assert_eq!(
            add(r#""host_port":"80""#),
            "bad request: add_hostfwd: bad arguments.host_port"
        );
        assert_eq!(
            add(r#""host_port":-1"#),
            "bad request: add_hostfwd: bad arguments.host_port"
        );
        assert_eq!(
            add(r#""host_port":80.5"#),
            "bad request: add_hostfwd: bad arguments.host_port"
        );
        assert_eq!(
            add(r#""host_port":80,"guest_addr":"x""#),
            "bad request: add_hostfwd: bad arguments.guest_addr"
        );
        assert_eq!(
            add(r#""host_port":80"#),
            "bad request: add_hostfwd: bad arguments.guest_port"
        );
        assert!(parse_request(br#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":80.0,"guest_port":1}}"#).is_ok());
        assert_eq!(
            desc(r#"{"execute":"remove_hostfwd","arguments":{"id":"2"}}"#),
            "bad request: remove_hostfwd: bad arguments.id"
        );
        assert_eq!(
            desc(r#"{"execute":"remove_hostfwd"}"#),
            "bad request: remove_hostfwd: bad arguments.id"
        );
        let big = vec![b' '; MAX_REQUEST + 1];
        let e = parse_request(&big).unwrap_err();
        assert_eq!(e.desc(), "bad request: too large message");
        assert!(e.to_string().contains("4096"));
        // Display names the value; desc does not.
        let e = parse_request(br#"{"execute":"add_hostfwd","arguments":{"proto":"sctp"}}"#)
            .unwrap_err();
        assert_eq!(
            e,
            ApiError::BadArgument {
                execute: "add_hostfwd",
                field: "proto",
                value: "\"sctp\"".into()
            }
        );
        assert!(e.to_string().contains("sctp"));
    }

    #[test]
    fn replies_byte_exact() {
        assert_eq!(Reply::Id(1).to_json(), r#"{"return":{"id":1}}"#);
        assert_eq!(Reply::Ok.to_json(), r#"{"return":{}}"#);
        assert_eq!(Reply::Entries(vec![]).to_json(), r#"{"entries":[]}"#);
        let e = Entry {
            id: 1,
            proto: Proto::Tcp,
            host_addr: "127.0.0.1".parse().unwrap(),
            host_port: 18095,
            guest_addr: "10.0.2.100".parse().unwrap(),
            guest_port: 8080,
            real_source: None,
        };
        let e2 = Entry {
            id: 2,
            proto: Proto::Udp,
            ..e
        };
        assert_eq!(
            Reply::Entries(vec![e, e2]).to_json(),
            r#"{"entries":[{"id":1,"proto":"tcp","host_addr":"127.0.0.1","host_port":18095,"guest_addr":"10.0.2.100","guest_port":8080},{"id":2,"proto":"udp","host_addr":"127.0.0.1","host_port":18095,"guest_addr":"10.0.2.100","guest_port":8080}]}"#
        );
        assert_eq!(
            parse_request(b"x").unwrap_err().reply().to_json(),
            r#"{"error":{"desc":"bad request: cannot parse JSON"}}"#
        );
        assert_eq!(
            Reply::Error("bad request: add_hostfwd: slirp_add_hostfwd failed".into()).to_json(),
            r#"{"error":{"desc":"bad request: add_hostfwd: slirp_add_hostfwd failed"}}"#
        );
        assert_eq!(
            Reply::Error("a\"b\n".into()).to_json(),
            r#"{"error":{"desc":"a\"b\n"}}"#
        );
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
            match parse_request(&bytes) {
                Ok(_) => {}
                Err(e) => {
                    let reply = e.reply().to_json();
                    let v: Value = serde_json::from_str(&reply).unwrap();
                    prop_assert!(v["error"]["desc"].as_str().unwrap().starts_with("bad request: "));
                }
            }
        }

        #[test]
        fn add_hostfwd_round_trips_through_json(
            udp in any::<bool>(), hp in 1u16.., gp in 1u16.., h in any::<[u8; 4]>(), g in any::<Option<[u8; 4]>>(),
        ) {
            let proto = if udp { Proto::Udp } else { Proto::Tcp };
            let host = IpAddr::from(h);
            let guest = g.map(IpAddr::from);
            let req = serde_json::json!({
                "execute": "add_hostfwd",
                "arguments": {
                    "proto": proto.as_str(), "host_addr": host.to_string(), "host_port": hp,
                    "guest_addr": guest.map(|a| a.to_string()).unwrap_or_default(), "guest_port": gp,
                }
            });
            let text = format!("{req}\n");
            let want = Request::AddHostfwd { proto, host_addr: Some(host), host_port: hp, guest_addr: guest, guest_port: gp, real_source: None };
            prop_assert_eq!(parse_request(text.as_bytes()).unwrap(), want.clone());
            prop_assert_eq!(parse_request(want.to_json().as_bytes()).unwrap(), want);
        }
    }
}
