//! The device's state as the vhost-user front end (QEMU) sets it up, and
//! the protocol's back-end side: the `vhost` crate's
//! [`BackendReqHandler`](vhost::vhost_user::BackendReqHandler) parses one
//! message at a time and calls [`Handler`] (through its `Mutex`, which
//! only this one thread ever locks).
//!
//! The handler only records what it is told: the guest's memory (mapped
//! with vm-memory, so that every later access is bounds-checked), the two
//! rings (0: receive, the device writes; 1: transmit, the device reads),
//! their kick and call eventfds. Registering a kick eventfd with the
//! reactor is left to the caller, which holds the reactor
//! ([`super::VhostRx`]): the handler queues new ones in
//! [`Device::new_kicks`].

use std::cell::RefCell;
use std::fs::File;
use std::rc::Rc;

use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserConfigFlags, VhostUserInflight,
    VhostUserLog, VhostUserMemoryRegion, VhostUserProtocolFeatures, VhostUserShMemConfig,
    VhostUserSharedMsg, VhostUserSingleMemoryRegion, VhostUserVringAddrFlags, VhostUserVringState,
};
use vhost::vhost_user::{Backend, Error, GpuBackend, Result, VhostUserBackendReqHandlerMut};
use virtio_bindings::virtio_config::{VIRTIO_F_NOTIFY_ON_EMPTY, VIRTIO_F_VERSION_1};
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{Queue, QueueT};
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap};

/// The guest MAC the config space reports (libslirp answers whatever MAC
/// the guest uses; this is QEMU's default).
pub const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// Receive ring: the device writes frames for the guest into it.
pub const RX: usize = 0;
/// Transmit ring: the guest's frames, which the device reads.
pub const TX: usize = 1;
/// The largest ring the device accepts (QEMU's limit too).
pub const MAX_QUEUE_SIZE: u16 = 1024;

/// `VHOST_USER_F_PROTOCOL_FEATURES`: the front end may ask for protocol
/// features; rings then start disabled until `SET_VRING_ENABLE`.
const PROTOCOL_FEATURES: u64 = 1 << 30;

/// The virtio features offered. TSO both ways, IPv4 and IPv6: the guest's
/// super-segments go to `Stack::input_segment` (IPv4 whole, IPv6 cut to
/// libslirp's MTU), and with GUEST_TSO4/6 a round's segments of a flow
/// reach the guest as one super-frame (`offload::Coalescer`).
pub const OFFERED: u64 = (1 << VIRTIO_F_VERSION_1)
    | (1 << VIRTIO_RING_F_EVENT_IDX)
    | (1 << VIRTIO_RING_F_INDIRECT_DESC)
    | (1 << VIRTIO_F_NOTIFY_ON_EMPTY)
    | (1 << VIRTIO_NET_F_MRG_RXBUF)
    | (1 << VIRTIO_NET_F_CSUM)
    | (1 << VIRTIO_NET_F_GUEST_CSUM)
    | (1 << VIRTIO_NET_F_HOST_TSO4)
    | (1 << VIRTIO_NET_F_HOST_TSO6)
    | (1 << VIRTIO_NET_F_GUEST_TSO4)
    | (1 << VIRTIO_NET_F_GUEST_TSO6)
    | (1 << VIRTIO_NET_F_MTU)
    | (1 << VIRTIO_NET_F_MAC)
    | (1 << VIRTIO_NET_F_STATUS)
    | PROTOCOL_FEATURES;

/// The checksum and segmentation offloads, all left out with
/// `--no-offload`.
pub const OFFLOADS: u64 = (1 << VIRTIO_NET_F_CSUM)
    | (1 << VIRTIO_NET_F_GUEST_CSUM)
    | (1 << VIRTIO_NET_F_HOST_TSO4)
    | (1 << VIRTIO_NET_F_HOST_TSO6)
    | (1 << VIRTIO_NET_F_GUEST_TSO4)
    | (1 << VIRTIO_NET_F_GUEST_TSO6);

/// One ring as set up so far.
pub struct Vring {
    /// Its addresses, size and indexes (vm-memory checks them against the
    /// guest's memory before every use).
    pub queue: Queue,
    /// The eventfd the device signals after using buffers.
    pub call: Option<File>,
    /// The kick eventfd has arrived: the ring is started.
    pub started: bool,
    /// Not disabled by `SET_VRING_ENABLE 0`. Enabled by default, unlike
    /// the spec's "starts disabled with protocol features": QEMU sends its
    /// `SET_VRING_ENABLE 1` before `SET_FEATURES`, which the vhost crate
    /// refuses (see `VhostRx::message`), and does not repeat it.
    pub enabled: bool,
}

impl Vring {
    fn new() -> Vring {
        Vring {
            // Only a size that is not a power of two fails.
            queue: Queue::new(MAX_QUEUE_SIZE).expect("1024 is a valid queue size"),
            call: None,
            started: false,
            enabled: true,
        }
    }

    /// Whether frames may go through it now.
    pub fn live(&self) -> bool {
        self.started && self.enabled && self.queue.ready()
    }
}

/// A mapping of the front end's address space onto the guest's: ring
/// addresses arrive as the front end's virtual addresses.
#[derive(Debug, Clone, Copy)]
struct Window {
    user_addr: u64,
    guest_phys: u64,
    size: u64,
}

/// Everything the handler sets and the rings use.
pub struct Device {
    /// The guest's memory, once `SET_MEM_TABLE` came.
    pub mem: Option<GuestMemoryMmap>,
    windows: Vec<Window>,
    /// The two rings.
    pub vrings: [Vring; 2],
    /// Features the driver accepted.
    pub acked: u64,
    protocol_acked: bool,
    /// Kick eventfds received and not yet registered (ring index, fd).
    pub new_kicks: Vec<(usize, File)>,
    /// Rings whose kick registration must go (`GET_VRING_BASE`, a new
    /// kick replacing the old, a reset).
    pub stopped: Vec<usize>,
    /// The MTU the config space reports.
    mtu: u16,
    /// The features offered ([`OFFERED`], maybe without [`OFFLOADS`]).
    offered: u64,
}

impl Device {
    /// A device not yet set up, reporting `mtu` in its config space and
    /// offering `offered`.
    pub fn new(mtu: u16, offered: u64) -> Device {
        Device {
            mem: None,
            windows: Vec::new(),
            vrings: [Vring::new(), Vring::new()],
            acked: 0,
            protocol_acked: false,
            new_kicks: Vec::new(),
            stopped: Vec::new(),
            mtu,
            offered,
        }
    }

    /// Whether the driver accepted feature `bit`.
    pub fn has(&self, bit: u32) -> bool {
        self.acked & (1 << bit) != 0
    }

    /// The virtio-net header's length: 12 bytes with VERSION_1 or
    /// MRG_RXBUF (`virtio_net_hdr_v1`, `num_buffers` included), else 10.
    pub fn hdr_len(&self) -> usize {
        if self.has(VIRTIO_F_VERSION_1) || self.has(VIRTIO_NET_F_MRG_RXBUF) {
            12
        } else {
            10
        }
    }

    /// The guest address of front-end virtual address `va`.
    fn translate(&self, va: u64) -> Result<u64> {
        self.windows
            .iter()
            .find(|w| va >= w.user_addr && va - w.user_addr < w.size)
            .map(|w| w.guest_phys + (va - w.user_addr))
            .ok_or(Error::InvalidParam)
    }

    fn vring(&mut self, index: u32) -> Result<&mut Vring> {
        self.vrings
            .get_mut(index as usize)
            .ok_or(Error::InvalidParam)
    }

    /// Stops ring `i`: no more kicks, and it must be set up again.
    fn stop(&mut self, i: usize) {
        let v = &mut self.vrings[i];
        v.started = false;
        v.queue.set_ready(false);
        self.new_kicks.retain(|(k, _)| *k != i);
        self.stopped.push(i);
    }

    /// A ring gets ready once its size and addresses are in place and lie
    /// in the guest's memory, and its kick eventfd came.
    fn try_ready(&mut self, i: usize) -> Result<()> {
        let event_idx = self.has(VIRTIO_RING_F_EVENT_IDX);
        let Some(mem) = self.mem.as_ref() else {
            return Err(Error::InvalidOperation(
                "a ring was started before the memory table",
            ));
        };
        let v = &mut self.vrings[i];
        v.queue.set_event_idx(event_idx);
        v.queue.set_ready(true);
        if !v.queue.is_valid(mem) {
            v.queue.set_ready(false);
            return Err(Error::InvalidOperation(
                "the ring's size or addresses do not fit the guest's memory",
            ));
        }
        Ok(())
    }
}

/// The length of `file`, by the raw `fstat` syscall (the one the sandbox
/// allows on descriptors received after entry).
fn file_len(file: &File) -> std::io::Result<u64> {
    // SAFETY: an all-zero `stat` is valid; fstat writes at most one `stat`
    // into it, for a descriptor `file` keeps open.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fstat,
            std::os::fd::AsRawFd::as_raw_fd(file),
            &mut st as *mut libc::stat,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(u64::try_from(st.st_size).unwrap_or(0))
}

/// Makes a descriptor the VMM handed over non-blocking: a kick is read
/// and a call written without ever waiting for the VMM. Its file status
/// flags are shared with the VMM (QEMU's eventfds are non-blocking
/// already).
fn set_nonblocking(file: &File) -> Result<()> {
    let fd = std::os::fd::AsRawFd::as_raw_fd(file);
    // SAFETY: fcntl on a descriptor `file` keeps open; F_GETFL and F_SETFL
    // take and return plain integers.
    let ok = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
    };
    if ok {
        Ok(())
    } else {
        Err(Error::ReqHandlerError(std::io::Error::last_os_error()))
    }
}

/// The vhost-user request handler: [`Device`] behind the shared cell the
/// reactor's callbacks use too (never borrowed across a callback).
pub struct Handler {
    /// The device.
    pub dev: Rc<RefCell<Device>>,
}

fn unsupported<T>(what: &'static str) -> Result<T> {
    Err(Error::InvalidOperation(what))
}

impl VhostUserBackendReqHandlerMut for Handler {
    fn set_owner(&mut self) -> Result<()> {
        Ok(())
    }

    fn reset_owner(&mut self) -> Result<()> {
        self.reset_device()
    }

    fn reset_device(&mut self) -> Result<()> {
        let mut d = self.dev.borrow_mut();
        for i in [RX, TX] {
            d.stop(i);
            d.vrings[i].queue.reset();
            d.vrings[i].call = None;
            d.vrings[i].enabled = true;
        }
        d.acked = 0;
        Ok(())
    }

    fn get_features(&mut self) -> Result<u64> {
        Ok(self.dev.borrow().offered)
    }

    fn set_features(&mut self, features: u64) -> Result<()> {
        log::debug!("vhost-user: features {features:#x}");
        let mut d = self.dev.borrow_mut();
        if features & !d.offered != 0 {
            return Err(Error::InvalidParam);
        }
        d.acked = features;
        let event_idx = d.has(VIRTIO_RING_F_EVENT_IDX);
        for v in &mut d.vrings {
            v.queue.set_event_idx(event_idx);
        }
        Ok(())
    }

    fn set_mem_table(
        &mut self,
        ctx: &[VhostUserMemoryRegion],
        files: Vec<File>,
        _postcopy_listening: Option<bool>,
    ) -> Result<Option<Vec<vhost::VhostUserMemoryRegionBase>>> {
        if ctx.len() != files.len() {
            return Err(Error::InvalidParam);
        }
        let mut regions = Vec::with_capacity(ctx.len());
        let mut windows = Vec::with_capacity(ctx.len());
        for (r, file) in ctx.iter().zip(files) {
            let size = usize::try_from(r.memory_size).map_err(|_| Error::InvalidParam)?;
            if size == 0 || r.guest_phys_addr.checked_add(r.memory_size).is_none() {
                return Err(Error::InvalidParam);
            }
            // A mapping past the end of its file would fault (SIGBUS) when
            // a ring points there.
            let (offset, mem_size) = (r.mmap_offset, r.memory_size);
            let len = file_len(&file).map_err(Error::ReqHandlerError)?;
            if offset.checked_add(mem_size).is_none_or(|end| end > len) {
                log::error!(
                    "vhost-user: a memory region ({mem_size:#x} bytes at offset {offset:#x}) runs past its file ({len:#x} bytes)"
                );
                return Err(Error::InvalidParam);
            }
            // Mapped shared, read and write, never executable.
            let region = GuestRegionMmap::from_range(
                GuestAddress(r.guest_phys_addr),
                size,
                Some(FileOffset::new(file, r.mmap_offset)),
            )
            .map_err(|e| {
                log::error!("vhost-user: mapping a memory region: {e}");
                Error::InvalidParam
            })?;
            regions.push(region);
            windows.push(Window {
                user_addr: r.user_addr,
                guest_phys: r.guest_phys_addr,
                size: r.memory_size,
            });
        }
        regions.sort_by_key(|r| r.start_addr());
        let mem = GuestMemoryMmap::from_regions(regions).map_err(|e| {
            log::error!("vhost-user: the memory table: {e}");
            Error::InvalidParam
        })?;
        let mut d = self.dev.borrow_mut();
        super::faults::watch(&mem);
        d.mem = Some(mem);
        d.windows = windows;
        Ok(None)
    }

    fn set_vring_num(&mut self, index: u32, num: u32) -> Result<()> {
        let num = u16::try_from(num).map_err(|_| Error::InvalidParam)?;
        if num == 0 || num > MAX_QUEUE_SIZE || !num.is_power_of_two() {
            return Err(Error::InvalidParam);
        }
        self.dev.borrow_mut().vring(index)?.queue.set_size(num);
        Ok(())
    }

    fn set_vring_addr(
        &mut self,
        index: u32,
        _flags: VhostUserVringAddrFlags,
        descriptor: u64,
        used: u64,
        available: u64,
        _log: u64,
    ) -> Result<()> {
        let mut d = self.dev.borrow_mut();
        let (desc, used, avail) = (
            d.translate(descriptor)?,
            d.translate(used)?,
            d.translate(available)?,
        );
        let split = |a: u64| (Some(a as u32), Some((a >> 32) as u32));
        let q = &mut d.vring(index)?.queue;
        let (lo, hi) = split(desc);
        q.set_desc_table_address(lo, hi);
        let (lo, hi) = split(avail);
        q.set_avail_ring_address(lo, hi);
        let (lo, hi) = split(used);
        q.set_used_ring_address(lo, hi);
        Ok(())
    }

    fn set_vring_base(&mut self, index: u32, base: u32) -> Result<()> {
        let base = u16::try_from(base).map_err(|_| Error::InvalidParam)?;
        let mut d = self.dev.borrow_mut();
        let q = &mut d.vring(index)?.queue;
        q.set_next_avail(base);
        q.set_next_used(base);
        Ok(())
    }

    fn get_vring_base(&mut self, index: u32) -> Result<VhostUserVringState> {
        log::debug!("vhost-user: ring {index} stopped");
        let mut d = self.dev.borrow_mut();
        let next = d.vring(index)?.queue.next_avail();
        d.stop(index as usize);
        Ok(VhostUserVringState::new(index, u32::from(next)))
    }

    fn set_vring_kick(&mut self, index: u8, fd: Option<File>) -> Result<()> {
        log::debug!("vhost-user: ring {index} kick {fd:?}");
        let i = usize::from(index);
        let mut d = self.dev.borrow_mut();
        d.vring(u32::from(index))?;
        // A kick replacing an older one: the old registration goes.
        d.stop(i);
        let Some(fd) = fd else {
            return unsupported("polling a ring without a kick eventfd");
        };
        set_nonblocking(&fd)?;
        d.try_ready(i)?;
        d.vrings[i].started = true;
        d.new_kicks.push((i, fd));
        Ok(())
    }

    fn set_vring_call(&mut self, index: u8, fd: Option<File>) -> Result<()> {
        if let Some(fd) = &fd {
            set_nonblocking(fd)?;
        }
        self.dev.borrow_mut().vring(u32::from(index))?.call = fd;
        Ok(())
    }

    fn set_vring_err(&mut self, index: u8, _fd: Option<File>) -> Result<()> {
        // Nothing is reported through it: the connection ends instead.
        self.dev.borrow_mut().vring(u32::from(index))?;
        Ok(())
    }

    fn get_protocol_features(&mut self) -> Result<VhostUserProtocolFeatures> {
        Ok(VhostUserProtocolFeatures::REPLY_ACK)
    }

    fn set_protocol_features(&mut self, _features: u64) -> Result<()> {
        // The vhost crate keeps the accepted set and refuses what was not
        // offered.
        self.dev.borrow_mut().protocol_acked = true;
        Ok(())
    }

    fn get_queue_num(&mut self) -> Result<u64> {
        Ok(2)
    }

    fn set_vring_enable(&mut self, index: u32, enable: bool) -> Result<()> {
        log::debug!("vhost-user: ring {index} enabled: {enable}");
        self.dev.borrow_mut().vring(index)?.enabled = enable;
        Ok(())
    }

    /// `struct virtio_net_config`: mac (6), status (2), max queue pairs
    /// (2), mtu (2).
    fn get_config(
        &mut self,
        offset: u32,
        size: u32,
        _flags: VhostUserConfigFlags,
    ) -> Result<Vec<u8>> {
        let mut cfg = [0u8; 12];
        cfg[..6].copy_from_slice(&GUEST_MAC);
        cfg[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        cfg[8..10].copy_from_slice(&1u16.to_le_bytes());
        cfg[10..12].copy_from_slice(&self.dev.borrow().mtu.to_le_bytes());
        let start = offset as usize;
        let end = start
            .checked_add(size as usize)
            .ok_or(Error::InvalidParam)?;
        cfg.get(start..end)
            .map(<[u8]>::to_vec)
            .ok_or(Error::InvalidParam)
    }

    fn set_config(
        &mut self,
        _offset: u32,
        _buf: &[u8],
        _flags: VhostUserConfigFlags,
    ) -> Result<()> {
        unsupported("the config space is read-only")
    }

    fn set_backend_req_fd(&mut self, _backend: Backend) {}

    fn set_gpu_socket(&mut self, _gpu_backend: GpuBackend) -> Result<()> {
        unsupported("GPU socket")
    }

    fn get_shared_object(&mut self, _uuid: VhostUserSharedMsg) -> Result<File> {
        unsupported("shared objects")
    }

    fn get_inflight_fd(
        &mut self,
        _inflight: &VhostUserInflight,
    ) -> Result<(VhostUserInflight, File)> {
        unsupported("inflight descriptors")
    }

    fn set_inflight_fd(&mut self, _inflight: &VhostUserInflight, _file: File) -> Result<()> {
        unsupported("inflight descriptors")
    }

    fn get_max_mem_slots(&mut self) -> Result<u64> {
        unsupported("memory slots")
    }

    fn add_mem_region(
        &mut self,
        _region: &VhostUserSingleMemoryRegion,
        _fd: File,
        _postcopy_listening: Option<bool>,
    ) -> Result<Option<vhost::VhostUserMemoryRegionBase>> {
        unsupported("memory slots")
    }

    fn remove_mem_region(&mut self, _region: &VhostUserSingleMemoryRegion) -> Result<()> {
        unsupported("memory slots")
    }

    fn set_device_state_fd(
        &mut self,
        _direction: VhostTransferStateDirection,
        _phase: VhostTransferStatePhase,
        _fd: File,
    ) -> Result<Option<File>> {
        unsupported("device state transfer")
    }

    fn check_device_state(&mut self) -> Result<()> {
        unsupported("device state transfer")
    }

    fn get_shmem_config(&mut self) -> Result<VhostUserShMemConfig> {
        unsupported("shared memory regions")
    }

    fn set_log_base(&mut self, _log: &VhostUserLog, _file: File) -> Result<()> {
        unsupported("dirty-page logging")
    }
}
