//! The netmap ABI: the shared-memory structures, the "new" control API
//! (`NIOCCTRL`) and the ioctl request numbers, written down from the
//! netmap headers.
//!
//! Every layout and constant here was copied by hand from `sys/net/netmap.h`
//! of the netmap project (github.com/luigirizzo/netmap, commit
//! `89607e1406c1fa5ac2106bd2ff33417f090c0d60`) and checked against FreeBSD's
//! copy of the same header (github.com/freebsd/freebsd-src,
//! `sys/net/netmap.h` at `03c82ccba0837cb17688ff6bddd2d0ae1cbf34d6`), which
//! has the same definitions except that `struct netmap_ring` lacks the
//! `offset_mask` and `buf_align` fields: there they are padding before the
//! 128-byte aligned `sem` array, so the slots start at the same offset in
//! both. This back end never asks for buffer offsets
//! (`NETMAP_REQ_OPT_OFFSETS`) and does not read those two fields.
//!
//! The sizes and offsets are pinned by compile-time assertions (64-bit
//! targets, the only ones netmap's headers are used on here) and by unit
//! tests that restate the header's numbers. They have been checked against
//! the headers only, not against a running netmap kernel.

use std::mem::{offset_of, size_of};

/// The netmap API version this code speaks (`NETMAP_API`, netmap.h:44).
pub const NETMAP_API: u16 = 14;

/// Interface name length in `struct netmap_if` (`IFNAMSIZ`, 16 on Linux
/// and FreeBSD).
pub const IFNAMSIZ: usize = 16;

/// Port name length in `struct nmreq_header` (`NETMAP_REQ_IFNAMSIZ`,
/// netmap.h:518).
pub const NETMAP_REQ_IFNAMSIZ: usize = 64;

/// The cache-line size netmap aligns `netmap_ring.sem` to
/// (`NM_CACHE_ALIGN`, netmap.h:54).
pub const NM_CACHE_ALIGN: usize = 128;

/// Slot flag: the frame continues in the next slot (`NS_MOREFRAG`,
/// netmap.h:214).
pub const NS_MOREFRAG: u16 = 0x0020;

/// Most fragments (slots) of one frame (`NETMAP_MAX_FRAGS`, netmap.h:241).
/// VALE's per-ring forwarding table has room for a batch plus this many
/// (`NM_BDG_BATCH_MAX`, netmap_vale.c:106) and counts a frame's fragments in
/// a `u8` (`ft_frags`, netmap_kern.h:2208).
pub const NETMAP_MAX_FRAGS: usize = 64;

/// `nr_reqtype`: register (bind) a port to the control device
/// (`NETMAP_REQ_REGISTER = 1`, netmap.h:526).
pub const NETMAP_REQ_REGISTER: u16 = 1;
/// `nr_reqtype`: set the port's virtio-net header length
/// (`NETMAP_REQ_PORT_HDR_SET`, the 6th value of the enum, netmap.h:536).
pub const NETMAP_REQ_PORT_HDR_SET: u16 = 6;
/// `nr_reqtype`: get the port's virtio-net header length
/// (`NETMAP_REQ_PORT_HDR_GET`, the 7th value, netmap.h:538).
pub const NETMAP_REQ_PORT_HDR_GET: u16 = 7;

/// `nr_mode`: bind all the NIC's hardware rings (`NR_REG_ALL_NIC = 1`,
/// netmap.h:638). VALE ports are bound the same way.
pub const NR_REG_ALL_NIC: u32 = 1;

/// `nr_flags`: poll() does not push pending TX slots unless POLLOUT is
/// asked for (`NR_NO_TX_POLL = 0x20000`, netmap.h:633); bhyve opens with
/// its legacy twin `NETMAP_NO_TX_POLL`.
pub const NR_NO_TX_POLL: u64 = 0x20000;

/// `nr_flags`: the application copes with a virtio-net header on every
/// frame (`NR_ACCEPT_VNET_HDR = 0x8000`, netmap.h:629). Not set by this
/// back end: like bhyve, it refuses ports that already carry a header.
pub const NR_ACCEPT_VNET_HDR: u64 = 0x8000;

/// The prefix of VALE switch port names (`NM_BDG_NAME`, netmap.h:681).
pub const NM_BDG_NAME: &str = "vale";

/// One buffer descriptor (`struct netmap_slot`, netmap.h:163-168).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetmapSlot {
    /// Index of the buffer in the buffer pool.
    pub buf_idx: u32,
    /// Bytes in this slot's buffer.
    pub len: u16,
    /// `NS_*` flags.
    pub flags: u16,
    /// Pointer for indirect buffers / buffer offset; unused here.
    pub ptr: u64,
}

/// The `sem` array of `struct netmap_ring`, aligned to `NM_CACHE_ALIGN`.
#[repr(C, align(128))]
#[derive(Debug, Clone, Copy)]
pub struct RingSem(pub [u8; 128]);

/// The fixed part of a ring (`struct netmap_ring`, netmap.h:285-327); the
/// `num_slots` slots follow it at [`RING_SLOTS`].
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct NetmapRing {
    /// Offset of the buffer pool from the start of this ring.
    pub buf_ofs: i64,
    /// Number of slots.
    pub num_slots: u32,
    /// Size of every buffer.
    pub nr_buf_size: u32,
    /// Ring index.
    pub ringid: u16,
    /// 0: TX, 1: RX.
    pub dir: u16,
    /// First slot owned by the application (written by it).
    pub head: u32,
    /// Wake-up point (written by the application).
    pub cur: u32,
    /// First slot owned by the kernel (written by the kernel).
    pub tail: u32,
    /// `NR_*` ring flags.
    pub flags: u32,
    /// Time of the last sync.
    pub ts: libc::timeval,
    /// Buffer offset mask (newer headers; padding in older ones).
    pub offset_mask: u64,
    /// Buffer alignment (newer headers; padding in older ones).
    pub buf_align: u64,
    /// Opaque room for the kernel.
    pub sem: RingSem,
}

/// The fixed part of an interface (`struct netmap_if`, netmap.h:374-406);
/// the ring offsets (`ssize_t ring_ofs[]`, relative to this structure)
/// follow it at [`IF_RING_OFS`]: NIC TX rings, host TX rings, NIC RX rings,
/// host RX rings.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct NetmapIf {
    /// Interface name.
    pub ni_name: [u8; IFNAMSIZ],
    /// API version (unused).
    pub ni_version: u32,
    /// `NI_*` flags.
    pub ni_flags: u32,
    /// Hardware TX rings.
    pub ni_tx_rings: u32,
    /// Hardware RX rings.
    pub ni_rx_rings: u32,
    /// Head of the extra buffer list.
    pub ni_bufs_head: u32,
    /// Host (software) TX rings.
    pub ni_host_tx_rings: u32,
    /// Host (software) RX rings.
    pub ni_host_rx_rings: u32,
    /// Spare.
    pub ni_spare1: [u32; 3],
}

/// The header of every control request (`struct nmreq_header`,
/// netmap.h:514-522).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct NmreqHeader {
    /// Must be [`NETMAP_API`]; the kernel writes back its own.
    pub nr_version: u16,
    /// `NETMAP_REQ_*`.
    pub nr_reqtype: u16,
    /// Must be zero.
    pub nr_reserved: u32,
    /// Port name, NUL-terminated.
    pub nr_name: [u8; NETMAP_REQ_IFNAMSIZ],
    /// Pointer to the first option, or 0.
    pub nr_options: u64,
    /// Pointer to the request body.
    pub nr_body: u64,
}

/// The body of `NETMAP_REQ_REGISTER` (`struct nmreq_register`,
/// netmap.h:599-634).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct NmreqRegister {
    /// Out: offset of the `netmap_if` in the shared region.
    pub nr_offset: u64,
    /// Out: size of the shared region.
    pub nr_memsize: u64,
    /// In/out: slots per TX ring.
    pub nr_tx_slots: u32,
    /// In/out: slots per RX ring.
    pub nr_rx_slots: u32,
    /// In/out: TX rings.
    pub nr_tx_rings: u16,
    /// In/out: RX rings.
    pub nr_rx_rings: u16,
    /// In/out: host TX rings.
    pub nr_host_tx_rings: u16,
    /// In/out: host RX rings.
    pub nr_host_rx_rings: u16,
    /// In/out: memory allocator id.
    pub nr_mem_id: u16,
    /// In: ring to bind (with `NR_REG_ONE_NIC`).
    pub nr_ringid: u16,
    /// In: `NR_REG_*`.
    pub nr_mode: u32,
    /// In/out: extra buffers.
    pub nr_extra_bufs: u32,
    /// In: `NR_*` flags.
    pub nr_flags: u64,
}

/// The body of `NETMAP_REQ_PORT_HDR_SET` / `_GET` (`struct
/// nmreq_port_hdr`, netmap.h:724-727).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct NmreqPortHdr {
    /// Header length: 0, 10 or 12.
    pub nr_hdr_len: u32,
    /// Padding.
    pub pad1: u32,
}

/// Offset of `num_slots` in a ring.
pub const RING_NUM_SLOTS: usize = offset_of!(NetmapRing, num_slots);
/// Offset of `buf_ofs` in a ring.
pub const RING_BUF_OFS: usize = offset_of!(NetmapRing, buf_ofs);
/// Offset of `nr_buf_size` in a ring.
pub const RING_BUF_SIZE: usize = offset_of!(NetmapRing, nr_buf_size);
/// Offset of `head` in a ring.
pub const RING_HEAD: usize = offset_of!(NetmapRing, head);
/// Offset of `cur` in a ring.
pub const RING_CUR: usize = offset_of!(NetmapRing, cur);
/// Offset of `tail` in a ring.
pub const RING_TAIL: usize = offset_of!(NetmapRing, tail);
/// Offset of `slot[0]` in a ring: the size of the fixed part.
pub const RING_SLOTS: usize = size_of::<NetmapRing>();
/// Size of one slot.
pub const SLOT_SIZE: usize = size_of::<NetmapSlot>();
/// Offset of `buf_idx` in a slot.
pub const SLOT_BUF_IDX: usize = offset_of!(NetmapSlot, buf_idx);
/// Offset of `len` in a slot.
pub const SLOT_LEN: usize = offset_of!(NetmapSlot, len);
/// Offset of `flags` in a slot.
pub const SLOT_FLAGS: usize = offset_of!(NetmapSlot, flags);
/// Offset of `ni_tx_rings` in an interface.
pub const IF_TX_RINGS: usize = offset_of!(NetmapIf, ni_tx_rings);
/// Offset of `ni_rx_rings` in an interface.
pub const IF_RX_RINGS: usize = offset_of!(NetmapIf, ni_rx_rings);
/// Offset of `ni_host_tx_rings` in an interface.
pub const IF_HOST_TX_RINGS: usize = offset_of!(NetmapIf, ni_host_tx_rings);
/// Offset of `ni_host_rx_rings` in an interface.
pub const IF_HOST_RX_RINGS: usize = offset_of!(NetmapIf, ni_host_rx_rings);
/// Offset of `ring_ofs[0]` in an interface: the size of the fixed part,
/// rounded up to the alignment of `ssize_t`.
pub const IF_RING_OFS: usize = size_of::<NetmapIf>().next_multiple_of(size_of::<i64>());

// The header's layout on LP64 (x86_64, aarch64, riscv64, ...), restated
// from netmap.h; see the unit tests for the field-by-field offsets.
#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(size_of::<NetmapSlot>() == 16);
    assert!(size_of::<NetmapRing>() == 256);
    assert!(std::mem::align_of::<NetmapRing>() == NM_CACHE_ALIGN);
    assert!(offset_of!(NetmapRing, sem) == 128);
    assert!(size_of::<NetmapIf>() == 56);
    assert!(IF_RING_OFS == 56);
    assert!(size_of::<NmreqHeader>() == 88);
    assert!(size_of::<NmreqRegister>() == 56);
    assert!(size_of::<NmreqPortHdr>() == 8);
};

impl NmreqHeader {
    /// A request of `reqtype` for port `name` (at most 63 bytes, checked by
    /// the caller) with `body` as its body.
    pub fn new(name: &str, reqtype: u16, body: u64) -> NmreqHeader {
        let mut nr_name = [0u8; NETMAP_REQ_IFNAMSIZ];
        let n = name.len().min(NETMAP_REQ_IFNAMSIZ - 1);
        nr_name[..n].copy_from_slice(&name.as_bytes()[..n]);
        NmreqHeader {
            nr_version: NETMAP_API,
            nr_reqtype: reqtype,
            nr_reserved: 0,
            nr_name,
            nr_options: 0,
            nr_body: body,
        }
    }
}

/// The type of an ioctl request number as `libc::ioctl` takes it on glibc
/// and FreeBSD.
pub type IoctlRequest = libc::c_ulong;

/// Linux's `_IOC` encoding (`include/uapi/asm-generic/ioctl.h`; powerpc,
/// mips and sparc use a 3-bit direction with NONE = 1 and a 13-bit size).
#[cfg(target_os = "linux")]
mod ioc {
    #[cfg(any(
        target_arch = "powerpc",
        target_arch = "powerpc64",
        target_arch = "mips",
        target_arch = "mips64",
        target_arch = "sparc",
        target_arch = "sparc64"
    ))]
    mod dir {
        pub const NONE: u64 = 1;
        pub const READ: u64 = 2;
        pub const WRITE: u64 = 4;
        pub const SIZEBITS: u32 = 13;
    }
    #[cfg(not(any(
        target_arch = "powerpc",
        target_arch = "powerpc64",
        target_arch = "mips",
        target_arch = "mips64",
        target_arch = "sparc",
        target_arch = "sparc64"
    )))]
    mod dir {
        pub const NONE: u64 = 0;
        pub const WRITE: u64 = 1;
        pub const READ: u64 = 2;
        pub const SIZEBITS: u32 = 14;
    }

    const NRSHIFT: u32 = 0;
    const TYPESHIFT: u32 = 8;
    const SIZESHIFT: u32 = 16;
    const DIRSHIFT: u32 = SIZESHIFT + dir::SIZEBITS;

    const fn ioc(d: u64, ty: u8, nr: u8, size: usize) -> u64 {
        assert!(size < (1 << dir::SIZEBITS), "ioctl argument too large");
        (d << DIRSHIFT)
            | ((ty as u64) << TYPESHIFT)
            | ((nr as u64) << NRSHIFT)
            | ((size as u64) << SIZESHIFT)
    }

    /// `_IO(ty, nr)`.
    pub const fn io(ty: u8, nr: u8) -> u64 {
        ioc(dir::NONE, ty, nr, 0)
    }

    /// `_IOWR(ty, nr, T)` with `size_of::<T>() == size`.
    pub const fn iowr(ty: u8, nr: u8, size: usize) -> u64 {
        ioc(dir::READ | dir::WRITE, ty, nr, size)
    }
}

/// FreeBSD's `_IOC` encoding (`sys/sys/ioccom.h`): `IOC_VOID` for `_IO`,
/// `IOC_INOUT` for `_IOWR`, a 13-bit parameter length.
#[cfg(target_os = "freebsd")]
mod ioc {
    const IOCPARM_MASK: u64 = (1 << 13) - 1;
    const IOC_VOID: u64 = 0x2000_0000;
    const IOC_OUT: u64 = 0x4000_0000;
    const IOC_IN: u64 = 0x8000_0000;
    const IOC_INOUT: u64 = IOC_IN | IOC_OUT;

    const fn ioc(inout: u64, group: u8, num: u8, len: usize) -> u64 {
        assert!((len as u64) <= IOCPARM_MASK, "ioctl argument too large");
        inout | (((len as u64) & IOCPARM_MASK) << 16) | ((group as u64) << 8) | num as u64
    }

    /// `_IO(g, n)`.
    pub const fn io(g: u8, n: u8) -> u64 {
        ioc(IOC_VOID, g, n, 0)
    }

    /// `_IOWR(g, n, T)` with `size_of::<T>() == len`.
    pub const fn iowr(g: u8, n: u8, len: usize) -> u64 {
        ioc(IOC_INOUT, g, n, len)
    }
}

/// `_IO(ty, nr)` for this target.
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
pub const fn io(ty: u8, nr: u8) -> IoctlRequest {
    ioc::io(ty, nr) as IoctlRequest
}

/// `_IOWR(ty, nr, T)` for this target, `size` being `size_of::<T>()`.
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
pub const fn iowr(ty: u8, nr: u8, size: usize) -> IoctlRequest {
    ioc::iowr(ty, nr, size) as IoctlRequest
}

/// The control request (`NIOCCTRL = _IOWR('i', 151, struct
/// nmreq_header)`, netmap.h:653).
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
pub const NIOCCTRL: IoctlRequest = iowr(b'i', 151, size_of::<NmreqHeader>());

/// Synchronise the TX rings (`NIOCTXSYNC = _IO('i', 148)`, netmap.h:659).
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
pub const NIOCTXSYNC: IoctlRequest = io(b'i', 148);

/// Synchronise the RX rings (`NIOCRXSYNC = _IO('i', 149)`, netmap.h:660).
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
pub const NIOCRXSYNC: IoctlRequest = io(b'i', 149);

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_pointer_width = "64")]
    #[test]
    fn slot_layout_is_the_headers() {
        // netmap.h:163-168: u32 buf_idx; u16 len; u16 flags; u64 ptr.
        assert_eq!(size_of::<NetmapSlot>(), 16);
        assert_eq!(offset_of!(NetmapSlot, buf_idx), 0);
        assert_eq!(offset_of!(NetmapSlot, len), 4);
        assert_eq!(offset_of!(NetmapSlot, flags), 6);
        assert_eq!(offset_of!(NetmapSlot, ptr), 8);
        assert_eq!(
            (SLOT_SIZE, SLOT_BUF_IDX, SLOT_LEN, SLOT_FLAGS),
            (16, 0, 4, 6)
        );
    }

    #[cfg(target_pointer_width = "64")]
    #[test]
    fn ring_layout_is_the_headers() {
        // netmap.h:285-327: i64 buf_ofs; u32 num_slots; u32 nr_buf_size;
        // u16 ringid; u16 dir; u32 head, cur, tail, flags; struct timeval
        // ts (16 bytes on LP64, 8-aligned); [u64 offset_mask; u64
        // buf_align;] u8 sem[128] aligned to 128; slot[].
        assert_eq!(offset_of!(NetmapRing, buf_ofs), 0);
        assert_eq!(offset_of!(NetmapRing, num_slots), 8);
        assert_eq!(offset_of!(NetmapRing, nr_buf_size), 12);
        assert_eq!(offset_of!(NetmapRing, ringid), 16);
        assert_eq!(offset_of!(NetmapRing, dir), 18);
        assert_eq!(offset_of!(NetmapRing, head), 20);
        assert_eq!(offset_of!(NetmapRing, cur), 24);
        assert_eq!(offset_of!(NetmapRing, tail), 28);
        assert_eq!(offset_of!(NetmapRing, flags), 32);
        assert_eq!(offset_of!(NetmapRing, ts), 40);
        assert_eq!(size_of::<libc::timeval>(), 16);
        assert_eq!(offset_of!(NetmapRing, offset_mask), 56);
        assert_eq!(offset_of!(NetmapRing, buf_align), 64);
        assert_eq!(offset_of!(NetmapRing, sem), 128);
        assert_eq!(size_of::<NetmapRing>(), 256);
        assert_eq!(
            (
                RING_BUF_OFS,
                RING_NUM_SLOTS,
                RING_BUF_SIZE,
                RING_HEAD,
                RING_CUR,
                RING_TAIL
            ),
            (0, 8, 12, 20, 24, 28)
        );
        assert_eq!(RING_SLOTS, 256);
    }

    #[cfg(target_pointer_width = "64")]
    #[test]
    fn if_layout_is_the_headers() {
        // netmap.h:374-406: char ni_name[16]; u32 ni_version, ni_flags,
        // ni_tx_rings, ni_rx_rings, ni_bufs_head, ni_host_tx_rings,
        // ni_host_rx_rings, ni_spare1[3]; ssize_t ring_ofs[].
        assert_eq!(offset_of!(NetmapIf, ni_name), 0);
        assert_eq!(offset_of!(NetmapIf, ni_version), 16);
        assert_eq!(offset_of!(NetmapIf, ni_flags), 20);
        assert_eq!(offset_of!(NetmapIf, ni_tx_rings), 24);
        assert_eq!(offset_of!(NetmapIf, ni_rx_rings), 28);
        assert_eq!(offset_of!(NetmapIf, ni_bufs_head), 32);
        assert_eq!(offset_of!(NetmapIf, ni_host_tx_rings), 36);
        assert_eq!(offset_of!(NetmapIf, ni_host_rx_rings), 40);
        assert_eq!(offset_of!(NetmapIf, ni_spare1), 44);
        assert_eq!(size_of::<NetmapIf>(), 56);
        assert_eq!(IF_RING_OFS, 56);
        assert_eq!(
            (IF_TX_RINGS, IF_RX_RINGS, IF_HOST_TX_RINGS, IF_HOST_RX_RINGS),
            (24, 28, 36, 40)
        );
    }

    #[cfg(target_pointer_width = "64")]
    #[test]
    fn request_layouts_are_the_headers() {
        // netmap.h:514-522.
        assert_eq!(offset_of!(NmreqHeader, nr_version), 0);
        assert_eq!(offset_of!(NmreqHeader, nr_reqtype), 2);
        assert_eq!(offset_of!(NmreqHeader, nr_reserved), 4);
        assert_eq!(offset_of!(NmreqHeader, nr_name), 8);
        assert_eq!(offset_of!(NmreqHeader, nr_options), 72);
        assert_eq!(offset_of!(NmreqHeader, nr_body), 80);
        assert_eq!(size_of::<NmreqHeader>(), 88);
        // netmap.h:599-634 (nr_flags is a u64 after 4 bytes of padding).
        assert_eq!(offset_of!(NmreqRegister, nr_offset), 0);
        assert_eq!(offset_of!(NmreqRegister, nr_memsize), 8);
        assert_eq!(offset_of!(NmreqRegister, nr_tx_slots), 16);
        assert_eq!(offset_of!(NmreqRegister, nr_rx_slots), 20);
        assert_eq!(offset_of!(NmreqRegister, nr_tx_rings), 24);
        assert_eq!(offset_of!(NmreqRegister, nr_rx_rings), 26);
        assert_eq!(offset_of!(NmreqRegister, nr_host_tx_rings), 28);
        assert_eq!(offset_of!(NmreqRegister, nr_host_rx_rings), 30);
        assert_eq!(offset_of!(NmreqRegister, nr_mem_id), 32);
        assert_eq!(offset_of!(NmreqRegister, nr_ringid), 34);
        assert_eq!(offset_of!(NmreqRegister, nr_mode), 36);
        assert_eq!(offset_of!(NmreqRegister, nr_extra_bufs), 40);
        assert_eq!(offset_of!(NmreqRegister, nr_flags), 48);
        assert_eq!(size_of::<NmreqRegister>(), 56);
        // netmap.h:724-727.
        assert_eq!(offset_of!(NmreqPortHdr, nr_hdr_len), 0);
        assert_eq!(offset_of!(NmreqPortHdr, pad1), 4);
        assert_eq!(size_of::<NmreqPortHdr>(), 8);
    }

    #[test]
    fn constants_are_the_headers() {
        assert_eq!(NETMAP_API, 14);
        assert_eq!(NS_MOREFRAG, 0x20);
        assert_eq!(NETMAP_REQ_REGISTER, 1);
        assert_eq!(NETMAP_REQ_PORT_HDR_SET, 6);
        assert_eq!(NETMAP_REQ_PORT_HDR_GET, 7);
        assert_eq!(NR_REG_ALL_NIC, 1);
        assert_eq!(NR_NO_TX_POLL, 0x20000);
        assert_eq!(NR_ACCEPT_VNET_HDR, 0x8000);
    }

    #[test]
    fn header_new_fills_name_and_version() {
        let h = NmreqHeader::new("vale0:1", NETMAP_REQ_REGISTER, 0x1234);
        assert_eq!(h.nr_version, 14);
        assert_eq!(h.nr_reqtype, 1);
        assert_eq!(&h.nr_name[..8], b"vale0:1\0");
        assert_eq!(h.nr_body, 0x1234);
        let long = "x".repeat(100);
        let h = NmreqHeader::new(&long, NETMAP_REQ_REGISTER, 0);
        assert_eq!(h.nr_name[62], b'x');
        assert_eq!(h.nr_name[63], 0, "always NUL-terminated");
    }

    /// The request numbers, worked out by hand from the header macros and
    /// each OS's `_IOC` encoding: `_IOWR('i', 151, 88-byte struct)` is
    /// `0xC000_0000 | 88 << 16 | 0x69 << 8 | 151` on both; `_IO` is plain
    /// `type << 8 | nr` on Linux and carries `IOC_VOID` (0x2000_0000) on
    /// FreeBSD.
    #[cfg(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    #[test]
    fn ioctl_numbers_linux() {
        assert_eq!(NIOCCTRL, 0xc058_6997);
        assert_eq!(NIOCTXSYNC, 0x6994);
        assert_eq!(NIOCRXSYNC, 0x6995);
        // And the same as libc's own encoder.
        assert_eq!(
            NIOCCTRL,
            libc::_IOWR::<NmreqHeader>(b'i'.into(), 151) as IoctlRequest
        );
        assert_eq!(NIOCTXSYNC, libc::_IO(b'i'.into(), 148) as IoctlRequest);
        assert_eq!(NIOCRXSYNC, libc::_IO(b'i'.into(), 149) as IoctlRequest);
        // The encoder against ioctls libc spells out.
        assert_eq!(
            iowr(b'T', 202, 4) & !(3 << 30),
            libc::TUNSETIFF as IoctlRequest & !(3 << 30)
        );
    }

    #[cfg(target_os = "freebsd")]
    #[test]
    fn ioctl_numbers_freebsd() {
        assert_eq!(NIOCCTRL, 0xc058_6997);
        assert_eq!(NIOCTXSYNC, 0x2000_6994);
        assert_eq!(NIOCRXSYNC, 0x2000_6995);
        assert_eq!(NIOCCTRL, libc::_IOWR::<NmreqHeader>(b'i'.into(), 151));
        assert_eq!(NIOCTXSYNC, libc::_IO(b'i'.into(), 148));
        assert_eq!(NIOCRXSYNC, libc::_IO(b'i'.into(), 149));
    }
}
