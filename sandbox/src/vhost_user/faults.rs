//! A fault in the guest's memory is the VMM's doing, not a crash of ours:
//! a memory file truncated under a live ring, a sparse file on a full
//! tmpfs, a huge-page memfd on a host without huge pages. Touching such a
//! page raises SIGBUS at an address inside one of the regions the VMM
//! handed over. The handler installed here ends the helper with exit 1
//! and one line on stderr naming the region and the VMM as the cause; a
//! SIGBUS anywhere else (or one sent by `kill`) still ends the process by
//! its signal, as the sandbox promises for every crash.
//!
//! The handler only reads atomics, formats into a stack buffer and calls
//! `write`, `_exit`, `sigaction` and `raise`: all async-signal-safe, and
//! all allowed by the seccomp filter (the last two for fatal signals
//! only).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, MemoryRegionAddress};

/// Regions watched at most (the gate lets a memory table carry 8).
const SLOTS: usize = 16;

#[allow(clippy::declare_interior_mutable_const)] // only to build the arrays
const ZERO: AtomicU64 = AtomicU64::new(0);
/// Per region: host address, length, guest physical address.
static HOST: [AtomicU64; SLOTS] = [ZERO; SLOTS];
static LEN: [AtomicU64; SLOTS] = [ZERO; SLOTS];
static GUEST: [AtomicU64; SLOTS] = [ZERO; SLOTS];
/// How many slots are in use.
static COUNT: AtomicUsize = AtomicUsize::new(0);

/// Records where `mem`'s regions are mapped, replacing what was there.
pub fn watch(mem: &GuestMemoryMmap) {
    COUNT.store(0, Ordering::SeqCst);
    let mut n = 0;
    for region in mem.iter().take(SLOTS) {
        let Ok(host) = region.get_host_address(MemoryRegionAddress(0)) else {
            continue;
        };
        HOST[n].store(host as u64, Ordering::SeqCst);
        LEN[n].store(region.len(), Ordering::SeqCst);
        GUEST[n].store(region.start_addr().0, Ordering::SeqCst);
        n += 1;
    }
    COUNT.store(n, Ordering::SeqCst);
}

/// The watched region holding host address `addr`: (index, guest address
/// of `addr`, region's guest start, its length).
fn region_of(addr: u64) -> Option<(usize, u64, u64, u64)> {
    let n = COUNT.load(Ordering::SeqCst).min(SLOTS);
    (0..n).find_map(|i| {
        let (host, len) = (
            HOST[i].load(Ordering::SeqCst),
            LEN[i].load(Ordering::SeqCst),
        );
        let off = addr.checked_sub(host)?;
        let guest = GUEST[i].load(Ordering::SeqCst);
        (off < len).then(|| (i, guest.wrapping_add(off), guest, len))
    })
}

/// A line built without allocating.
struct Line {
    buf: [u8; 400],
    len: usize,
}

impl Line {
    fn new() -> Line {
        Line {
            buf: [0; 400],
            len: 0,
        }
    }

    fn text(&mut self, s: &str) -> &mut Line {
        for &b in s.as_bytes() {
            if self.len < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
        self
    }

    fn hex(&mut self, v: u64) -> &mut Line {
        self.text("0x");
        let digits = b"0123456789abcdef";
        let mut started = false;
        for shift in (0..16).rev() {
            let d = ((v >> (shift * 4)) & 0xf) as usize;
            if d != 0 || started || shift == 0 {
                started = true;
                let c = [digits[d]];
                self.text(std::str::from_utf8(&c).unwrap_or("?"));
            }
        }
        self
    }

    fn dec(&mut self, v: u64) -> &mut Line {
        let mut digits = [0u8; 20];
        let (mut v, mut i) = (v, digits.len());
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.text(std::str::from_utf8(&digits[i..]).unwrap_or("?"))
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The line for a fault at host address `addr`, if it lies in guest
/// memory.
fn describe(addr: u64) -> Option<Line> {
    let (i, at, start, len) = region_of(addr)?;
    let mut l = Line::new();
    l.text("caploop-sandbox: vhost-user: the VMM's guest memory faulted (SIGBUS) at guest address ")
        .hex(at)
        .text(", memory region ")
        .dec(i as u64)
        .text(" (guest ")
        .hex(start)
        .text(", ")
        .dec(len)
        .text(" bytes): the VMM's memory file cannot back that page (truncated under a live ring, or no room or no huge pages left for it); ending the session\n");
    Some(l)
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel hands a valid siginfo to an SA_SIGINFO handler.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as u64) };
    // A positive code: raised by the kernel for an access (BUS_ADRERR...).
    if code > 0 {
        if let Some(line) = describe(addr) {
            let b = line.bytes();
            // SAFETY: write and _exit are async-signal-safe; `b` lives on
            // this stack.
            unsafe {
                libc::write(2, b.as_ptr().cast(), b.len());
                libc::_exit(1);
            }
        }
    }
    // Anywhere else: the default action. A fault repeats when this
    // returns and kills; a signal sent by kill is raised again.
    // SAFETY: resetting a handler and raising are async-signal-safe.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        if code <= 0 {
            libc::raise(sig);
        }
    }
}

/// Installs the SIGBUS handler (before the sandbox is entered).
pub fn install() -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction with our handler, SA_SIGINFO and
    // SA_ONSTACK (a fault on a full stack still runs it on the
    // alternate stack std sets up).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigbus as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    #[test]
    fn a_fault_is_described_only_inside_guest_memory() {
        let mem: GuestMemoryMmap =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0x10000), 0x4000)]).unwrap();
        watch(&mem);
        let host = mem
            .iter()
            .next()
            .unwrap()
            .get_host_address(MemoryRegionAddress(0))
            .unwrap() as u64;
        let l = describe(host + 0x123).expect("inside");
        let s = std::str::from_utf8(l.bytes()).unwrap();
        assert!(s.contains("guest address 0x10123"), "{s}");
        assert!(s.contains("region 0 (guest 0x10000, 16384 bytes)"), "{s}");
        assert!(describe(host + 0x4000).is_none());
        assert!(describe(host.wrapping_sub(1)).is_none());
        watch(&GuestMemoryMmap::from_ranges(&[]).unwrap_or_default());
        assert!(describe(host + 0x123).is_none());
    }
}
