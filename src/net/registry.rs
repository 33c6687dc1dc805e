//! Picking a back end by its name, as bhyve's `netbe_init` does: the
//! name's prefix selects the kind, and the rest of the name, after commas,
//! is the back end's options (`slirp,hostfwd=...,open`). A back end that
//! takes no options refuses any.

use super::backend::{NetBackend, RxCallback};
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
use super::helper::SlirpHelperBackend;
use super::options::split_options;
#[cfg(feature = "slirp")]
use super::slirp::SlirpBackend;
use super::tap::TapBackend;
use super::Error;
use crate::reactor::Reactor;

/// The back ends [`open`] knows, by the prefix of their names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// A tap device: `/dev/net/tun` on Linux, `/dev/tapN` on FreeBSD.
    Tap,
    /// A FreeBSD vmnet device (`/dev/vmnetN`), a tap that stays up.
    Vmnet,
    /// User-mode networking with libslirp in a sandboxed helper process
    /// (`caploop-sandbox -S`), the hypervisor's half of bhyve's helper.
    SlirpHelper,
    /// User-mode networking with libslirp, on the reactor, in process
    /// (feature `slirp`; without it [`open`] refuses the name as
    /// unsupported).
    Slirp,
    /// A NIC in netmap mode, `netmap:IFNAME`.
    Netmap,
    /// A port of a VALE software switch, `valeX:Y` (netmap).
    Vale,
}

impl BackendKind {
    /// Every kind, in the order names are matched.
    pub const ALL: [BackendKind; 6] = [
        BackendKind::Tap,
        BackendKind::Vmnet,
        BackendKind::SlirpHelper,
        BackendKind::Slirp,
        BackendKind::Netmap,
        BackendKind::Vale,
    ];

    /// The name prefix that selects this kind.
    pub const fn prefix(self) -> &'static str {
        match self {
            BackendKind::Tap => "tap",
            BackendKind::Vmnet => "vmnet",
            BackendKind::SlirpHelper => "slirp-helper",
            BackendKind::Slirp => "slirp",
            BackendKind::Netmap => "netmap",
            BackendKind::Vale => "vale",
        }
    }

    /// The first kind whose prefix starts `name`, as bhyve's `netbe_init`
    /// matches (`slirp-helper` before `slirp`).
    pub fn from_name(name: &str) -> Result<BackendKind, Error> {
        BackendKind::ALL
            .into_iter()
            .find(|k| name.starts_with(k.prefix()))
            .ok_or_else(|| Error::UnknownBackend {
                name: name.to_owned(),
                known: BackendKind::ALL
                    .iter()
                    .map(|k| k.prefix())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// Opens the back end `name` selects by its prefix (bhyve's `netbe_init`)
/// and registers it on `reactor`, receive disabled, with `cb` as its receive
/// callback.
pub fn open<D: 'static>(
    name: &str,
    reactor: &mut Reactor<D>,
    cb: impl FnMut(&mut Reactor<D>, &mut D) + 'static,
) -> Result<Box<dyn NetBackend<D>>, Error> {
    let cb: RxCallback<D> = Box::new(cb);
    match BackendKind::from_name(name)? {
        BackendKind::Tap => {
            no_options(name, "the tap back end takes none")?;
            Ok(Box::new(TapBackend::open(name, reactor, cb)?))
        }
        BackendKind::Vmnet if cfg!(target_os = "freebsd") => {
            no_options(name, "the vmnet back end takes none")?;
            Ok(Box::new(TapBackend::open(name, reactor, cb)?))
        }
        BackendKind::Vmnet => Err(Error::Unsupported {
            name: name.to_owned(),
            reason: "vmnet devices exist only on FreeBSD",
        }),
        #[cfg(any(target_os = "linux", target_os = "freebsd"))]
        BackendKind::SlirpHelper => Ok(Box::new(SlirpHelperBackend::open(name, reactor, cb)?)),
        #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
        BackendKind::SlirpHelper => Err(Error::Unsupported {
            name: name.to_owned(),
            reason: "the slirp helper runs on Linux and FreeBSD only",
        }),
        #[cfg(feature = "slirp")]
        BackendKind::Slirp => Ok(Box::new(SlirpBackend::open(name, reactor, cb)?)),
        #[cfg(not(feature = "slirp"))]
        BackendKind::Slirp => Err(Error::Unsupported {
            name: name.to_owned(),
            reason: "caploop was built without the `slirp` feature",
        }),
        BackendKind::Netmap | BackendKind::Vale => {
            no_options(name, "the netmap back end takes none")?;
            super::netmap::open_boxed(name, reactor, cb)
        }
    }
}

/// Refuses the first option of `name`, if it has any.
fn no_options(name: &str, reason: &str) -> Result<(), Error> {
    match split_options(name).1.first() {
        None => Ok(()),
        Some((key, value)) => Err(Error::BadOption {
            backend: name.to_owned(),
            option: if value.is_empty() {
                (*key).to_owned()
            } else {
                format!("{key}={value}")
            },
            reason: reason.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_pick_backends_by_prefix() {
        assert_eq!(BackendKind::from_name("tap0").unwrap(), BackendKind::Tap);
        assert_eq!(BackendKind::from_name("tap").unwrap(), BackendKind::Tap);
        assert_eq!(
            BackendKind::from_name("vmnet3").unwrap(),
            BackendKind::Vmnet
        );
        assert_eq!(BackendKind::from_name("slirp").unwrap(), BackendKind::Slirp);
        assert_eq!(
            BackendKind::from_name("slirp-helper,helper=/x").unwrap(),
            BackendKind::SlirpHelper
        );
        assert_eq!(
            BackendKind::from_name("slirp,hostfwd=tcp::2222-:22").unwrap(),
            BackendKind::Slirp
        );
        assert_eq!(
            BackendKind::from_name("netmap:em0").unwrap(),
            BackendKind::Netmap
        );
        assert_eq!(
            BackendKind::from_name("vale0:1").unwrap(),
            BackendKind::Vale
        );
        for bad in ["", "eth0", "TAP0", " tap0"] {
            let e = BackendKind::from_name(bad).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
            assert!(
                msg.contains("tap, vmnet, slirp-helper, slirp, netmap, vale"),
                "{msg}"
            );
        }
    }

    #[test]
    fn open_refuses_what_it_cannot_build() {
        let mut r: Reactor<()> = Reactor::new().unwrap();
        let e = open("foo0", &mut r, |_, _| {}).err().unwrap();
        assert!(matches!(e, Error::UnknownBackend { .. }), "{e}");
        #[cfg(feature = "slirp")]
        {
            let be = open("slirp", &mut r, |_, _| {}).unwrap();
            assert_eq!(be.name(), "slirp");
            be.close(&mut r).unwrap();
        }
        #[cfg(not(feature = "slirp"))]
        {
            let e = open("slirp", &mut r, |_, _| {}).err().unwrap();
            assert!(e.to_string().contains("`slirp` feature"), "{e}");
        }
        let e = open("slirp,open=maybe", &mut r, |_, _| {}).err().unwrap();
        assert!(e.to_string().contains("slirp"), "{e}");
        #[cfg(not(target_os = "freebsd"))]
        {
            let e = open("vmnet0", &mut r, |_, _| {}).err().unwrap();
            assert!(e.to_string().contains("only on FreeBSD"), "{e}");
        }
        // Options a back end does not take are refused, naming them.
        for (name, option) in [
            ("tap0,mtu=9000", "mtu=9000"),
            ("netmap:em0,x", "x"),
            #[cfg(feature = "slirp")]
            ("slirp,mtu=9000", "mtu"),
        ] {
            let e = open(name, &mut r, |_, _| {}).err().unwrap();
            assert!(
                matches!(&e, Error::BadOption { option: o, .. } if o == option)
                    || e.to_string().contains(option),
                "{name}: {e}"
            );
        }
        let e = open("tap/../x", &mut r, |_, _| {}).err().unwrap();
        assert!(matches!(e, Error::BadName { .. }), "{e}");
        let e = open("tap0123456789abcdef", &mut r, |_, _| {})
            .err()
            .unwrap();
        assert!(matches!(e, Error::BadName { .. }), "{e}");
        assert!(r.is_empty());
    }
}
