//! `/dev/netmap`: open, register a port (`NIOCCTRL` with
//! `NETMAP_REQ_REGISTER`), map the shared region, sync the rings
//! (`NIOCTXSYNC`, `NIOCRXSYNC`) and set the virtio-net header length
//! (`NETMAP_REQ_PORT_HDR_SET`). Written from the netmap headers and
//! netmap(4); never run against a netmap kernel here.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::ptr::NonNull;

use nix::fcntl::{open as nix_open, OFlag};
use nix::sys::stat::Mode;

use super::abi::{
    IoctlRequest, NmreqHeader, NmreqPortHdr, NmreqRegister, NETMAP_API, NETMAP_REQ_PORT_HDR_SET,
    NETMAP_REQ_REGISTER, NIOCCTRL, NIOCRXSYNC, NIOCTXSYNC, NR_NO_TX_POLL, NR_REG_ALL_NIC,
};
use super::ring::{Kernel, Region};
use super::{NetmapDevice, PortName, DEVICE};
use crate::net::Error;

/// A netmap control device bound to one port, with its shared region
/// mapped.
#[derive(Debug)]
pub(super) struct NetmapFd {
    map: NonNull<u8>,
    len: usize,
    nifp: usize,
    port: String,
    /// Closed through `closing` (a sandbox in force retires the number).
    fd: crate::closing::ClosingFd,
}

impl NetmapFd {
    /// Opens `/dev/netmap`, binds `port` (all NIC rings, no TX on poll, as
    /// bhyve's `nm_open(..., NETMAP_NO_TX_POLL)`), and maps its memory.
    pub(super) fn open(name: &str, port: &PortName) -> Result<NetmapFd, Error> {
        let kname = port.kernel_name();
        let what = format!("{} {kname:?} ({name})", port.kind());
        let fd =
            nix_open(DEVICE, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty()).map_err(|e| {
                let hint = match e {
                    nix::errno::Errno::ENOENT | nix::errno::Errno::ENXIO => {
                        " (no netmap device: is the netmap kernel module loaded?)"
                    }
                    nix::errno::Errno::EACCES | nix::errno::Errno::EPERM => {
                        " (permission denied: netmap needs root or access to the device)"
                    }
                    _ => "",
                };
                Error::io(format!("opening {DEVICE} for {what}{hint}"), e)
            })?;

        let mut reg = NmreqRegister {
            nr_mode: NR_REG_ALL_NIC,
            nr_flags: NR_NO_TX_POLL,
            ..NmreqRegister::default()
        };
        let mut hdr = NmreqHeader::new(
            &kname,
            NETMAP_REQ_REGISTER,
            std::ptr::addr_of_mut!(reg) as u64,
        );
        if let Err(e) = ctrl(fd.as_fd(), &mut hdr) {
            let hint = match e.raw_os_error() {
                Some(libc::ENXIO) | Some(libc::ENOENT) => {
                    " (no such interface, or it has no netmap support)".to_owned()
                }
                Some(libc::EBUSY) => " (the port is in use)".to_owned(),
                Some(libc::EIO) => " (the port carries a virtio-net header already)".to_owned(),
                Some(libc::EINVAL) if hdr.nr_version != NETMAP_API => format!(
                    " (the kernel speaks netmap API {}, this code {NETMAP_API})",
                    hdr.nr_version
                ),
                Some(libc::EPERM) | Some(libc::EACCES) => " (permission denied)".to_owned(),
                _ => String::new(),
            };
            return Err(Error::io(
                format!("registering {what} on {DEVICE} (NIOCCTRL NETMAP_REQ_REGISTER){hint}"),
                e,
            ));
        }

        let bad = |msg: String| {
            Error::io(
                format!("registering {what} on {DEVICE}"),
                io::Error::new(io::ErrorKind::InvalidData, msg),
            )
        };
        let len = usize::try_from(reg.nr_memsize)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                bad(format!(
                    "the kernel reports a {}-byte region",
                    reg.nr_memsize
                ))
            })?;
        let nifp = usize::try_from(reg.nr_offset)
            .ok()
            .filter(|&o| o < len)
            .ok_or_else(|| {
                bad(format!(
                    "the interface offset {} lies outside the {len}-byte region",
                    reg.nr_offset
                ))
            })?;

        // SAFETY: a fresh shared mapping of the netmap region, `len` bytes
        // as the kernel reported, at an address the kernel picks; nothing
        // else in the process refers to that range.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::io(
                format!("mapping {len} bytes of netmap memory for {what}"),
                io::Error::last_os_error(),
            ));
        }
        let map = NonNull::new(p.cast::<u8>()).ok_or_else(|| bad("mmap returned NULL".into()))?;
        Ok(NetmapFd {
            map,
            len,
            nifp,
            port: kname,
            fd: fd.into(),
        })
    }
}

impl Drop for NetmapFd {
    fn drop(&mut self) {
        // SAFETY: `map`/`len` are the mapping `open` made, unmapped only
        // here. Every `Region` handed out is owned by the back end that owns
        // this device and is not used after it is dropped.
        unsafe { libc::munmap(self.map.as_ptr().cast(), self.len) };
    }
}

/// `NIOCCTRL` with `hdr` (whose `nr_body` points at a live request body).
fn ctrl(fd: BorrowedFd<'_>, hdr: &mut NmreqHeader) -> io::Result<()> {
    // SAFETY: NIOCCTRL reads and writes one `nmreq_header` (its _IOWR size
    // is that struct's, 88 bytes), which `hdr` is, and the body `nr_body`
    // points to, which the caller keeps alive across this call;
    // `nr_options` is 0. `fd` is open.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), NIOCCTRL as _, std::ptr::from_mut(hdr)) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// An argumentless netmap ioctl (`NIOCTXSYNC`, `NIOCRXSYNC`).
fn sync(fd: BorrowedFd<'_>, req: IoctlRequest) -> io::Result<()> {
    // SAFETY: the sync requests take no argument (`_IO`); NULL is passed as
    // bhyve does. `fd` is open.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            req as _,
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl AsFd for NetmapFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Kernel for NetmapFd {
    fn txsync(&mut self) -> io::Result<()> {
        sync(self.fd.as_fd(), NIOCTXSYNC)
    }

    fn rxsync(&mut self) -> io::Result<()> {
        sync(self.fd.as_fd(), NIOCRXSYNC)
    }
}

// SAFETY: the region is the mapping this device made in `open` and unmaps
// only in `Drop`, so it stays valid for as long as the device lives.
unsafe impl NetmapDevice for NetmapFd {
    fn region(&self) -> Region {
        // SAFETY: `map .. map + len` is the live shared mapping (see above).
        unsafe { Region::new(self.map, self.len) }
    }

    fn nifp_offset(&self) -> usize {
        self.nifp
    }

    fn set_vnet_hdr_len(&mut self, len: usize) -> io::Result<()> {
        let mut body = NmreqPortHdr {
            nr_hdr_len: u32::try_from(len)
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
            pad1: 0,
        };
        let mut hdr = NmreqHeader::new(
            &self.port,
            NETMAP_REQ_PORT_HDR_SET,
            std::ptr::addr_of_mut!(body) as u64,
        );
        ctrl(self.fd.as_fd(), &mut hdr)
    }
}
