//! Round trips, libnv's own bytes, and every malformed input named.

use std::collections::HashSet;

use super::*;
use proptest::prelude::*;

/// Builds records by hand, independently of `Writer`.
struct Raw {
    b: Vec<u8>,
    big: bool,
}

impl Raw {
    fn new(big: bool) -> Raw {
        Raw { b: Vec::new(), big }
    }
    fn u16(&mut self, v: u16) -> &mut Raw {
        let x = if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.b.extend_from_slice(&x);
        self
    }
    fn u64(&mut self, v: u64) -> &mut Raw {
        let x = if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.b.extend_from_slice(&x);
        self
    }
    /// An nvlist header whose size is patched by `finish`.
    fn header(&mut self, flags: u8) -> &mut Raw {
        let f = flags | if self.big { FLAG_BIG_ENDIAN } else { 0 };
        self.b.extend_from_slice(&[MAGIC, VERSION, f]);
        self.u64(0).u64(u64::MAX)
    }
    fn pair(&mut self, t: u8, name: &str, datasize: u64, nitems: u64) -> &mut Raw {
        self.b.push(t);
        self.u16(name.len() as u16 + 1).u64(datasize).u64(nitems);
        self.b.extend_from_slice(name.as_bytes());
        self.b.push(0);
        self
    }
    fn string(&mut self, name: &str, value: &str) -> &mut Raw {
        self.pair(ty::STRING, name, value.len() as u64 + 1, 0);
        self.b.extend_from_slice(value.as_bytes());
        self.b.push(0);
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Raw {
        self.b.extend_from_slice(b);
        self
    }
    /// Patches every header whose size is `u64::MAX` with what follows
    /// it.
    fn finish(&mut self) -> Vec<u8> {
        let total = self.b.len();
        let mut i = 0;
        while i + HEADER_SIZE <= total {
            if self.b[i] == MAGIC && self.b[i + 1] == 0 && self.b[i + 11..i + 19] == [0xff; 8] {
                let size = (total - i - HEADER_SIZE) as u64;
                let x = if self.big {
                    size.to_be_bytes()
                } else {
                    size.to_le_bytes()
                };
                self.b[i + 11..i + 19].copy_from_slice(&x);
            }
            i += 1;
        }
        self.b.clone()
    }
}

/// What bhyve sends for `-s 2,virtio-net,slirp,hostfwd=...,open` with
/// `-o name=vm0`: the device node, values as strings, `vmname` last.
fn bhyve_record() -> Vec<u8> {
    let mut r = Vec::new();
    // nvlist header: magic, version, flags 0, 0 descriptors, size.
    r.extend_from_slice(&[0x6c, 0x00, 0x00]);
    r.extend_from_slice(&0u64.to_le_bytes());
    let size_at = r.len();
    r.extend_from_slice(&0u64.to_le_bytes());
    let pairs: [(&str, &str); 5] = [
        ("device", "virtio-net"),
        ("backend", "slirp"),
        ("hostfwd", "tcp:127.0.0.1:2222-:22;udp::5353-:53"),
        ("open", "true"),
        ("vmname", "vm0"),
    ];
    for (name, value) in pairs {
        r.push(4); // NV_TYPE_STRING
        r.extend_from_slice(&(name.len() as u16 + 1).to_le_bytes());
        r.extend_from_slice(&(value.len() as u64 + 1).to_le_bytes());
        r.extend_from_slice(&0u64.to_le_bytes());
        r.extend_from_slice(name.as_bytes());
        r.push(0);
        r.extend_from_slice(value.as_bytes());
        r.push(0);
    }
    let size = (r.len() - HEADER_SIZE) as u64;
    r[size_at..size_at + 8].copy_from_slice(&size.to_le_bytes());
    r
}

#[test]
fn bhyve_record_byte_exact() {
    let rec = bhyve_record();
    // The first pair, byte by byte: type 4, namesize 7, datasize 11,
    // nitems 0, "device\0", "virtio-net\0".
    assert_eq!(
        &rec[19..19 + 19 + 7 + 11],
        b"\x04\x07\x00\x0b\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00device\0virtio-net\0"
    );
    let cfg = HelperConfig::from_packed(&rec).unwrap();
    assert_eq!(
        cfg,
        HelperConfig {
            hostfwd: Some("tcp:127.0.0.1:2222-:22;udp::5353-:53".into()),
            open: true,
            vmname: Some("vm0".into()),
            tcp: None,
            ack: false,
            ignored: vec!["device".into(), "backend".into()],
        }
    );
    // Our encoder writes the same bytes.
    let list = NvList::unpack(&rec).unwrap();
    assert_eq!(list.pack(Endian::Little).unwrap(), rec);
    assert_eq!(list.get("backend"), Some(&Value::String("slirp".into())));
}

#[test]
fn big_endian_record() {
    let rec = Raw::new(true)
        .header(0)
        .string("hostfwd", "tcp::8080-:80")
        .pair(ty::BOOL, "open", 1, 0)
        .bytes(&[1])
        .pair(ty::NUMBER, "n", 8, 0)
        .bytes(&0x0102_0304_0506_0708u64.to_be_bytes())
        .finish();
    assert_eq!(rec[2], FLAG_BIG_ENDIAN);
    let list = NvList::unpack(&rec).unwrap();
    assert_eq!(list.get("n"), Some(&Value::Number(0x0102_0304_0506_0708)));
    assert_eq!(list.pack(Endian::Big).unwrap(), rec);
    let cfg = HelperConfig::from_nvlist(&list).unwrap();
    assert!(cfg.open);
    assert_eq!(cfg.hostfwd.as_deref(), Some("tcp::8080-:80"));
    assert_eq!(cfg.ignored, vec!["n".to_string()]);
}

#[test]
fn nested_lists_and_arrays() {
    let rec = Raw::new(false)
        .header(0)
        .pair(ty::NVLIST, "sub", 1, 0)
        .header(0)
        .string("a", "b")
        .pair(ty::NVLIST_UP, "", 0, 0)
        .pair(ty::NVLIST_ARRAY, "arr", 0, 2)
        .header(0)
        .pair(ty::NVLIST_ARRAY_NEXT, "", 0, 0)
        .header(0)
        .pair(ty::NULL, "x", 0, 0)
        .pair(ty::NVLIST_ARRAY_NEXT, "", 0, 0)
        .pair(ty::STRING_ARRAY, "s", 4, 2)
        .bytes(b"a\0b\0")
        .finish();
    let list = NvList::unpack(&rec).unwrap();
    assert_eq!(
        list,
        NvList::new()
            .with(
                "sub",
                Value::NvList(NvList::new().with("a", Value::String("b".into())))
            )
            .with(
                "arr",
                Value::NvListArray(vec![NvList::new(), NvList::new().with("x", Value::Null)])
            )
            .with("s", Value::StringArray(vec!["a".into(), "b".into()]))
    );
}

fn err(rec: &[u8]) -> NvError {
    NvList::unpack(rec).unwrap_err()
}

#[test]
fn malformed_headers() {
    let good = bhyve_record();
    let mut bad = good.clone();
    bad[0] = 0x6d;
    assert_eq!(
        err(&bad),
        NvError::BadMagic {
            offset: 0,
            magic: 0x6d
        }
    );
    assert!(err(&bad).to_string().contains("0x6d"));
    assert!(matches!(
        err(&good[..10]),
        NvError::Truncated {
            offset: 0,
            what: "nvlist header",
            need: 19,
            have: 10
        }
    ));
    assert!(matches!(err(&[]), NvError::Truncated { have: 0, .. }));
    let mut bad = good.clone();
    bad[1] = 1;
    assert_eq!(
        err(&bad),
        NvError::BadVersion {
            offset: 0,
            version: 1
        }
    );
    let mut bad = good.clone();
    bad[2] = 0x10;
    assert_eq!(
        err(&bad),
        NvError::BadFlags {
            offset: 0,
            flags: 0x10
        }
    );
    let mut bad = good.clone();
    bad[3] = 1;
    assert_eq!(
        err(&bad),
        NvError::Descriptors {
            offset: 0,
            count: 1
        }
    );
    // A record cut short: the header's size no longer matches.
    assert!(matches!(
        err(&good[..good.len() - 1]),
        NvError::SizeMismatch { offset: 0, .. }
    ));
}

#[test]
fn malformed_pairs() {
    let base = || {
        let mut r = Raw::new(false);
        r.header(0);
        r
    };
    // namesize 0.
    let rec = base().bytes(&[ty::STRING, 0, 0]).u64(0).u64(0).finish();
    assert_eq!(
        err(&rec),
        NvError::BadNameSize {
            offset: 19,
            namesize: 0
        }
    );
    // namesize above NV_NAME_MAX.
    let rec = base().bytes(&[ty::NULL]).u16(2049).u64(0).u64(0).finish();
    assert!(matches!(
        err(&rec),
        NvError::BadNameSize { namesize: 2049, .. }
    ));
    // Name not NUL-terminated.
    let rec = base()
        .bytes(&[ty::NULL])
        .u16(3)
        .u64(0)
        .u64(0)
        .bytes(b"abc")
        .finish();
    assert_eq!(
        err(&rec),
        NvError::NameNotTerminated {
            offset: 19,
            namesize: 3
        }
    );
    // A NUL inside the name.
    let rec = base()
        .bytes(&[ty::NULL])
        .u16(3)
        .u64(0)
        .u64(0)
        .bytes(b"a\0\0")
        .finish();
    assert!(matches!(err(&rec), NvError::NameNotTerminated { .. }));
    // Name longer than the input.
    let rec = base()
        .bytes(&[ty::NULL])
        .u16(100)
        .u64(0)
        .u64(0)
        .bytes(b"ab\0")
        .finish();
    assert!(matches!(
        err(&rec),
        NvError::Truncated {
            what: "nvpair name",
            need: 100,
            have: 3,
            ..
        }
    ));
    // Data size beyond the input.
    let rec = base()
        .pair(ty::STRING, "hostfwd", 1000, 0)
        .bytes(b"x\0")
        .finish();
    let e = err(&rec);
    assert_eq!(
        e,
        NvError::DataBeyondInput {
            offset: 19,
            name: "hostfwd".into(),
            datasize: 1000,
            remaining: 2
        }
    );
    assert!(e.to_string().contains("hostfwd") && e.to_string().contains("1000"));
    let rec = base().pair(ty::BINARY, "b", u64::MAX, 0).finish();
    assert!(matches!(
        err(&rec),
        NvError::DataBeyondInput {
            datasize: u64::MAX,
            ..
        }
    ));
    // Absurd nitems on arrays (checked before allocating) and scalars.
    let rec = base().pair(ty::NVLIST_ARRAY, "a", 0, u64::MAX).finish();
    assert!(matches!(
        err(&rec),
        NvError::BadItemCount {
            nitems: u64::MAX,
            ty: "NVLIST ARRAY",
            ..
        }
    ));
    let rec = base()
        .pair(ty::NVLIST_ARRAY, "a", 0, 1 << 40)
        .bytes(&[0; 64])
        .finish();
    assert!(matches!(err(&rec), NvError::BadItemCount { .. }));
    let rec = base()
        .pair(ty::NUMBER_ARRAY, "a", 8, u64::MAX / 4)
        .bytes(&[0; 8])
        .finish();
    assert!(matches!(err(&rec), NvError::BadItemCount { .. }));
    let rec = base()
        .pair(ty::STRING_ARRAY, "a", 2, u64::MAX)
        .bytes(b"a\0")
        .finish();
    assert!(matches!(err(&rec), NvError::BadItemCount { .. }));
    let rec = base()
        .pair(ty::STRING_ARRAY, "a", 4, 1)
        .bytes(b"a\0b\0")
        .finish();
    assert!(matches!(err(&rec), NvError::BadItemCount { nitems: 1, .. }));
    let rec = base().pair(ty::NULL, "n", 0, 7).finish();
    assert!(matches!(err(&rec), NvError::BadItemCount { nitems: 7, .. }));
    // Wrong sizes and values for the type.
    let rec = base().pair(ty::NUMBER, "n", 4, 0).bytes(&[0; 4]).finish();
    assert!(matches!(
        err(&rec),
        NvError::BadDataSize {
            datasize: 4,
            ty: "NUMBER",
            ..
        }
    ));
    let rec = base().pair(ty::BOOL, "open", 1, 0).bytes(&[2]).finish();
    assert!(matches!(err(&rec), NvError::BadBool { value: 2, .. }));
    let rec = base().pair(ty::STRING, "s", 3, 0).bytes(b"abc").finish();
    assert!(matches!(err(&rec), NvError::StringNotTerminated { .. }));
    let rec = base().pair(ty::STRING, "s", 0, 0).finish();
    assert!(matches!(err(&rec), NvError::BadDataSize { .. }));
    // Unknown type, descriptor, stray markers, duplicates.
    let rec = base().pair(13, "x", 0, 0).finish();
    assert_eq!(err(&rec), NvError::UnknownType { offset: 19, ty: 13 });
    let rec = base()
        .pair(ty::DESCRIPTOR, "fd", 8, 0)
        .bytes(&[0; 8])
        .finish();
    assert!(matches!(err(&rec), NvError::Descriptor { .. }));
    let rec = base().pair(ty::NVLIST_UP, "", 0, 0).finish();
    assert!(matches!(
        err(&rec),
        NvError::UnexpectedMarker {
            marker: "NVLIST_UP",
            ..
        }
    ));
    let rec = base()
        .string("open", "true")
        .string("open", "false")
        .finish();
    assert!(matches!(err(&rec), NvError::DuplicateName { .. }));
    // A nested list without its closing marker.
    let rec = base().pair(ty::NVLIST, "sub", 19, 0).header(0).finish();
    assert!(matches!(
        err(&rec),
        NvError::Unterminated {
            opened: 42,
            marker: "NVLIST_UP",
            ..
        }
    ));
    // Non-UTF-8 name.
    let rec = base()
        .bytes(&[ty::NULL])
        .u16(2)
        .u64(0)
        .u64(0)
        .bytes(b"\xff\0")
        .finish();
    assert!(matches!(err(&rec), NvError::InvalidUtf8 { .. }));
}

#[test]
fn depth_is_capped() {
    let mut l = NvList::new().with("leaf", Value::Null);
    for _ in 0..MAX_DEPTH {
        l = NvList::new().with("n", Value::NvList(l));
    }
    // MAX_DEPTH levels below the root are fine, one more is not.
    assert!(NvList::unpack(&l.pack(Endian::Little).unwrap()).is_ok());
    {
        l = NvList::new().with("n", Value::NvList(l));
    }
    assert!(matches!(
        l.pack(Endian::Little),
        Err(PackError::TooDeep { .. })
    ));
    // Hand-built: MAX_DEPTH + 1 nested headers.
    let mut r = Raw::new(false);
    r.header(0);
    for _ in 0..=MAX_DEPTH {
        r.pair(ty::NVLIST, "n", 1, 0).header(0);
    }
    for _ in 0..=MAX_DEPTH {
        r.pair(ty::NVLIST_UP, "", 0, 0);
    }
    assert!(matches!(
        err(&r.finish()),
        NvError::TooDeep { max: MAX_DEPTH, .. }
    ));
}

#[test]
fn helper_config_values() {
    let cfg = |l: NvList| HelperConfig::from_nvlist(&l);
    let s = |v: &str| Value::String(v.into());
    for (v, want) in [
        ("true", true),
        ("On", true),
        ("1", true),
        ("NO", false),
        ("0", false),
    ] {
        assert_eq!(cfg(NvList::new().with("open", s(v))).unwrap().open, want);
    }
    assert!(
        cfg(NvList::new().with("open", Value::Bool(true)))
            .unwrap()
            .open
    );
    assert!(!cfg(NvList::new()).unwrap().open);
    let e = cfg(NvList::new().with("open", s("maybe"))).unwrap_err();
    assert!(
        matches!(&e, ConfigError::BadValue { key, value, .. } if key == "open" && value == "\"maybe\"")
    );
    assert!(e.to_string().contains("open") && e.to_string().contains("maybe"));
    let e = cfg(NvList::new().with("hostfwd", Value::Number(5))).unwrap_err();
    assert!(e.to_string().contains("hostfwd") && e.to_string().contains("NUMBER 5"));
    let e = cfg(NvList::new().with("open", Value::Number(1))).unwrap_err();
    assert!(matches!(e, ConfigError::BadValue { .. }));
    let dup = NvList::with_flags(FLAG_NO_UNIQUE)
        .with("vmname", s("a"))
        .with("vmname", s("b"));
    assert!(matches!(cfg(dup), Err(ConfigError::Duplicate { .. })));
    // The record bhyve would send round-trips through the typed view.
    let c = HelperConfig {
        hostfwd: Some("tcp::1-:2".into()),
        open: false,
        vmname: Some("vm".into()),
        tcp: Some("slirp".into()),
        ack: false,
        ignored: vec![],
    };
    let rec = c.to_nvlist().pack(Endian::Little).unwrap();
    assert_eq!(HelperConfig::from_packed(&rec).unwrap(), c);
    // Ours: `tcp` is "own" or "slirp", named when it is neither.
    let e = cfg(NvList::new().with("tcp", s("fast")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"tcp\"") && e.contains("fast"), "{e}");
    assert!(matches!(
        HelperConfig::from_packed(&rec[..5]),
        Err(ConfigError::NvList(NvError::Truncated { .. }))
    ));
}

#[test]
fn pack_refuses_what_libnv_cannot_represent() {
    let p = |l: NvList| l.pack(Endian::Little).unwrap_err();
    assert!(matches!(
        p(NvList::new().with("a\0b", Value::Null)),
        PackError::NulInName { .. }
    ));
    assert!(matches!(
        p(NvList::new().with("x".repeat(2048), Value::Null)),
        PackError::NameTooLong { .. }
    ));
    assert!(matches!(
        p(NvList::new().with("s", Value::String("a\0".into()))),
        PackError::NulInString { .. }
    ));
    assert!(matches!(
        p(NvList::new().with("b", Value::Binary(vec![]))),
        PackError::Empty { .. }
    ));
    assert!(matches!(
        p(NvList::new().with("a", Value::NumberArray(vec![]))),
        PackError::Empty { .. }
    ));
    assert!(matches!(
        p(NvList::new().with("a", Value::Null).with("a", Value::Null)),
        PackError::DuplicateName { .. }
    ));
    assert!(matches!(
        p(NvList::with_flags(FLAG_IGNORE_CASE)
            .with("a", Value::Null)
            .with("A", Value::Null)),
        PackError::DuplicateName { .. }
    ));
    // With NV_FLAG_NO_UNIQUE duplicates are fine both ways.
    let l = NvList::with_flags(FLAG_NO_UNIQUE)
        .with("a", Value::Null)
        .with("a", Value::Null);
    assert_eq!(NvList::unpack(&l.pack(Endian::Big).unwrap()).unwrap(), l);
}

fn arb_name() -> impl Strategy<Value = String> {
    "[a-z]{0,6}"
}

fn arb_string() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,12}"
}

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u64>().prop_map(Value::Number),
        arb_string().prop_map(Value::String),
        prop::collection::vec(any::<u8>(), 1..20).prop_map(Value::Binary),
        prop::collection::vec(any::<bool>(), 1..5).prop_map(Value::BoolArray),
        prop::collection::vec(any::<u64>(), 1..5).prop_map(Value::NumberArray),
        prop::collection::vec(arb_string(), 1..5).prop_map(Value::StringArray),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        let list = (
            prop_oneof![Just(0u8), Just(FLAG_NO_UNIQUE), Just(FLAG_IGNORE_CASE)],
            prop::collection::vec((arb_name(), inner), 0..4),
        )
            .prop_map(|(flags, pairs)| unique(flags, pairs))
            .boxed();
        prop_oneof![
            list.clone().prop_map(Value::NvList),
            prop::collection::vec(list, 1..3).prop_map(Value::NvListArray),
        ]
    })
}

/// A list whose names satisfy its flags.
fn unique(flags: u8, pairs: Vec<(String, Value)>) -> NvList {
    let mut l = NvList::with_flags(flags);
    let mut seen = HashSet::new();
    for (n, v) in pairs {
        if flags & FLAG_NO_UNIQUE != 0 || seen.insert(NvList::name_key(flags, &n)) {
            l.push(n, v);
        }
    }
    l
}

fn arb_list() -> impl Strategy<Value = NvList> {
    (
        prop_oneof![Just(0u8), Just(FLAG_NO_UNIQUE)],
        prop::collection::vec((arb_name(), arb_value()), 0..8),
    )
        .prop_map(|(f, p)| unique(f, p))
}

proptest! {
    #[test]
    fn pack_unpack_round_trip(list in arb_list(), big in any::<bool>()) {
        let endian = if big { Endian::Big } else { Endian::Little };
        let rec = list.pack(endian).unwrap();
        let back = NvList::unpack(&rec).unwrap();
        prop_assert_eq!(&back, &list);
        prop_assert_eq!(back.pack(endian).unwrap(), rec);
    }

    #[test]
    fn every_prefix_and_corruption_is_an_error_not_a_panic(
        list in arb_list(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let rec = list.pack(Endian::Little).unwrap();
        // Every strict prefix is refused (the header's size no longer
        // matches), never decoded as something else.
        for n in 0..rec.len() {
            prop_assert!(NvList::unpack(&rec[..n]).is_err());
        }
        let mut bad = rec.clone();
        let i = at.index(bad.len());
        bad[i] = byte;
        if let Ok(l) = NvList::unpack(&bad) {
            // Whatever decodes re-encodes and decodes to itself.
            let again = l.pack(Endian::Little).unwrap();
            prop_assert_eq!(NvList::unpack(&again).unwrap(), l);
        }
    }
}

#[test]
fn the_acknowledgement_is_asked_for_by_its_own_key_and_never_a_frame() {
    use super::{ack_record, parse_ack, ACK_KEY};
    let asked = NvList::new()
        .with("hostfwd", Value::String("tcp::1-:2".into()))
        .with(ACK_KEY, Value::String("1".into()));
    let c = HelperConfig::from_nvlist(&asked).unwrap();
    assert!(c.ack && c.ignored.is_empty());
    let plain = NvList::new().with("open", Value::String("true".into()));
    assert!(!HelperConfig::from_nvlist(&plain).unwrap().ack);
    assert_eq!(parse_ack(&ack_record(Ok(()))), Some(Ok(())));
    assert_eq!(
        parse_ack(&ack_record(Err("--hostfwd: port 22 busy"))),
        Some(Err("--hostfwd: port 22 busy".into()))
    );
    // A frame (any starting with a MAC address) is never one.
    let mut arp = vec![0xffu8; 6];
    arp.extend_from_slice(&[0x52, 0x55, 10, 0, 2, 2, 0x08, 0x06]);
    arp.resize(60, 0);
    assert_eq!(parse_ack(&arp), None);
    assert_eq!(parse_ack(&[]), None);
}
